from django.contrib import admin

from domains.webhooks.models import WebhookDelivery, WebhookEndpoint


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    list_display = ("id", "url", "owner", "events", "all_jobs", "is_active", "failing_since")
    list_filter = ("is_active", "all_jobs")
    search_fields = ("url", "owner__email")
    exclude = ("secret",)  # shown once, to its owner, when registered
    readonly_fields = ("failing_since", "disabled_at", "created_at")
    raw_id_fields = ("owner",)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = ("id", "webhook_id", "event_type", "job", "endpoint", "status", "attempts")
    list_filter = ("status", "event_type")
    search_fields = ("webhook_id",)
    readonly_fields = (
        "webhook_id",
        "payload",
        "attempts",
        "next_attempt_at",
        "dispatched_at",
        "claimed_at",
        "last_response_status",
        "last_response_body",
        "last_error",
        "delivered_at",
        "created_at",
    )
    raw_id_fields = ("endpoint", "job")
