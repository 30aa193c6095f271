"""Ending a job whose work ran as a chord: its callback succeeds it, its errback fails it.

The task that launches a chord hands the job over (it raises Ignore, so the task base does
not end the job); from then on the chord's body or error callback ends it, once.
"""

import logging
from typing import Any

from celery import Signature
from celery.exceptions import Ignore

from domains.jobs.models import Job
from domains.jobs.progress import JobReporter

logger = logging.getLogger(__name__)


def job_succeed(job_id: int, result: Any, *, done: int | None = None) -> None:
    """End the job; `done` sets its final count of units, which the parts, reporting from
    several processes, may have left out of order."""
    reporter = JobReporter(Job.objects.get(pk=job_id))
    if done is not None:
        reporter.state.update(current=done, total=done)
    if reporter.succeeded(result):
        logger.info("job.succeeded", extra={"job_id": job_id})


def job_fail(job_id: int, exc: BaseException | None) -> None:
    """End a job after a part of it failed (or stopped because it was cancelled)."""
    job = Job.objects.get(pk=job_id)
    if job.cancel_requested:
        JobReporter(job).cancelled()
        return
    JobReporter(job).failed("A part of the job failed; it has been logged.")
    logger.error("job.part_failed", extra={"job_id": job_id, "error": repr(exc)})


def hand_over(canvas: Signature) -> None:
    """Launch the canvas that will end the job, and stop here without ending it."""
    canvas.apply_async()
    raise Ignore
