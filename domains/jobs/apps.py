from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "domains.jobs"
    label = "jobs"
