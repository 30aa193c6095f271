from django.conf import settings
from django.db import models

from domains.jobs.models import JobBacked, JobKind, job_ends


class ReportStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Report(JobBacked):
    job_kind = JobKind.SALES_REPORT
    job_end_statuses = job_ends(
        completed=ReportStatus.COMPLETED,
        failed=ReportStatus.FAILED,
        cancelled=ReportStatus.CANCELLED,
    )
    job_open_statuses = (ReportStatus.PENDING, ReportStatus.RUNNING)

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="reports"
    )
    report_type = models.CharField(max_length=32, default="sales")
    status = models.CharField(
        max_length=16, choices=ReportStatus.choices, default=ReportStatus.PENDING
    )
    parameters = models.JSONField(default=dict)
    file = models.FileField(upload_to="reports/", blank=True, max_length=255)
    row_count = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at", "-id")

    def __str__(self) -> str:
        return f"{self.report_type} report #{self.pk}"
