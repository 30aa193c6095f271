"""Jobs whose work runs as a canvas (a chord, or a chain of steps): the one way to start
one, the one error callback, and the one way its last part ends the job.

The task that owns the job starts the canvas and hands the job over (it raises Ignore,
so the task base does not end it); from then on the canvas's last part ends it
(`job_finish`), or its error callback does (`jobs.parts_failed`): CANCELLED when the job
was asked to stop, else FAILURE with the reason the failed part left.
"""

import logging
from typing import Any, NoReturn

from celery import Signature, chain, chord, shared_task
from celery.exceptions import Ignore

from domains.jobs.ending import job_end
from domains.jobs.models import Job, JobStatus
from workers.base import job_part_error

logger = logging.getLogger(__name__)

PARTS_FAILED = "jobs.parts_failed"


def job_finish(job_id: int, result: Any, *, done: int | None = None) -> bool:
    """End the job SUCCESS from its canvas's last part; `done` sets its final count of
    units, which the parts, reporting from several processes, may have left out of order."""
    state = {"current": done, "total": done} if done is not None else None
    return job_end(job_id=job_id, status=JobStatus.SUCCESS, result=result, state=state)


def start_chord(*, job_id: int, parts: list[Signature], body: Signature) -> NoReturn:
    """Run `parts` in parallel, then `body` with their results; hand the job over."""
    chord(parts, body.on_error(parts_failed.s(job_id=job_id))).apply_async()
    raise Ignore


def start_chain(*, job_id: int, steps: list[Signature]) -> NoReturn:
    """Run `steps` one after another; hand the job over."""
    chain(*steps).on_error(parts_failed.s(job_id=job_id)).apply_async()
    raise Ignore


@shared_task(name=PARTS_FAILED, acks_late=True, reject_on_worker_lost=True)
def parts_failed(request, exc, traceback, *, job_id: int) -> None:
    """The error callback of every canvas: a part failed, so the job ends, once."""
    job = Job.objects.filter(pk=job_id).first()
    if job is None:
        return
    if job.cancel_requested_at is not None:
        job_end(job_id=job_id, status=JobStatus.CANCELLED)
        return
    reason = job_part_error(job_id) or "A part of the job failed; it has been logged."
    logger.warning("job.part_failed", extra={"job_id": job_id, "error": repr(exc)})
    job_end(job_id=job_id, status=JobStatus.FAILURE, error=reason)
