from django.apps import AppConfig


class ReportsConfig(AppConfig):
    name = "domains.reports"
    label = "reports"
