"""Jobs: creating the row with the domain record, dispatching its task, cancelling."""

import logging
from enum import StrEnum
from functools import partial
from typing import Any

from celery import current_app
from django.db import transaction

from domains.accounts.models import User
from domains.errors import DomainError
from domains.jobs.events import snapshot_key
from domains.jobs.models import Job, JobKind, JobStatus
from domains.jobs.progress import JobReporter
from domains.redis import sync_client

logger = logging.getLogger(__name__)


class JobErrorCode(StrEnum):
    ALREADY_FINISHED = "ALREADY_FINISHED"


class JobError(DomainError):
    pass


def job_create(*, kind: JobKind, owner: User | None, total: int | None = None) -> Job:
    """A PENDING job; call inside the transaction that writes the record it serves."""
    return Job.objects.create(kind=kind, owner=owner, total=total)


def job_dispatch(*, job: Job, task_name: str, **task_kwargs: Any) -> None:
    """Send the job's task once the surrounding transaction commits (never before).

    The task is sent by name, so that domains need not import the workers; the Celery task
    id is the job's own, so the task can be revoked by it.
    """
    send = partial(
        current_app.send_task,
        task_name,
        kwargs={"job_id": job.pk, **task_kwargs},
        task_id=str(job.task_id),
    )
    transaction.on_commit(send)


def job_cancel(*, job: Job) -> Job:
    """Ask a job to stop. A pending job ends at once; a running one stops at its next tick."""
    with transaction.atomic(durable=True):
        requested = Job.objects.filter(
            pk=job.pk,
            status__in=[JobStatus.STARTED, JobStatus.PROGRESS, JobStatus.RETRY, JobStatus.PENDING],
        ).update(cancel_requested=True)
    if not requested:
        raise JobError(
            "The job has already finished.", code=JobErrorCode.ALREADY_FINISHED, field="id"
        )
    job.refresh_from_db()
    if job.status == JobStatus.PENDING:
        # Not picked up yet: end it here; the task, if it arrives, finds it ended.
        JobReporter(job).cancelled()
        current_app.control.revoke(str(job.task_id))
    else:
        sync_client().hset(snapshot_key(job.pk), "cancel", "1")
    logger.info("job.cancel_requested", extra={"job_id": job.pk, "status": job.status})
    job.refresh_from_db()
    return job
