from django.apps import AppConfig


class CrmConfig(AppConfig):
    name = "domains.crm"
    label = "crm"
