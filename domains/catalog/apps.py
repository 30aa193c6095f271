from django.apps import AppConfig


class CatalogConfig(AppConfig):
    name = "domains.catalog"
    label = "catalog"
    job_retry_handlers = {"PRODUCT_SYNC": "domains.catalog.services.product_sync_job_retry"}
