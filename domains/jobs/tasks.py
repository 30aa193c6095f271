"""The names of the tasks that start jobs: domains send them by name (they do not import
the workers), workers register under them, and a test checks that each is registered."""

from enum import StrEnum


class JobTaskName(StrEnum):
    REPORTS_GENERATE_SALES = "reports.generate_sales"
    PAYMENTS_PROCESS = "payments.process"
    PAYMENTS_RECONCILE = "payments.reconcile"
    MEDIA_PROCESS_IMAGE = "media.process_image"
    ORDERS_CHECKOUT = "orders.checkout"
    ORDERS_CHECKOUT_COMPENSATE = "orders.checkout_compensate"
    ORDERS_SEND_CONFIRMATION = "orders.send_confirmation"
    CRM_SYNC = "crm.sync"
    CATALOG_SYNC_PRODUCT = "catalog.sync_product"
    CATALOG_SYNC_ALL = "catalog.sync_all"
    ANALYTICS_SNAPSHOT = "analytics.snapshot"
    NOTIFICATIONS_FAN_OUT = "notifications.fan_out"
    NOTIFICATIONS_SEND_EMAIL = "notifications.send_email"
