from django.apps import AppConfig


class CrmConfig(AppConfig):
    name = "domains.crm"
    label = "crm"
    job_end_handlers = {"CUSTOMER_SYNC": "domains.crm.services.sync_log_job_ended"}
    job_retry_handlers = {"CUSTOMER_SYNC": "domains.crm.services.sync_log_job_retry"}
