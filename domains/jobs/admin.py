from django.contrib import admin

from domains.jobs.models import FollowUp, Job


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "kind",
        "status",
        "owner",
        "progress",
        "attempts",
        "created_at",
        "finished_at",
    )
    list_filter = ("kind", "status")
    search_fields = ("id", "owner__email", "task_id")
    readonly_fields = [f.name for f in Job._meta.fields]


@admin.register(FollowUp)
class FollowUpAdmin(admin.ModelAdmin):
    list_display = ("id", "task_name", "key", "sends", "sent_at", "done_at", "created_at")
    list_filter = ("task_name",)
    search_fields = ("key",)
    readonly_fields = [f.name for f in FollowUp._meta.fields]
