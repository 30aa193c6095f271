from django.apps import AppConfig


class CrmConfig(AppConfig):
    name = "domains.crm"
    label = "crm"
    job_retry_handlers = {"CUSTOMER_SYNC": "domains.crm.services.sync_log_job_retry"}
