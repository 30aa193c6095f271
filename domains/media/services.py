"""Images: accepting an upload, then making its optimized original and thumbnails.

The upload is checked from its header before anything is kept (its pixels are decoded by
the worker only). The processing job's parts (the
optimized original and each thumbnail) run in parallel and may each run twice: every part
writes its own row or fields, replaces what an earlier run of it stored, then reports the
job's progress under a lock on the image row, so the count of finished thumbnails only
ever goes up. Ending the image and its job are conditional updates: first caller wins.
"""

import logging
from collections.abc import Sequence

from django.conf import settings
from django.core.files.base import ContentFile, File
from django.core.files.storage import default_storage
from django.db import transaction

from domains.accounts.models import User
from domains.errors import CommonErrorCode
from domains.jobs.models import Job, JobKind
from domains.jobs.reporter import JobReporter
from domains.jobs.retry import RetryOptions
from domains.jobs.services import job_create, job_dispatch
from domains.jobs.tasks import JobTaskName
from domains.media.errors import ImageError, ImageErrorCode
from domains.media.models import Image, ImageStatus, Thumbnail
from domains.media.processing import EXTENSIONS, Rendition, image_inspect, image_render

logger = logging.getLogger(__name__)

PROCESSING_STAGE = "thumbnails"
OPTIMIZED_PART = "optimized"


def image_upload(*, viewer: User, upload: File) -> Image:
    """Keep an uploaded image under a generated name and start its processing job."""
    if not upload.size:
        raise ImageError("The file is empty.", code=ImageErrorCode.EMPTY_FILE, field="file")
    if upload.size > settings.IMAGE_UPLOAD_MAX_BYTES:
        raise ImageError(
            f"The file is larger than {settings.IMAGE_UPLOAD_MAX_BYTES:,} bytes.",
            code=ImageErrorCode.FILE_TOO_LARGE,
            field="file",
        )
    source = image_inspect(upload)
    image = Image(
        owner=viewer,
        format=source.format,
        original_bytes=upload.size,
        width=source.width,
        height=source.height,
    )
    upload.seek(0)
    stored = default_storage.save(
        f"{image.storage_dir}/original.{EXTENSIONS[source.format]}", upload
    )
    try:
        with transaction.atomic(durable=True):
            image.job = job_create(
                kind=JobKind.IMAGE_PROCESSING,
                owner=viewer,
                total=len(settings.IMAGE_THUMBNAIL_BOXES),
            )
            image.original = stored
            image.save()
            job_dispatch(
                job=image.job, task_name=JobTaskName.MEDIA_PROCESS_IMAGE, image_id=image.pk
            )
    except BaseException:
        default_storage.delete(stored)  # no row refers to it: keep nothing
        raise
    logger.info("image.uploaded", extra={"image_id": image.pk, "job_id": image.job_id})
    return image


def image_processing_start(*, image: Image, reporter: JobReporter) -> None:
    Image.objects.filter(
        pk=image.pk, status__in=[ImageStatus.PENDING, ImageStatus.PROCESSING]
    ).update(status=ImageStatus.PROCESSING)
    reporter.progress(
        stage=PROCESSING_STAGE, current=0, total=len(settings.IMAGE_THUMBNAIL_BOXES), force=True
    )


def _render(image: Image, box: int | None) -> Rendition:
    with default_storage.open(image.original.name, "rb") as original:
        return image_render(
            original,
            box=box,
            output_format=settings.IMAGE_OUTPUT_FORMAT,
            quality=settings.IMAGE_QUALITY,
        )


def _store(image: Image, part: str, rendition: Rendition) -> str:
    extension = EXTENSIONS[rendition.format]
    return default_storage.save(
        f"{image.storage_dir}/{part}.{extension}", ContentFile(rendition.content)
    )


def _report_part_done(*, image: Image, reporter: JobReporter, part: str) -> None:
    """Report the count of finished thumbnails, once this part's row is committed.

    Parts take turns on the image row's lock to count and emit, and each count includes
    every row committed before it: clients see it only go up, and a client told "k done"
    finds at least k thumbnails in the image.
    """
    with transaction.atomic():
        if not Image.objects.select_for_update().filter(pk=image.pk).exists():
            return  # deleted meanwhile: nothing to report to
        done = Thumbnail.objects.filter(image=image).count()
        reporter.progress(
            stage=PROCESSING_STAGE,
            current=done,
            total=len(settings.IMAGE_THUMBNAIL_BOXES),
            message=f"{part} ready",
            force=True,
        )


def image_optimize(*, image: Image, reporter: JobReporter) -> dict:
    """Store the optimized original: upright, metadata stripped, re-encoded, size-capped."""
    rendition = _render(image, settings.IMAGE_OPTIMIZED_MAX_SIDE or None)
    name = _store(image, OPTIMIZED_PART, rendition)
    stale = Image.objects.filter(pk=image.pk).values_list("optimized", flat=True).first()
    Image.objects.filter(pk=image.pk).update(
        optimized=name,
        optimized_bytes=len(rendition.content),
        optimized_width=rendition.width,
        optimized_height=rendition.height,
    )
    _report_part_done(image=image, reporter=reporter, part=OPTIMIZED_PART)
    if stale and stale != name:
        default_storage.delete(stale)  # left by an earlier run of this part
    return {"part": OPTIMIZED_PART, "width": rendition.width, "height": rendition.height}


def thumbnail_make(*, image: Image, size_name: str, reporter: JobReporter) -> dict:
    """Store one thumbnail; it appears in the image's thumbnails as soon as this returns."""
    box = settings.IMAGE_THUMBNAIL_BOXES[size_name]
    rendition = _render(image, box)
    name = _store(image, size_name, rendition)
    stale = (
        Thumbnail.objects.filter(image=image, size_name=size_name)
        .values_list("file", flat=True)
        .first()
    )
    Thumbnail.objects.update_or_create(
        image=image,
        size_name=size_name,
        defaults={
            "box": box,
            "file": name,
            "width": rendition.width,
            "height": rendition.height,
            "byte_size": len(rendition.content),
        },
    )
    _report_part_done(image=image, reporter=reporter, part=size_name)
    if stale and stale != name:
        default_storage.delete(stale)
    return {"part": size_name, "width": rendition.width, "height": rendition.height}


def image_processing_result(*, image: Image) -> dict:
    """The job's result once every part is in."""
    return {"imageId": image.pk, "thumbnails": Thumbnail.objects.filter(image=image).count()}


def image_job_retry(original: Job, retry: Job, options: RetryOptions) -> None:
    """The same image processed again, from its stored original."""
    if not Image.objects.filter(
        job=original, status__in=[ImageStatus.FAILED, ImageStatus.CANCELLED]
    ).update(status=ImageStatus.PENDING, error_message="", completed_at=None, job=retry):
        raise ImageError(
            "The image is not there to process again.", code=CommonErrorCode.NOT_RETRYABLE
        )
    image_id = Image.objects.values_list("pk", flat=True).get(job=retry)
    job_dispatch(job=retry, task_name=JobTaskName.MEDIA_PROCESS_IMAGE, image_id=image_id)


def image_derivatives_purge(*, job_ids: Sequence[int], dry_run: bool) -> dict[str, int]:
    """Retention (domains/jobs/retention.py): the optimized copy and the thumbnails these
    jobs made (files and rows). The image and its original are the user's upload and stay;
    files go before rows, so a purge cut short leaves no file that no row names."""
    images = Image.objects.filter(job_id__in=job_ids)
    optimized = list(images.exclude(optimized="").values_list("optimized", flat=True))
    thumbnails = Thumbnail.objects.filter(image__in=images)
    names = [*optimized, *thumbnails.values_list("file", flat=True)]
    if not dry_run:
        for name in names:
            default_storage.delete(name)
        thumbnails.delete()
        images.exclude(optimized="").update(
            optimized="", optimized_bytes=None, optimized_width=None, optimized_height=None
        )
    return {"image derivatives": len(names)}
