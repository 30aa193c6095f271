from django.apps import AppConfig


class OrdersConfig(AppConfig):
    name = "domains.orders"
    label = "orders"
    job_end_handlers = {"ORDER_WORKFLOW": "domains.orders.services.checkout_job_ended"}
    job_retry_handlers = {"ORDER_WORKFLOW": "domains.orders.services.checkout_job_retry"}
    followup_sweepers = ("domains.orders.services.checkouts_undone_sweep",)

    def ready(self) -> None:
        from domains.orders.services import order_payment_settled
        from domains.payments.signals import payment_settled

        payment_settled.connect(order_payment_settled, dispatch_uid="orders.payment_settled")
