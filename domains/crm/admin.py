from django.contrib import admin

from domains.crm.models import Customer, SyncLog


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin):
    list_display = ("external_id", "email", "first_name", "last_name", "company", "synced_at")
    search_fields = ("external_id", "email", "last_name", "company")
    readonly_fields = ("external_updated_at", "synced_at")


@admin.register(SyncLog)
class SyncLogAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "kind",
        "status",
        "created",
        "updated",
        "skipped",
        "errors",
        "created_at",
        "completed_at",
    )
    list_filter = ("kind", "status")
    readonly_fields = ("error_details", "next_page", "created_at", "completed_at")
    raw_id_fields = ("triggered_by", "job")
