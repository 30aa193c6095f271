"""Celery tasks for images: one job, its parts run in parallel as a chord.

`media.process_image` claims the job and starts a chord (workers.chords): the optimized
original and one task per thumbnail size, joined by `media.finish_image`, which ends the
job; a part that fails ends it through the chord's error callback, with the part's reason.
"""

import logging

from billiard.exceptions import SoftTimeLimitExceeded
from celery import shared_task
from django.conf import settings

from domains.errors import DomainError
from domains.jobs.tasks import JobTaskName
from domains.media.errors import ImageError
from domains.media.models import Image
from domains.media.services import (
    image_optimize,
    image_processing_result,
    image_processing_start,
    thumbnail_make,
)
from workers.base import JobPartTask, JobTask, record_load
from workers.chords import job_finish, start_chord

logger = logging.getLogger(__name__)

_PART_LIMITS = {
    "soft_time_limit": settings.IMAGE_SOFT_TIME_LIMIT,
    "time_limit": settings.TASK_TIME_LIMITS["images"],
}


def _image(image_id: int) -> Image:
    return record_load(Image, image_id, "image")


class ImagePart(JobPartTask):
    """A part of an image's processing; its failure names the part in the job's reason."""

    abstract = True

    def part_name(self, kwargs) -> str:
        size_name = kwargs.get("size_name")
        return f"The {size_name} thumbnail" if size_name else "The optimized original"

    def end_status(self, job_id, exc):
        status, reason = super().end_status(job_id, exc)
        if isinstance(exc, ImageError | SoftTimeLimitExceeded):
            what = exc.message if isinstance(exc, DomainError) else "it ran past its time limit"
            reason = f"{self.part_name(self.request.kwargs)} failed: {what}"
        return status, reason


@shared_task(bind=True, base=JobTask, name=JobTaskName.MEDIA_PROCESS_IMAGE)
def process_image(self: JobTask, *, job_id: int, image_id: int) -> None:
    image = _image(image_id)
    image_processing_start(image=image, reporter=self.reporter)
    ids = {"job_id": job_id, "image_id": image_id}
    start_chord(
        job_id=job_id,
        parts=[optimize_image.s(**ids)]
        + [make_thumbnail.s(**ids, size_name=name) for name in settings.IMAGE_THUMBNAIL_BOXES],
        body=finish_image.s(**ids),
    )


@shared_task(bind=True, base=ImagePart, name="media.optimize_image", **_PART_LIMITS)
def optimize_image(self: ImagePart, *, job_id: int, image_id: int) -> dict:
    return image_optimize(image=_image(image_id), reporter=self.reporter)


@shared_task(bind=True, base=ImagePart, name="media.make_thumbnail", **_PART_LIMITS)
def make_thumbnail(self: ImagePart, *, job_id: int, image_id: int, size_name: str) -> dict:
    return thumbnail_make(image=_image(image_id), size_name=size_name, reporter=self.reporter)


@shared_task(bind=True, base=JobPartTask, name="media.finish_image")
def finish_image(self: JobPartTask, parts: list, *, job_id: int, image_id: int) -> None:
    job_finish(job_id, image_processing_result(image=_image(image_id)))
