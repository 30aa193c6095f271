from django.apps import AppConfig


class AnalyticsConfig(AppConfig):
    name = "domains.analytics"
    label = "analytics"
