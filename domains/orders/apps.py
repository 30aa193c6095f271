from django.apps import AppConfig


class OrdersConfig(AppConfig):
    name = "domains.orders"
    label = "orders"
    job_end_handlers = {"ORDER_WORKFLOW": "domains.orders.services.checkout_job_ended"}
