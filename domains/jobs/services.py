"""Jobs: creating the row with the domain record, sending its task, cancelling, and the
watchdog that sends again, or ends, a job that can no longer progress."""

import logging
from datetime import timedelta
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from domains.accounts.models import User
from domains.infra.metrics import watchdog_actions
from domains.infra.tracing import trace_current
from domains.jobs.dispatcher import dispatcher_run
from domains.jobs.ending import job_end
from domains.jobs.errors import JobError, JobErrorCode
from domains.jobs.idempotency import idempotency_claim
from domains.jobs.models import ACTIVE_STATUSES, Job, JobKind, JobStatus
from domains.jobs.outbox import outbox_send
from domains.jobs.publish import job_cancel_publish
from domains.jobs.reporter import JobAlreadyFinished, JobCancelled

logger = logging.getLogger(__name__)

RUNNING_STATUSES = (JobStatus.STARTED, JobStatus.PROGRESS, JobStatus.RETRY)


def job_create(
    *, kind: JobKind, owner: User | None, total: int | None = None, retry_of: Job | None = None
) -> Job:
    """A PENDING job; call inside the transaction that writes the record it serves.

    It keeps the trace it is created in (the mutation's, when tracing is on), which its
    task continues wherever and whenever it is sent. Inside `idempotent_start` it claims
    the request's idempotency key for the job (a concurrent duplicate is rolled back)."""
    trace_id, trace_context = trace_current()
    job = Job.objects.create(
        kind=kind,
        owner=owner,
        total=total,
        retry_of=retry_of,
        trace_id=trace_id,
        trace_context=trace_context,
    )
    idempotency_claim(job)  # the request's idempotency key, if it sent one
    return job


def job_dispatch(*, job: Job, task_name: str, **task_kwargs: Any) -> None:
    """Queue the job's task for the dispatcher, which sends it once the surrounding
    transaction commits (never before) and the job's owner and lane have a free slot
    (domains/jobs/dispatcher.py).

    The row is the outbox: it keeps the task's name and arguments, so a send that fails
    (the broker is down) or a message the broker lost is sent again by the watchdog. The
    task is sent by name, so that domains need not import the workers; the Celery task id
    is the job's own, so the task can be revoked by it.
    """
    Job.objects.filter(pk=job.pk).update(task_name=task_name, task_kwargs=task_kwargs)
    job.task_name, job.task_kwargs = task_name, task_kwargs
    # robust: a pass that fails (the database busy) is logged, not raised into the
    # committed request; the watchdog's next sweep runs it again.
    transaction.on_commit(dispatcher_run, robust=True)


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
    """Cancel a job, or refuse to, saying why; an accepted cancel is never followed by
    SUCCESS.

    Accepted (one conditional update of the row) while the job is active and has not
    passed its point of no return (`job_point_of_no_return`): the job's success checks the
    same row (`job_end`), so either the cancel or the success comes first, never both. A
    job that no worker runs right now (pending, or waiting for its retry) ends at once; a
    running one is told at once (its worker stops at its next step, or while it waits on
    an outside service) and its record undoes what was done, as after a failure (a charge
    is refunded, stock released). Asking again while it stops changes nothing.
    Refused: ALREADY_FINISHED once it ended, NOT_CANCELLABLE past its point of no return.
    """
    with transaction.atomic(durable=True):
        accepted = Job.objects.filter(
            pk=job.pk,
            status__in=ACTIVE_STATUSES,
            cancel_requested_at__isnull=True,
            cancel_refused_because="",
        ).update(cancel_requested_at=timezone.now())
    job.refresh_from_db()
    if not accepted:
        if job.is_terminal:
            raise JobError(
                "The job has already finished.", code=JobErrorCode.ALREADY_FINISHED, field="id"
            )
        if job.cancel_refused_because:
            logger.info("job.cancel_refused", extra={"job_id": job.pk, "status": job.status})
            raise JobError(
                f"The job can no longer be cancelled: {job.cancel_refused_because}",
                code=JobErrorCode.NOT_CANCELLABLE,
                field="id",
            )
        return job  # already being cancelled
    stops_at_once = job.status in (JobStatus.PENDING, JobStatus.RETRY)
    # The worker's flag first (and the subscribers' event, for a job that goes on a while).
    job_cancel_publish(job, event=not stops_at_once)
    if stops_at_once:
        job_end(job_id=job.pk, status=JobStatus.CANCELLED)
        current_app.control.revoke(str(job.task_id))
    logger.info("job.cancel_requested", extra={"job_id": job.pk, "status": job.status})
    job.refresh_from_db()
    return job


def job_point_of_no_return(*, job_id: int, reason: str) -> None:
    """The job is about to do what cannot be undone (confirm an order, send an email):
    from now on a cancel is refused with `reason` (NOT_CANCELLABLE).

    Call it inside the transaction that does it: when a cancel was accepted first it
    raises JobCancelled, and that transaction rolls back (nothing irreversible was done);
    when the job already ended it raises JobAlreadyFinished.
    """
    if Job.objects.filter(
        pk=job_id, status__in=ACTIVE_STATUSES, cancel_requested_at__isnull=True
    ).update(cancel_refused_because=reason[:200]):
        return
    if Job.objects.filter(pk=job_id, status__in=ACTIVE_STATUSES).exists():
        raise JobCancelled
    raise JobAlreadyFinished


def job_watchdog_sweep() -> dict[str, int]:
    """Find the jobs that can no longer progress, and send them again or end them.

    - admitted and never sent (the broker was down at commit): sent now; one still
      waiting for a slot is the dispatcher's (whose pass this sweep runs too), not lost;
    - pending past JOB_PENDING_GRACE_SECONDS since it was sent (its message may be lost),
      or running with a lapsed lease (its worker stopped): sent again, which is safe since
      every task's effects are idempotent and a duplicate delivery claims nothing;
    - either of those past JOB_MAX_REVIVALS: ended FAILURE with the reason.
    Returns what it did, by action.
    """
    now = timezone.now()
    grace = now - timedelta(seconds=settings.JOB_PENDING_GRACE_SECONDS)
    counts = {"sent": 0, "revived": 0, "given_up": 0}
    # Admitted but not sent: the pass's own send failed (broker down). One whose pass is
    # sending it right now may be sent twice: a duplicate delivery claims nothing.
    for job in Job.objects.filter(
        status=JobStatus.PENDING, dispatched_at__isnull=True, admitted_at__isnull=False
    ).exclude(task_name=""):
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
    # Slots freed by what ended here, or by jobs that ended while no pass ran (a restart).
    counts["admitted"] = dispatcher_run(every_place=True)
    for action, count in counts.items():
        watchdog_actions.labels(action=action).inc(count)
    return counts
