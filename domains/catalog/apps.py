from django.apps import AppConfig


class CatalogConfig(AppConfig):
    name = "domains.catalog"
    label = "catalog"
