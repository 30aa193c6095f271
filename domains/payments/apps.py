from django.apps import AppConfig


class PaymentsConfig(AppConfig):
    name = "domains.payments"
    label = "payments"
    job_end_handlers = {"PAYMENT": "domains.payments.services.payment_job_ended"}
    job_retry_handlers = {"PAYMENT": "domains.payments.services.payment_job_retry"}
    followup_sweepers = ("domains.payments.services.payments_unsettled_sweep",)
