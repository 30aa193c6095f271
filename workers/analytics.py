"""Celery tasks for analytics: a metrics snapshot as a chord over chunks of users."""

import logging

from celery import chord, shared_task
from django.conf import settings

from domains.analytics import services
from domains.analytics.models import MetricsSnapshot, SnapshotStatus
from workers.base import JobTask
from workers.chords import hand_over, job_fail, job_succeed

logger = logging.getLogger(__name__)


@shared_task(
    bind=True,
    base=JobTask,
    name="analytics.snapshot",
    soft_time_limit=settings.METRICS_SOFT_TIME_LIMIT,
    time_limit=settings.METRICS_SOFT_TIME_LIMIT + 60,
)
def generate_snapshot(self: JobTask, *, job_id: int, snapshot_id: int) -> None:
    snapshot = MetricsSnapshot.objects.filter(pk=snapshot_id, status=SnapshotStatus.PENDING).first()
    if snapshot is None:
        logger.warning("metrics.not_pending", extra={"snapshot_id": snapshot_id, "job_id": job_id})
        return None
    ranges, total = services.user_id_ranges()
    self.reporter.progress(stage="computing", current=0, total=total, force=True)
    header = [
        user_metrics.s(snapshot_id=snapshot_id, first_id=first, last_id=last, total=total)
        for first, last in ranges
    ]
    body = aggregate_snapshot.s(snapshot_id=snapshot_id, job_id=job_id).on_error(
        snapshot_failed.s(snapshot_id=snapshot_id, job_id=job_id)
    )
    hand_over(chord(header, body))


@shared_task(
    name="analytics.user_metrics",
    acks_late=True,
    soft_time_limit=settings.METRICS_SOFT_TIME_LIMIT,
    time_limit=settings.METRICS_SOFT_TIME_LIMIT + 60,
)
def user_metrics(*, snapshot_id: int, first_id: int, last_id: int, total: int) -> dict:
    """One chunk of the header: the per-user figures of a range of user ids."""
    snapshot = MetricsSnapshot.objects.get(pk=snapshot_id)
    partial = services.user_metrics_chunk(snapshot=snapshot, first_id=first_id, last_id=last_id)
    services.metrics_progress_add(snapshot=snapshot, users=partial["users"], total=total)
    return partial


@shared_task(name="analytics.aggregate_snapshot", acks_late=True)
def aggregate_snapshot(partials: list[dict], *, snapshot_id: int, job_id: int) -> dict:
    """The chord's body: add the partials up, and end the job."""
    snapshot = MetricsSnapshot.objects.get(pk=snapshot_id)
    snapshot = services.metrics_snapshot_complete(snapshot=snapshot, partials=partials)
    result = services.metrics_snapshot_summary(snapshot)
    job_succeed(job_id, result, done=snapshot.user_count)
    return result


@shared_task(name="analytics.snapshot_failed")
def snapshot_failed(request, exc, traceback, *, snapshot_id: int, job_id: int) -> None:
    """The chord's error callback: a chunk failed, so the snapshot and its job did."""
    services.metrics_snapshot_fail(snapshot_id=snapshot_id, error="A part of the snapshot failed.")
    job_fail(job_id, exc)
