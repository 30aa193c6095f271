"""Starting a job's work again, and cancelling many jobs at once.

A retry is a new Job linked to the one it retries (`retry_of`): the original keeps its
history, and its domain says whether and how its work starts again. Each domain's
AppConfig names, per JobKind, the handler in its services (`job_retry_handlers`); a kind
with none cannot be retried.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass

from django.db import transaction
from django.db.models import QuerySet

from domains.errors import CommonErrorCode
from domains.jobs.errors import JobError, JobErrorCode
from domains.jobs.models import ACTIVE_STATUSES, Job, JobKind, JobStatus
from domains.jobs.services import job_cancel, job_create

logger = logging.getLogger(__name__)

RETRYABLE_STATUSES = (JobStatus.FAILURE, JobStatus.CANCELLED, JobStatus.TIMEOUT)


@dataclass(frozen=True)
class RetryOptions:
    """What the caller may change in a retry; None keeps the original's."""

    payment_method: str | None = None


# Called in the transaction that created `retry` (the new PENDING job): ties the domain's
# record to it and dispatches its task, or raises a DomainError to refuse (nothing stays).
JobRetryHandler = Callable[[Job, Job, RetryOptions], None]
_retry_handlers: dict[str, JobRetryHandler] = {}


def job_retry_handler_register(kind: JobKind, handler: JobRetryHandler) -> None:
    if _retry_handlers.get(kind, handler) is not handler:
        raise RuntimeError(f"a job retry handler for {kind} is already registered")
    _retry_handlers[kind] = handler


def job_retry_handlers() -> dict[str, JobRetryHandler]:
    return dict(_retry_handlers)


def _not_retryable(message: str) -> JobError:
    return JobError(message, code=CommonErrorCode.NOT_RETRYABLE, field="id")


def job_retry(*, job: Job, options: RetryOptions | None = None) -> Job:
    """Start `job`'s work again as a new job (same kind and owner), linked to it."""
    handler = _retry_handlers.get(job.kind)
    if handler is None:
        raise _not_retryable(f"A {job.kind} job cannot be retried.")
    if job.status not in RETRYABLE_STATUSES:
        raise _not_retryable("Only a failed, cancelled or timed-out job can be retried.")
    with transaction.atomic(durable=True):
        # The original's row lock: two retries of one job at once make one new job.
        original = Job.objects.select_for_update().get(pk=job.pk)
        if original.retries.exists():
            raise _not_retryable("The job was already retried; retry its latest attempt.")
        retry = job_create(
            kind=original.kind, owner=original.owner, total=original.total, retry_of=original
        )
        handler(original, retry, options or RetryOptions())
    logger.info("job.retried", extra={"job_id": retry.pk, "retry_of": original.pk})
    retry.refresh_from_db()
    return retry


@dataclass(frozen=True)
class JobsCancelled:
    """What a bulk cancel did: the jobs it cancelled, and why it refused the others that
    were still running (each past its point of no return: NOT_CANCELLABLE)."""

    cancelled: list[Job]
    refused: list[JobError]


def jobs_cancel(*, jobs: QuerySet[Job]) -> JobsCancelled:
    """Cancel every active job of `jobs`, each as job_cancel does (it stops and its work is
    undone, or it is refused); those that end meanwhile are passed over."""
    cancelled, refused = [], []
    for job in jobs.filter(status__in=ACTIVE_STATUSES).order_by("pk"):
        try:
            cancelled.append(job_cancel(job=job))
        except JobError as error:
            if error.code == JobErrorCode.NOT_CANCELLABLE:
                refused.append(error)
            elif error.code != JobErrorCode.ALREADY_FINISHED:
                raise
    logger.info("jobs.cancelled", extra={"count": len(cancelled), "refused": len(refused)})
    return JobsCancelled(cancelled=cancelled, refused=refused)
