from django.contrib import admin

from domains.analytics.models import MetricsSnapshot


@admin.register(MetricsSnapshot)
class MetricsSnapshotAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "status",
        "as_of",
        "user_count",
        "active_user_count",
        "order_count",
        "revenue",
        "completed_at",
    )
    list_filter = ("status",)
    readonly_fields = ("created_at", "completed_at")
    raw_id_fields = ("requested_by", "job")
