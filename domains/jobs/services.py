"""Jobs: creating the row with the domain record, sending its task, cancelling, and the
watchdog that sends again, or ends, a job that can no longer progress."""

import logging
from datetime import timedelta
from enum import StrEnum
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from domains.accounts.models import User
from domains.errors import DomainError
from domains.jobs.events import snapshot_key
from domains.jobs.models import Job, JobKind, JobStatus
from domains.jobs.outbox import outbox_send
from domains.jobs.progress import job_end
from domains.metrics import watchdog_actions
from domains.redis import progress_client
from domains.tracing import trace_current

logger = logging.getLogger(__name__)

RUNNING_STATUSES = (JobStatus.STARTED, JobStatus.PROGRESS, JobStatus.RETRY)


class JobErrorCode(StrEnum):
    ALREADY_FINISHED = "ALREADY_FINISHED"


class JobError(DomainError):
    pass


def job_create(
    *, kind: JobKind, owner: User | None, total: int | None = None, retry_of: Job | None = None
) -> Job:
    """A PENDING job; call inside the transaction that writes the record it serves.

    It keeps the trace it is created in (the mutation's, when tracing is on), which its
    task continues wherever and whenever it is sent."""
    trace_id, trace_context = trace_current()
    return Job.objects.create(
        kind=kind,
        owner=owner,
        total=total,
        retry_of=retry_of,
        trace_id=trace_id,
        trace_context=trace_context,
    )


def job_dispatch(*, job: Job, task_name: str, **task_kwargs: Any) -> None:
    """Send the job's task once the surrounding transaction commits (never before).

    The row is the outbox: it keeps the task's name and arguments, so a send that fails
    (the broker is down) or a message the broker lost is sent again by the watchdog. The
    task is sent by name, so that domains need not import the workers; the Celery task id
    is the job's own, so the task can be revoked by it.
    """
    Job.objects.filter(pk=job.pk).update(task_name=task_name, task_kwargs=task_kwargs)
    job.task_name, job.task_kwargs = task_name, task_kwargs
    transaction.on_commit(lambda: job_send(job=job))


def job_send(*, job: Job) -> bool:
    """Send the job's task now, in the job's trace (the message carries it to the task's
    span, from whichever process sends it); a failure is logged and left to the watchdog."""
    if not outbox_send(
        task_name=job.task_name,
        kwargs={"job_id": job.pk, **job.task_kwargs},
        task_id=str(job.task_id),
        trace_context=job.trace_context,
    ):
        logger.warning("job.send_failed", extra={"job_id": job.pk, "task": job.task_name})
        return False
    Job.objects.filter(pk=job.pk).update(dispatched_at=timezone.now())
    return True


def job_cancel(*, job: Job) -> Job:
    """Ask a job to stop. One that no worker runs right now (pending, or waiting for its
    retry) ends at once; a running one stops at its next step, item or part."""
    with transaction.atomic(durable=True):
        requested = Job.objects.filter(pk=job.pk, status__in=(JobStatus.PENDING, *RUNNING_STATUSES))
        requested = requested.update(cancel_requested=True)
    if not requested:
        raise JobError(
            "The job has already finished.", code=JobErrorCode.ALREADY_FINISHED, field="id"
        )
    job.refresh_from_db()
    if job.status in (JobStatus.PENDING, JobStatus.RETRY):
        job_end(job_id=job.pk, status=JobStatus.CANCELLED)
        current_app.control.revoke(str(job.task_id))
    else:
        progress_client().hset(snapshot_key(job.pk), "cancel", "1")
    logger.info("job.cancel_requested", extra={"job_id": job.pk, "status": job.status})
    job.refresh_from_db()
    return job


def job_watchdog_sweep() -> dict[str, int]:
    """Find the jobs that can no longer progress, and send them again or end them.

    - pending and never sent (the broker was down at commit): sent now;
    - pending past JOB_PENDING_GRACE_SECONDS since it was sent (its message may be lost),
      or running with a lapsed lease (its worker stopped): sent again, which is safe since
      every task's effects are idempotent and a duplicate delivery claims nothing;
    - either of those past JOB_MAX_REVIVALS: ended FAILURE with the reason.
    Returns what it did, by action.
    """
    now = timezone.now()
    grace = now - timedelta(seconds=settings.JOB_PENDING_GRACE_SECONDS)
    counts = {"sent": 0, "revived": 0, "given_up": 0}
    for job in Job.objects.filter(status=JobStatus.PENDING, dispatched_at__isnull=True).exclude(
        task_name=""
    ):
        counts["sent"] += job_send(job=job)
    stuck = Job.objects.filter(
        Q(status=JobStatus.PENDING, dispatched_at__lt=grace)
        | Q(status__in=RUNNING_STATUSES, lease_expires_at__lt=now)
    ).exclude(task_name="")
    for job in stuck:
        if job.revivals >= settings.JOB_MAX_REVIVALS or job.attempts >= settings.JOB_MAX_ATTEMPTS:
            ended = job_end(
                job_id=job.pk,
                status=JobStatus.FAILURE,
                error=(
                    f"The job stopped making progress (its worker or its message was lost) "
                    f"and was given up after {job.revivals + 1} tries."
                ),
            )
            counts["given_up"] += ended
            logger.error("job.watchdog_gave_up", extra={"job_id": job.pk, "kind": job.kind})
            continue
        revived = Job.objects.filter(pk=job.pk, status=job.status, revivals=job.revivals).update(
            revivals=F("revivals") + 1, dispatched_at=None
        )
        if revived and job_send(job=job):
            counts["revived"] += 1
            logger.warning(
                "job.watchdog_revived",
                extra={"job_id": job.pk, "kind": job.kind, "status": job.status},
            )
    for action, count in counts.items():
        watchdog_actions.labels(action=action).inc(count)
    return counts
