"""The job-task base: ties a Celery task to its Job row and reporter.

Status comes from Celery's own hooks: before_start claims the delivery (STARTED, one more
attempt), on_success / on_retry / on_failure record the outcome. A redelivered task whose
job already ended is acknowledged and dropped, so a job's effects happen once.
"""

import logging
from typing import Any

from billiard.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from celery import Task
from celery.exceptions import Ignore
from django.conf import settings

from domains.errors import DomainError
from domains.jobs.progress import JobAlreadyFinished, JobCancelled, JobReporter, job_attempt_start

logger = logging.getLogger(__name__)


class JobTask(Task):
    """Base for a task that owns a Job's lifecycle; it is called with `job_id=`."""

    abstract = True
    acks_late = True
    reject_on_worker_lost = True
    # Errors whose message is for the user; anything else is logged and masked.
    public_errors: tuple[type[BaseException], ...] = (DomainError,)

    @property
    def reporter(self) -> JobReporter:
        return self.request.job_reporter

    def before_start(self, task_id: str, args: tuple, kwargs: dict[str, Any]) -> None:
        job_id = kwargs["job_id"]
        claimed = job_attempt_start(job_id=job_id)
        if claimed is None:
            logger.info("job.delivery_dropped", extra={"job_id": job_id, "task": self.name})
            raise Ignore
        job, reporter = claimed
        self.request.job_reporter = reporter
        if job.cancel_requested:
            reporter.cancelled()
            raise Ignore
        if job.attempts > settings.JOB_MAX_ATTEMPTS:
            # Redelivered after killing its worker too often: stop the loop here.
            logger.error("job.gave_up", extra={"job_id": job_id, "attempts": job.attempts})
            reporter.failed(f"Gave up after {job.attempts - 1} attempts.")
            raise Ignore
        try:
            reporter.started()
        except (JobCancelled, JobAlreadyFinished):
            reporter.cancelled()
            raise Ignore from None
        logger.info(
            "job.started", extra={"job_id": job_id, "task": self.name, "attempt": job.attempts}
        )

    def on_success(self, retval: Any, task_id: str, args: tuple, kwargs: dict[str, Any]) -> None:
        if self.reporter.succeeded(retval):
            logger.info("job.succeeded", extra={"job_id": kwargs["job_id"], "task": self.name})

    def on_retry(
        self, exc: BaseException, task_id: str, args: tuple, kwargs: dict[str, Any], einfo
    ) -> None:
        logger.warning(
            "job.retrying",
            extra={"job_id": kwargs["job_id"], "task": self.name, "error": repr(exc)},
        )
        self.reporter.retrying(self.public_message(exc))

    def on_failure(
        self, exc: BaseException, task_id: str, args: tuple, kwargs: dict[str, Any], einfo
    ) -> None:
        reporter: JobReporter | None = getattr(self.request, "job_reporter", None)
        job_id = kwargs.get("job_id")
        if reporter is None:
            return
        if isinstance(exc, JobCancelled | JobAlreadyFinished):
            reporter.cancelled()
            logger.info("job.cancelled", extra={"job_id": job_id, "task": self.name})
        elif isinstance(exc, SoftTimeLimitExceeded | TimeLimitExceeded):
            reporter.timed_out("The job ran past its time limit.")
            logger.warning("job.timed_out", extra={"job_id": job_id, "task": self.name})
        else:
            reporter.failed(self.public_message(exc))
            logger.error(
                "job.failed",
                extra={"job_id": job_id, "task": self.name},
                exc_info=(type(exc), exc, exc.__traceback__),
            )

    def public_message(self, exc: BaseException) -> str:
        if isinstance(exc, self.public_errors):
            return str(exc)
        return "The job failed because of an internal error; it has been logged."
