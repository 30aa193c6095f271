from decimal import Decimal

from django.conf import settings
from django.db import models

from domains.jobs.models import JobBacked, JobKind, job_ends


class SnapshotStatus(models.TextChoices):
    PENDING = "pending"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class MetricsSnapshot(JobBacked):
    """Order metrics over every user at one moment, aggregated from per-user figures."""

    job_kind = JobKind.METRICS_SNAPSHOT
    job_end_statuses = job_ends(
        completed=SnapshotStatus.COMPLETED,
        failed=SnapshotStatus.FAILED,
        cancelled=SnapshotStatus.CANCELLED,
    )
    job_open_statuses = (SnapshotStatus.PENDING,)

    status = models.CharField(
        max_length=16, choices=SnapshotStatus.choices, default=SnapshotStatus.PENDING
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Orders created before this instant are counted, so that chunks agree on one cut.
    as_of = models.DateTimeField()
    user_count = models.PositiveIntegerField(default=0)
    active_user_count = models.PositiveIntegerField(default=0)  # users with an order
    order_count = models.PositiveIntegerField(default=0)
    revenue = models.DecimalField(max_digits=16, decimal_places=2, default=Decimal("0"))
    max_user_revenue = models.DecimalField(max_digits=16, decimal_places=2, default=Decimal("0"))
    average_order_value = models.DecimalField(max_digits=14, decimal_places=2, default=Decimal("0"))
    revenue_per_active_user = models.DecimalField(
        max_digits=14, decimal_places=2, default=Decimal("0")
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at", "-id")

    def __str__(self) -> str:
        return f"metrics snapshot #{self.pk} ({self.status})"
