from django.apps import AppConfig


class AnalyticsConfig(AppConfig):
    name = "domains.analytics"
    label = "analytics"
    job_retry_handlers = {
        "METRICS_SNAPSHOT": "domains.analytics.services.metrics_snapshot_job_retry"
    }
