from django.contrib import admin

from domains.reports.models import Report


@admin.register(Report)
class ReportAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "report_type",
        "status",
        "owner",
        "row_count",
        "created_at",
        "completed_at",
    )
    list_filter = ("report_type", "status")
    search_fields = ("owner__email",)
    raw_id_fields = ("owner", "job")
