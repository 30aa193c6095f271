"""Celery tasks for crm: the customer sync, on demand and on the beat schedule."""

import logging
from typing import Any

from celery import shared_task
from django.conf import settings

from domains.crm import services
from domains.crm.models import SyncLog
from domains.integrations.client import RequestRejected, RetryLater
from workers.base import JobTask

logger = logging.getLogger(__name__)


class SyncTask(JobTask):
    abstract = True
    public_errors = (*JobTask.public_errors, RequestRejected)

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        services.sync_log_fail(sync_log_id=kwargs["sync_log_id"], error=self.public_message(exc))
        super().on_failure(exc, task_id, args, kwargs, einfo)


@shared_task(
    bind=True,
    base=SyncTask,
    name="crm.sync",
    max_retries=settings.CRM_SYNC_MAX_ATTEMPTS - 1,
    soft_time_limit=settings.CRM_SYNC_SOFT_TIME_LIMIT,
    time_limit=settings.CRM_SYNC_SOFT_TIME_LIMIT + 60,
)
def sync_customers(self: JobTask, *, job_id: int, sync_log_id: int) -> dict[str, Any] | None:
    sync_log = SyncLog.objects.filter(pk=sync_log_id).first()
    if sync_log is None:
        logger.warning("crm.sync_vanished", extra={"sync_log_id": sync_log_id, "job_id": job_id})
        return None
    try:
        sync_log = services.customers_sync_run(sync_log=sync_log, reporter=self.reporter)
    except RetryLater as error:
        # The CRM is busy or down: come back when it said to; the run resumes at its page.
        raise self.retry(exc=error, countdown=error.retry_after) from None
    return services.sync_log_summary(sync_log)


@shared_task(name="crm.sync_scheduled")
def sync_scheduled(*, full_sync: bool) -> int | None:
    """The beat's entry: a sync like a staff member's, with its own SyncLog and Job."""
    sync_log = services.customers_sync_scheduled(full_sync=full_sync)
    return sync_log.pk if sync_log else None
