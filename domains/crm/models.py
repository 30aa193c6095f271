from django.conf import settings
from django.db import models

from domains.jobs.models import JobBacked, JobKind, job_ends


class Customer(models.Model):
    """A customer as the CRM knows it; upserted by its external id."""

    external_id = models.CharField(max_length=64, unique=True)
    email = models.EmailField()
    first_name = models.CharField(max_length=150, blank=True)
    last_name = models.CharField(max_length=150, blank=True)
    phone = models.CharField(max_length=32, blank=True)
    company = models.CharField(max_length=200, blank=True)
    external_updated_at = models.DateTimeField()
    synced_at = models.DateTimeField()

    class Meta:
        ordering = ("external_id",)

    def __str__(self) -> str:
        return f"{self.email} ({self.external_id})"


class SyncKind(models.TextChoices):
    FULL = "full"
    INCREMENTAL = "incremental"


class SyncStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class SyncLog(JobBacked):
    job_kind = JobKind.CUSTOMER_SYNC
    job_end_statuses = job_ends(
        completed=SyncStatus.COMPLETED, failed=SyncStatus.FAILED, cancelled=SyncStatus.CANCELLED
    )
    job_open_statuses = (SyncStatus.PENDING, SyncStatus.RUNNING)

    kind = models.CharField(max_length=16, choices=SyncKind.choices)
    status = models.CharField(max_length=16, choices=SyncStatus.choices, default=SyncStatus.PENDING)
    since = models.DateTimeField(null=True, blank=True)  # incremental: records updated after
    triggered_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created = models.PositiveIntegerField(default=0)
    updated = models.PositiveIntegerField(default=0)
    skipped = models.PositiveIntegerField(default=0)
    errors = models.PositiveIntegerField(default=0)
    # The page to fetch next: a retried run resumes here rather than starting over.
    next_page = models.PositiveIntegerField(default=1)
    # The bad records: [{"externalId": ..., "error": ...}], capped.
    error_details = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at", "-id")

    def __str__(self) -> str:
        return f"{self.kind} sync #{self.pk} {self.status}"
