"""The worker kit: the job task base and the one base for every part of a job.

A job task (`JobTask`) owns its Job: it claims the delivery (one more attempt, the lease),
runs, and ends the job through the one transition (`domains.jobs.ending.job_end`) from
inside the task, before Celery writes any result, so that a result backend that is down
cannot leave the job running. A part (`JobPartTask`: a chord's header or body, a chain's
step) reports into a job another task claimed and never claims it; the canvas's body or
its error callback ends the job (workers.chords).

Every task loads the record it works on through the one loader (`record_load`): a row that
vanished raises `RecordVanished`, and the job ends FAILURE saying which ("The order no
longer exists."), never retried, never SUCCESS.

Both share the one retry policy (`retry_later`) for `RetryLater`, which an outside
service's client raises for a transient error: rescheduled through the broker after the
wait it names (with the task's `retry_backoff`, full jitter), within the task's budget, one
form for every task: `max_retries=settings.<X>_MAX_RETRIES`, the reschedules after the
first run (None: unbounded); past it, `retries_spent` ends the work FAILURE. No task calls
`self.retry`, sets `autoretry_for`, reads its own `request.retries` or sleeps
(tests/workers/test_retries.py). They cap their redeliveries at
JOB_MAX_ATTEMPTS, keep the job's lease while they run, and stop at a cancel: at the next
progress, or at once while waiting on an outside service (domains.jobs.cancellation). A follow-up
(`FollowUpTask`: a compensation, a reconciliation, an email sent through the outbox) shares
the same retry policy and records its run on its outbox row.

What leaves a task for Celery is never the exception that stopped the work: Celery pickles
it (the result backend, a retry's reason), and one whose arguments do not rebuild it
(RetryLater's) arrived as an `UnpickleableExceptionWrapper`, read as an internal error. The
kit turns it into its reason, the message the user reads, in one place (`reason`), and
hands Celery a plain `Retrying` or `TaskFailed` carrying that message. A retry the broker
would not take (it is down) is left to the watchdog, which sends the job or follow-up again
from its row.
"""

import logging
import threading
from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import redis
from billiard.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from celery import Task
from celery.exceptions import Ignore, Reject, Retry
from celery.utils.time import get_exponential_backoff_interval
from django.conf import settings
from django.db import close_old_connections, connection, models

from domains.errors import DomainError
from domains.infra.log_context import job_logged
from domains.infra.redis import sync_client
from domains.infra.tracing import trace_annotate
from domains.integrations.client import RetryLater
from domains.jobs.attempts import job_attempt_start
from domains.jobs.cancellation import cancel_watched
from domains.jobs.ending import job_end
from domains.jobs.lease import job_lease_forget, job_lease_renew, job_lease_renewed_ago
from domains.jobs.models import Job, JobStatus
from domains.jobs.outbox import (
    followup_done,
    followup_failed,
    followup_retrying,
    followup_run_start,
)
from domains.jobs.parts import job_part_redelivered
from domains.jobs.reporter import JobAlreadyFinished, JobCancelled, JobReporter

logger = logging.getLogger(__name__)

INTERNAL_ERROR = "The job failed because of an internal error; it has been logged."


class Retrying(Exception):
    """A retry's reason as Celery carries it: the user's message, nothing else."""


class TaskFailed(Exception):
    """What a task of the kit raises to Celery when its work ended without success: the
    reason as a plain message (the original was logged where it was caught)."""


class GaveUp(DomainError):
    """A budget ran out: redeliveries (a lost worker) or retries (an outside service)."""

    def __init__(self, message: str):
        super().__init__(message, code="GAVE_UP")


class RecordVanished(DomainError):
    """The record the job serves no longer exists: the job ends FAILURE, saying which."""

    def __init__(self, what: str):
        super().__init__(f"The {what} no longer exists.", code="RECORD_VANISHED")


M = TypeVar("M", bound=models.Model)


def record_load(model: type[M], pk: int, what: str, *, related: Sequence[str] = (), **where) -> M:
    """The one way a task loads the record it works on: the row (with `related` joined,
    matching `where`), or RecordVanished naming `what`, which ends the job FAILURE with
    "The <what> no longer exists." (a follow-up records it and is not sent again)."""
    record = model._default_manager.select_related(*related).filter(pk=pk, **where).first()
    if record is None:
        raise RecordVanished(what)
    return record


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
    try:
        return sync_client().get(_part_error_key(job_id))
    except redis.RedisError:
        return None


class _JobWork(Task):
    abstract = True
    acks_late = True
    reject_on_worker_lost = True
    # Errors whose message is for the user; anything else is logged and masked.
    public_errors: tuple[type[BaseException], ...] = (DomainError,)
    # Expected ends: Celery logs them without a traceback.
    throws = (
        TaskFailed,
        DomainError,
        JobCancelled,
        JobAlreadyFinished,
        RetryLater,
        SoftTimeLimitExceeded,
    )
    # The retry policy's backoff (seconds, doubled per retry; False: the service's wait).
    retry_backoff: int | bool = False
    retry_backoff_max = 600

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

    def reason(self, exc: BaseException) -> str:
        """The one conversion of what stopped the work into what the user reads: the
        service's own message (a domain error, an outside service's RetryLater), else the
        internal error (logged where it ends the work)."""
        if isinstance(exc, Retrying | TaskFailed):
            return str(exc)
        if isinstance(exc, JobCancelled | JobAlreadyFinished):
            return "Cancelled."
        if isinstance(exc, SoftTimeLimitExceeded | TimeLimitExceeded):
            return "The job ran past its time limit."
        if isinstance(exc, (RetryLater, *self.public_errors)):
            return str(exc)
        return INTERNAL_ERROR

    def retry(
        self,
        args=None,
        kwargs=None,
        exc=None,
        throw=True,
        eta=None,
        countdown=None,
        max_retries=None,
        **options,
    ):
        """The retry policy's send (`retry_later` is its only caller): the reason goes to
        Celery as a message, never as the exception object."""
        limit = self.max_retries if max_retries is None else max_retries
        if exc is not None and (limit is None or self.request.retries < limit):
            exc = Retrying(self.reason(exc))
            self.request.retry_reason = str(exc)
            if countdown is not None:
                self.request.retry_countdown = countdown
        return super().retry(args, kwargs, exc, throw, eta, countdown, max_retries, **options)

    def retry_asked(self) -> tuple[str, float]:
        """The reason and wait of the retry this run asked for."""
        reason = getattr(self.request, "retry_reason", None) or "The retry could not be sent."
        return reason, float(getattr(self.request, "retry_countdown", None) or 0)

    def retry_later(self, busy: RetryLater, job_id: int) -> Any:
        """The one retry policy: come back when the service said to (never sooner), with
        exponential backoff and full jitter where the task sets `retry_backoff`, within
        the task's `max_retries`; past it, what `retries_spent` says."""
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
        return self.retries_spent(busy)

    def retries_spent(self, busy: RetryLater) -> Any:
        """The budget ran out: the work ends FAILURE, saying why. A part whose failure is a
        result of its own (one channel of a notification) returns that result instead."""
        raise GaveUp(
            f"The {busy.service} service is unavailable: it still failed after "
            f"{self.request.retries + 1} tries ({busy})."
        ) from busy

    def end_status(self, job_id: int, exc: BaseException) -> tuple[JobStatus, str]:
        """The terminal status and the user's reason for an exception that ended the work."""
        reason = self.reason(exc)
        if isinstance(exc, JobCancelled | JobAlreadyFinished):
            return JobStatus.CANCELLED, reason
        if isinstance(exc, SoftTimeLimitExceeded | TimeLimitExceeded):
            logger.warning("job.timed_out", extra={"job_id": job_id, "task": self.name})
            return JobStatus.TIMEOUT, reason
        if reason != INTERNAL_ERROR:
            logger.warning(
                "job.failed", extra={"job_id": job_id, "task": self.name, "error": reason}
            )
            return JobStatus.FAILURE, reason
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
        countdown = getattr(self.request, "retry_countdown", None) or 0
        try:
            reporter.retrying(self.reason(exc), countdown=countdown)
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
                    result = self.retry_later(busy, job_id)
        except (Ignore, Retry):
            raise  # handed over to a canvas, or rescheduled (on_retry records it)
        except Reject as unsent:
            # The retry could not be sent (the broker is down): the job waits in RETRY with
            # its lease, and once that lapses the watchdog sends it again from its row.
            reason, countdown = self.retry_asked()
            logger.warning(
                "job.retry_unsent",
                extra={"job_id": job_id, "task": self.name, "error": repr(unsent.reason)},
            )
            try:
                reporter.retrying(reason, countdown=countdown)
            except (JobCancelled, JobAlreadyFinished):
                job_end(job_id=job_id, status=JobStatus.CANCELLED)
            raise Ignore from None
        except BaseException as exc:  # noqa: BLE001  (the kit's one place: a reason)
            status, reason = self.end_status(job_id, exc)
            job_end(job_id=job_id, status=status, error=reason, state=reporter.progress_state)
            raise TaskFailed(reason) from None
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
                    return self.retry_later(busy, job_id)
        except (Ignore, Retry):
            raise
        except Reject as unsent:
            # The retry could not be sent (the broker is down): the job's lease lapses and
            # the watchdog sends its task again, which runs its idempotent parts again.
            logger.warning(
                "job.part_retry_unsent",
                extra={"job_id": job_id, "task": self.name, "error": repr(unsent.reason)},
            )
            raise Ignore from None
        except BaseException as exc:  # noqa: BLE001  (the kit's one place: a reason)
            _status, reason = self.end_status(job_id, exc)
            try:
                sync_client().set(
                    _part_error_key(job_id), reason, nx=True, ex=settings.JOB_SNAPSHOT_TTL
                )
            except redis.RedisError:
                logger.warning("job.part_error_unrecorded", extra={"job_id": job_id})
            raise TaskFailed(reason) from None


class FollowUpTask(_JobWork):
    """A follow-up sent through the outbox (`domains.jobs.outbox.followup_queue`): called
    with `followup_id=` besides its own arguments, it records its run on its row (done, or
    why not; a record that vanished leaves it done with that reason), so that the watchdog sends again one whose message or run was lost, and drops
    a delivery of one already done. Its work is idempotent. A RetryLater goes through the
    kit's one retry policy, unbounded unless the task sets `max_retries`: money owed is
    asked for until the service answers."""

    abstract = True
    max_retries = None
    # `followup_id` is the kit's, not the task function's: a retry's message carries it on.
    typing = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        followup_id = kwargs.pop("followup_id", None)
        close_old_connections()
        if followup_id is not None and not followup_run_start(followup_id=followup_id):
            logger.info("followup.delivery_dropped", extra={"followup_id": followup_id})
            return None
        try:
            try:
                result = self.run(*args, **kwargs)
            except RetryLater as busy:
                result = self.retry_later(busy, 0)
        except Retry:
            reason, countdown = self.retry_asked()
            if followup_id is not None:
                followup_retrying(followup_id=followup_id, reason=reason, countdown=countdown)
            raise
        except Reject as unsent:
            # The broker would not take the retry: the watchdog sends it once it is due.
            reason, countdown = self.retry_asked()
            logger.warning(
                "followup.retry_unsent",
                extra={"followup_id": followup_id, "error": repr(unsent.reason)},
            )
            if followup_id is not None:
                followup_retrying(
                    followup_id=followup_id, reason=reason, countdown=countdown, sent=False
                )
            raise Ignore from None
        except RecordVanished as vanished:
            # Nothing is left to do, now or on a later send: done, saying why.
            logger.warning(
                "followup.record_vanished",
                extra={"followup_id": followup_id, "task": self.name, "error": str(vanished)},
            )
            if followup_id is not None:
                followup_done(followup_id=followup_id, error=str(vanished))
            raise TaskFailed(str(vanished)) from None
        except BaseException as exc:
            reason = self.reason(exc)
            logger.error(
                "followup.failed",
                extra={"followup_id": followup_id, "task": self.name, "error": reason},
                exc_info=(type(exc), exc, exc.__traceback__),
            )
            if followup_id is not None:
                followup_failed(followup_id=followup_id, reason=reason)
            raise TaskFailed(reason) from None
        if followup_id is not None:
            followup_done(followup_id=followup_id)
        return result
