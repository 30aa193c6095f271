"""Celery tasks for analytics: a metrics snapshot as a chord over chunks of users."""

import logging

from celery import shared_task
from django.conf import settings
from django.db import transaction

from domains.analytics import services
from domains.analytics.models import MetricsSnapshot, SnapshotStatus
from domains.jobs.tasks import JobTaskName
from workers.base import JobPartTask, JobTask, record_load
from workers.chords import job_finish, start_chord

logger = logging.getLogger(__name__)

_LIMITS = {
    "soft_time_limit": settings.METRICS_SOFT_TIME_LIMIT,
    "time_limit": settings.TASK_TIME_LIMITS["analytics"],
}


@shared_task(bind=True, base=JobTask, name=JobTaskName.ANALYTICS_SNAPSHOT, **_LIMITS)
def generate_snapshot(self: JobTask, *, job_id: int, snapshot_id: int) -> None:
    record_load(MetricsSnapshot, snapshot_id, "pending snapshot", status=SnapshotStatus.PENDING)
    ranges, total = services.user_id_ranges()
    self.reporter.progress(stage="computing", current=0, total=total, force=True)
    start_chord(
        job_id=job_id,
        parts=[
            user_metrics.s(
                job_id=job_id, snapshot_id=snapshot_id, first_id=first, last_id=last, total=total
            )
            for first, last in ranges
        ],
        body=aggregate_snapshot.s(snapshot_id=snapshot_id, job_id=job_id),
    )


@shared_task(bind=True, base=JobPartTask, name="analytics.user_metrics", **_LIMITS)
def user_metrics(
    self: JobPartTask, *, job_id: int, snapshot_id: int, first_id: int, last_id: int, total: int
) -> dict:
    """One chunk of the header: the per-user figures of a range of user ids."""
    snapshot = record_load(MetricsSnapshot, snapshot_id, "snapshot")
    partial = services.user_metrics_chunk(snapshot=snapshot, first_id=first_id, last_id=last_id)
    services.metrics_progress_add(
        snapshot=snapshot,
        part_id=f"{first_id}-{last_id}",
        users=partial["users"],
        total=total,
        reporter=self.reporter,
    )
    return partial


@shared_task(bind=True, base=JobPartTask, name="analytics.aggregate_snapshot")
def aggregate_snapshot(self: JobPartTask, partials: list[dict], *, snapshot_id: int, job_id: int):
    """The chord's body: add the partials up, and end the job."""
    with transaction.atomic():  # the figures and the job's end, together
        snapshot = record_load(MetricsSnapshot, snapshot_id, "snapshot")
        snapshot = services.metrics_snapshot_complete(snapshot=snapshot, partials=partials)
        result = services.metrics_snapshot_summary(snapshot)
        job_finish(job_id, result, done=snapshot.user_count)
    return result
