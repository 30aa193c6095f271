"""The worker kit: the job task base and the one base for every part of a job.

A job task (`JobTask`) owns its Job: it claims the delivery (one more attempt, the lease),
runs, and ends the job through the one transition (`domains.jobs.progress.job_end`) from
inside the task, before Celery writes any result, so that a result backend that is down
cannot leave the job running. A part (`JobPartTask`: a chord's header or body, a chain's
step) reports into a job another task claimed and never claims it; the canvas's body or
its error callback ends the job (workers.chords).

Both share one retry policy for `RetryLater` (rescheduled after the wait it names, within
the task's `max_retries`; exhausted, the job ends FAILURE), cap their redeliveries at
JOB_MAX_ATTEMPTS, keep the job's lease while they run, and stop at a cancel: at the next
progress, or at once while waiting on an outside service (domains.jobs.cancellation).
"""

import logging
import threading
from contextlib import contextmanager
from typing import Any

from billiard.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from celery import Task
from celery.exceptions import Ignore, Retry
from celery.utils.time import get_exponential_backoff_interval
from django.conf import settings
from django.db import close_old_connections, connection

from domains.errors import DomainError
from domains.integrations.client import RetryLater
from domains.jobs.cancellation import cancel_watched
from domains.jobs.models import Job, JobStatus
from domains.jobs.progress import (
    JobAlreadyFinished,
    JobCancelled,
    JobReporter,
    job_attempt_start,
    job_end,
    job_lease_forget,
    job_lease_renew,
    job_lease_renewed_ago,
    job_part_redelivered,
)
from domains.log_context import job_logged
from domains.redis import sync_client
from domains.tracing import trace_annotate

logger = logging.getLogger(__name__)

INTERNAL_ERROR = "The job failed because of an internal error; it has been logged."


class GaveUp(DomainError):
    """A budget ran out: redeliveries (a lost worker) or retries (an outside service)."""

    def __init__(self, message: str):
        super().__init__(message, code="GAVE_UP")


class RecordVanished(DomainError):
    """The record the job serves no longer exists: the job ends FAILURE, saying which."""

    def __init__(self, what: str):
        super().__init__(f"The {what} no longer exists.", code="RECORD_VANISHED")


@contextmanager
def lease_kept(job_id: int):
    """Renew the job's lease while the block runs (a thread, so that a long silent step,
    a COPY or a slow gateway call, still holds it); a killed worker stops renewing.

    Only when the work itself has not written the job's row (which renews the lease) for
    a while: a second writer beside a long read would fail it on SQLite ("database is
    locked" when a reading connection then writes)."""
    stop = threading.Event()
    every = settings.JOB_LEASE_SECONDS / 3

    def renew() -> None:
        try:
            while not stop.wait(every):
                if job_lease_renewed_ago(job_id) < every:
                    continue
                if not job_lease_renew(job_id=job_id):
                    return
        except Exception:
            logger.warning("job.lease_renew_failed", extra={"job_id": job_id}, exc_info=True)
        finally:
            connection.close()

    thread = threading.Thread(target=renew, name=f"lease-{job_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        job_lease_forget(job_id)


def _part_error_key(job_id: int) -> str:
    return f"job:{job_id}:part_error"


def job_part_error(job_id: int) -> str | None:
    """Why the first failed part of a job failed, for the canvas's error callback."""
    return sync_client().get(_part_error_key(job_id))


class _JobWork(Task):
    abstract = True
    acks_late = True
    reject_on_worker_lost = True
    # Errors whose message is for the user; anything else is logged and masked.
    public_errors: tuple[type[BaseException], ...] = (DomainError,)
    # Expected ends: Celery logs them without a traceback.
    throws = (DomainError, JobCancelled, JobAlreadyFinished, RetryLater, SoftTimeLimitExceeded)
    # The retry policy's backoff (seconds, doubled per retry; False: the service's wait).
    retry_backoff: int | bool = False
    retry_backoff_max = 600
    autoretry_for: tuple[type[BaseException], ...] = ()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        job_id = kwargs["job_id"]
        trace_annotate(job_id=job_id)  # the task's span (Celery's instrumentation)
        with job_logged(job_id):
            return self.handle_delivery(*args, **kwargs)

    def handle_delivery(self, *args: Any, **kwargs: Any) -> Any:
        """One delivery of the task: a job's (JobTask) or a part's (JobPartTask)."""
        raise NotImplementedError

    @property
    def reporter(self) -> JobReporter:
        return self.request.job_reporter

    @property
    def redelivered(self) -> bool:
        return bool((self.request.delivery_info or {}).get("redelivered"))

    def public_message(self, exc: BaseException) -> str:
        if isinstance(exc, self.public_errors):
            return str(exc)
        return INTERNAL_ERROR

    def retry_later(self, busy: RetryLater, job_id: int) -> None:
        """The one retry policy: come back when the service said to (never sooner), with
        exponential backoff and full jitter where the task sets `retry_backoff`, within
        the task's `max_retries`; past it, the work ends FAILURE."""
        if self.max_retries is None or self.request.retries < self.max_retries:
            backoff = 0.0
            if self.retry_backoff:
                backoff = get_exponential_backoff_interval(
                    factor=int(self.retry_backoff),
                    retries=self.request.retries,
                    maximum=self.retry_backoff_max or 600,
                    full_jitter=True,
                )
            countdown = max(busy.retry_after, backoff)
            self.request.retry_countdown = countdown
            raise self.retry(exc=busy, countdown=countdown) from None
        raise GaveUp(
            f"The {busy.service} service is unavailable: it still failed after "
            f"{self.request.retries + 1} tries ({busy})."
        ) from busy

    def end_status(self, job_id: int, exc: BaseException) -> tuple[JobStatus, str]:
        """The terminal status and the user's reason for an exception that ended the work."""
        if isinstance(exc, JobCancelled | JobAlreadyFinished):
            return JobStatus.CANCELLED, "Cancelled."
        if isinstance(exc, SoftTimeLimitExceeded | TimeLimitExceeded):
            logger.warning("job.timed_out", extra={"job_id": job_id, "task": self.name})
            return JobStatus.TIMEOUT, "The job ran past its time limit."
        if self.autoretry_for and isinstance(exc, tuple(self.autoretry_for)):
            # A transient error the task retries by itself, past its budget: say which.
            reason = f"Gave up after {self.request.retries + 1} tries: {type(exc).__name__}: {exc}"
            logger.warning("job.gave_up", extra={"job_id": job_id, "task": self.name})
            return JobStatus.FAILURE, reason
        if isinstance(exc, self.public_errors):
            logger.warning(
                "job.failed", extra={"job_id": job_id, "task": self.name, "error": str(exc)}
            )
            return JobStatus.FAILURE, str(exc)
        logger.error(
            "job.failed",
            extra={"job_id": job_id, "task": self.name},
            exc_info=(type(exc), exc, exc.__traceback__),
        )
        return JobStatus.FAILURE, INTERNAL_ERROR

    def on_retry(self, exc, task_id, args, kwargs, einfo) -> None:
        reporter: JobReporter | None = getattr(self.request, "job_reporter", None)
        logger.info(
            "job.retrying",
            extra={"job_id": kwargs.get("job_id"), "task": self.name, "error": repr(exc)},
        )
        if reporter is None or not isinstance(self, JobTask):
            return
        countdown = getattr(self.request, "retry_countdown", None)
        if countdown is None:  # an autoretry: its backoff is at most this
            countdown = self.retry_backoff_max if self.retry_backoff else self.default_retry_delay
        try:
            reporter.retrying(self.public_message(exc), countdown=countdown or 0)
        except (JobCancelled, JobAlreadyFinished):
            job_end(job_id=kwargs["job_id"], status=JobStatus.CANCELLED)


class JobTask(_JobWork):
    """A task that owns a Job's lifecycle; it is called with `job_id=`."""

    abstract = True

    def handle_delivery(self, *args: Any, **kwargs: Any) -> Any:
        job_id = kwargs["job_id"]
        close_old_connections()
        claimed = job_attempt_start(
            job_id=job_id, redelivered=self.redelivered, retry=bool(self.request.retries)
        )
        if claimed is None:
            logger.info("job.delivery_dropped", extra={"job_id": job_id, "task": self.name})
            raise Ignore
        job, reporter = claimed
        self.request.job_reporter = reporter
        try:
            if job.cancel_requested_at is not None:
                raise JobCancelled
            if job.attempts > settings.JOB_MAX_ATTEMPTS:
                logger.error("job.gave_up", extra={"job_id": job_id, "attempts": job.attempts})
                raise GaveUp(
                    f"Gave up after {job.attempts - 1} attempts: its worker was lost each time."
                )
            reporter.started()
            logger.info(
                "job.started", extra={"job_id": job_id, "task": self.name, "attempt": job.attempts}
            )
            with lease_kept(job_id), cancel_watched(job_id):
                try:
                    result = self.run(*args, **kwargs)
                except RetryLater as busy:
                    self.retry_later(busy, job_id)
        except (Ignore, Retry):
            raise  # handed over to a canvas, or rescheduled (on_retry records it)
        except BaseException as exc:
            status, reason = self.end_status(job_id, exc)
            job_end(job_id=job_id, status=status, error=reason, state=reporter.progress_state)
            raise
        job_end(
            job_id=job_id, status=JobStatus.SUCCESS, result=result, state=reporter.progress_state
        )
        return result


class JobPartTask(_JobWork):
    """A part of a job that another task claimed (a chord's header or body, a chain's step).

    It reports into that job without claiming it, and its own success does not end the
    job. A part delivered after its job ended is dropped; one whose job was cancelled
    fails at once (so the canvas's error callback ends the job CANCELLED without doing the
    work); one redelivered more than JOB_MAX_ATTEMPTS times (it kills its worker) fails, so
    the error callback ends the job rather than the part looping for ever. Why a part
    failed is kept for the error callback.
    """

    abstract = True

    def handle_delivery(self, *args: Any, **kwargs: Any) -> Any:
        job_id = kwargs["job_id"]
        close_old_connections()
        job = Job.objects.filter(pk=job_id).first()
        if job is None or job.is_terminal:
            logger.info("job.part_dropped", extra={"job_id": job_id, "task": self.name})
            raise Ignore
        self.request.job_reporter = JobReporter(job)
        try:
            if job.cancel_requested_at is not None:
                raise JobCancelled
            if self.redelivered:
                deliveries = job_part_redelivered(job_id=job_id, part_id=self.request.id)
                if deliveries > settings.JOB_MAX_ATTEMPTS:
                    logger.error("job.part_gave_up", extra={"job_id": job_id, "task": self.name})
                    raise GaveUp(
                        f"Gave up after {deliveries - 1} attempts: its worker was lost each time."
                    )
            with lease_kept(job_id), cancel_watched(job_id):
                try:
                    return self.run(*args, **kwargs)
                except RetryLater as busy:
                    job_lease_renew(job_id=job_id, extra_seconds=busy.retry_after)
                    self.retry_later(busy, job_id)
        except (Ignore, Retry):
            raise
        except BaseException as exc:
            _status, reason = self.end_status(job_id, exc)
            sync_client().set(
                _part_error_key(job_id), reason, nx=True, ex=settings.JOB_SNAPSHOT_TTL
            )
            raise
