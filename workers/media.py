"""Celery tasks for images: one job, its parts run in parallel as a chord.

`media.process_image` claims the job (JobTask) and starts a chord: a group of the
optimized original and one task per thumbnail size, joined by `media.finish_image`, with
`media.image_failed` linked as the error callback, and hands the job over to it
(workers.chords). No task waits on another; the chord's callback ends the job, or its
error callback does.
"""

import logging
from typing import Any

from billiard.exceptions import SoftTimeLimitExceeded
from celery import Task, chord, shared_task
from celery.exceptions import Ignore
from django.conf import settings

from domains.errors import DomainError
from domains.jobs.models import Job
from domains.jobs.progress import (
    JobAlreadyFinished,
    JobCancelled,
    JobReporter,
    job_part_redelivered,
)
from domains.media.models import Image
from domains.media.processing import ImageError
from domains.media.services import (
    image_optimize,
    image_part_failed,
    image_processing_fail,
    image_processing_finish,
    image_processing_start,
    thumbnail_make,
)
from workers.base import JobTask
from workers.chords import hand_over

logger = logging.getLogger(__name__)

_PART_LIMITS = {
    "soft_time_limit": settings.IMAGE_SOFT_TIME_LIMIT,
    "time_limit": settings.IMAGE_SOFT_TIME_LIMIT + 30,
}


class JobPartTask(Task):
    """A part of a job that another task claimed: it reports into that job without
    claiming it again (no attempt counted, no STARTED), and its own success does not end
    the job; only the join does, through the domain. A part delivered after its job ended
    (cancelled, failed) is dropped. A part redelivered more than JOB_MAX_ATTEMPTS times
    (it kills its worker: say, an image that exhausts memory) fails, so that the chord's
    error callback ends the job rather than the part looping for ever.
    """

    abstract = True
    acks_late = True
    reject_on_worker_lost = True
    # Expected ends of a part: recorded as its failure, logged without a traceback.
    throws = (DomainError, JobCancelled, JobAlreadyFinished)

    @property
    def reporter(self) -> JobReporter:
        return self.request.job_reporter

    def before_start(self, task_id: str, args: tuple, kwargs: dict[str, Any]) -> None:
        job = Job.objects.filter(pk=kwargs["job_id"]).first()
        if job is None or job.is_terminal:
            logger.info("job.part_dropped", extra={"job_id": kwargs["job_id"], "task": self.name})
            raise Ignore
        self.request.job_reporter = JobReporter(job)
        if (self.request.delivery_info or {}).get("redelivered"):
            deliveries = job_part_redelivered(job_id=job.pk, part_id=task_id)
            if deliveries > settings.JOB_MAX_ATTEMPTS:
                logger.error("job.part_gave_up", extra={"job_id": job.pk, "task": self.name})
                gave_up = DomainError(f"Gave up after {deliveries - 1} attempts.", code="GAVE_UP")
                self.gave_up(kwargs, gave_up)
                raise gave_up

    def gave_up(self, kwargs: dict[str, Any], error: DomainError) -> None:
        """Record why the part stopped, for the chord's error callback to report."""
        image = _image(kwargs["image_id"], kwargs["job_id"])
        if image is not None:
            image_part_failed(image=image, reason=f"{error.message} Its worker was lost each time.")


def _image(image_id: int, job_id: int) -> Image | None:
    image = Image.objects.filter(pk=image_id).first()
    if image is None:
        logger.warning("image.vanished", extra={"image_id": image_id, "job_id": job_id})
    return image


@shared_task(bind=True, base=JobTask, name="media.process_image", ignore_result=True)
def process_image(self: JobTask, *, job_id: int, image_id: int) -> None:
    image = _image(image_id, job_id)
    if image is None:
        self.reporter.failed("The image no longer exists.")
        return
    image_processing_start(image=image, reporter=self.reporter)
    ids = {"job_id": job_id, "image_id": image_id}
    parts = [optimize_image.s(**ids)] + [
        make_thumbnail.s(**ids, size_name=size_name) for size_name in settings.IMAGE_THUMBNAIL_BOXES
    ]
    hand_over(chord(parts, finish_image.s(**ids).on_error(image_failed.s(**ids))))


@shared_task(bind=True, base=JobPartTask, name="media.optimize_image", **_PART_LIMITS)
def optimize_image(self: JobPartTask, *, job_id: int, image_id: int) -> dict | None:
    image = _image(image_id, job_id)
    if image is None:
        return None
    try:
        return image_optimize(image=image, reporter=self.reporter)
    except ImageError as error:
        image_part_failed(image=image, reason=f"The optimized original failed: {error.message}")
        raise
    except SoftTimeLimitExceeded:
        image_part_failed(image=image, reason="The optimized original ran past its time limit.")
        raise


@shared_task(bind=True, base=JobPartTask, name="media.make_thumbnail", **_PART_LIMITS)
def make_thumbnail(self: JobPartTask, *, job_id: int, image_id: int, size_name: str) -> dict | None:
    image = _image(image_id, job_id)
    if image is None:
        return None
    try:
        return thumbnail_make(image=image, size_name=size_name, reporter=self.reporter)
    except ImageError as error:
        image_part_failed(image=image, reason=f"The {size_name} thumbnail failed: {error.message}")
        raise
    except SoftTimeLimitExceeded:
        image_part_failed(image=image, reason=f"The {size_name} thumbnail ran past its time limit.")
        raise


@shared_task(bind=True, base=JobPartTask, name="media.finish_image", ignore_result=True)
def finish_image(self: JobPartTask, parts: list, *, job_id: int, image_id: int) -> None:
    image = _image(image_id, job_id)
    if image is not None:
        image_processing_finish(image=image, reporter=self.reporter)


@shared_task(name="media.image_failed")
def image_failed(request, exc: BaseException, traceback, *, job_id: int, image_id: int) -> None:
    """The chord's error callback: a part or the join failed, so the image and job end."""
    image, job = _image(image_id, job_id), Job.objects.filter(pk=job_id).first()
    logger.warning(
        "image.processing_failed",
        extra={"image_id": image_id, "job_id": job_id, "error": repr(exc)},
    )
    if image is not None and job is not None:
        image_processing_fail(
            image=image, job=job, reason="The image could not be processed: internal error."
        )
