"""Celery tasks for the job spine, on beat: the watchdog, and the retention purge."""

import logging
from datetime import timedelta

from celery import shared_task
from django.conf import settings

from domains.infra.redis import sync_client
from domains.jobs.outbox import followups_sweep
from domains.jobs.retention import jobs_purge
from domains.jobs.services import job_watchdog_sweep

logger = logging.getLogger(__name__)

WATCHDOG = "jobs.watchdog"
PURGE = "jobs.purge"
_LOCK = "jobs:watchdog:lock"


@shared_task(name=WATCHDOG, ignore_result=True)
def watchdog() -> dict[str, int] | None:
    """One sweep at a time across every worker and machine (a lock in Redis that expires,
    so a sweeper that died does not hold it)."""
    lock = sync_client().lock(_LOCK, timeout=max(10, settings.JOB_WATCHDOG_INTERVAL * 2))
    if not lock.acquire(blocking=False):
        return None
    try:
        counts = {**job_watchdog_sweep(), **followups_sweep()}
    finally:
        lock.release()
    if any(counts.values()):
        logger.info("jobs.watchdog_swept", extra=counts)
    return counts


@shared_task(name=PURGE, ignore_result=True)
def purge() -> dict[str, int]:
    """Finished jobs older than JOB_RETENTION_DAYS, at most JOB_PURGE_MAX_BATCHES batches a
    run (a backlog drains over the next runs). Two runs at once only race to delete the
    same rows, so no lock is needed."""
    counts = jobs_purge(
        older_than=timedelta(days=settings.JOB_RETENTION_DAYS),
        max_batches=settings.JOB_PURGE_MAX_BATCHES,
    )
    return dict(counts.removed)
