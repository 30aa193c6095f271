"""Celery tasks for crm: the customer sync, on demand and on the beat schedule."""

import logging
from typing import Any

from celery import shared_task
from django.conf import settings

from domains.crm import services
from domains.crm.models import SyncLog
from domains.integrations.client import RequestRejected
from domains.jobs.tasks import JobTaskName
from workers.base import JobTask, record_load

logger = logging.getLogger(__name__)


class SyncTask(JobTask):
    abstract = True
    public_errors = (*JobTask.public_errors, RequestRejected)


@shared_task(
    bind=True,
    base=SyncTask,
    name=JobTaskName.CRM_SYNC,
    max_retries=settings.CRM_SYNC_MAX_RETRIES,
    soft_time_limit=settings.CRM_SYNC_SOFT_TIME_LIMIT,
    time_limit=settings.TASK_TIME_LIMITS["crm"],
)
def sync_customers(self: JobTask, *, job_id: int, sync_log_id: int) -> dict[str, Any]:
    """A RetryLater from the CRM (busy or down) reschedules the run; it resumes at its page."""
    sync_log = record_load(SyncLog, sync_log_id, "sync log")
    sync_log = services.customers_sync_run(sync_log=sync_log, reporter=self.reporter)
    return services.sync_log_summary(sync_log)


@shared_task(name="crm.sync_scheduled")
def sync_scheduled(*, full_sync: bool) -> int | None:
    """The beat's entry: a sync like a staff member's, with its own SyncLog and Job."""
    sync_log = services.customers_sync_scheduled(full_sync=full_sync)
    return sync_log.pk if sync_log else None
