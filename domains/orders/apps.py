from django.apps import AppConfig


class OrdersConfig(AppConfig):
    name = "domains.orders"
    label = "orders"
    job_end_handlers = {"ORDER_WORKFLOW": "domains.orders.services.checkout_job_ended"}
    job_retry_handlers = {"ORDER_WORKFLOW": "domains.orders.services.checkout_job_retry"}
    followup_sweepers = ("domains.orders.services.checkouts_undone_sweep",)

    def ready(self) -> None:
        from domains.orders.services import order_lock, order_payment_refusal, order_payment_settled
        from domains.payments.payable import PayableOrders, payable_orders_register
        from domains.payments.signals import payment_settled

        # Orders depends on payments, never the reverse: payments reaches orders through
        # what orders registers here (domains/payments/payable.py) and tells it by signal.
        payable_orders_register(PayableOrders(lock=order_lock, refusal=order_payment_refusal))
        payment_settled.connect(order_payment_settled, dispatch_uid="orders.payment_settled")
