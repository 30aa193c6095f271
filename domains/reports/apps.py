from django.apps import AppConfig


class ReportsConfig(AppConfig):
    name = "domains.reports"
    label = "reports"
    job_end_handlers = {"SALES_REPORT": "domains.reports.services.report_job_ended"}
    job_retry_handlers = {"SALES_REPORT": "domains.reports.services.report_job_retry"}
    job_purge_handlers = ("domains.reports.services.reports_purge",)
