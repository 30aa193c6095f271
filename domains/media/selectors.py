from django.db.models import QuerySet

from domains.accounts.models import User
from domains.jobs.models import JobStatus
from domains.media.models import Image, ImageStatus

# A job that ended before its image did (cancelled while queued, timed out, given up after
# lost workers) leaves the image's own row unfinished; its status is the job's end.
_ENDED_BY_JOB = {
    JobStatus.CANCELLED: ImageStatus.CANCELLED,
    JobStatus.FAILURE: ImageStatus.FAILED,
    JobStatus.TIMEOUT: ImageStatus.FAILED,
}


def image_list(*, viewer: User, own_only: bool = False) -> QuerySet[Image]:
    """The images the viewer may see and fetch: their own; staff all, unless `own_only`."""
    if not viewer.is_authenticated:
        return Image.objects.none()
    if viewer.is_staff and not own_only:
        return Image.objects.all()
    return Image.objects.filter(owner=viewer)


def image_status(image: Image) -> str:
    """The image's status, its job's end counting when the image never got to record one."""
    if image.status in (ImageStatus.PENDING, ImageStatus.PROCESSING) and image.job:
        return _ENDED_BY_JOB.get(image.job.status, image.status)
    return image.status


def image_file_name(*, viewer: User, image_id: int, variant: str) -> tuple[str, str] | None:
    """The stored name and format of one of an image's files, if the viewer may fetch it.

    `variant` is "original", "optimized" or a thumbnail's size name.
    """
    image = image_list(viewer=viewer).filter(pk=image_id).first()
    if image is None:
        return None
    if variant == "original":
        return image.original.name, image.format
    if variant == "optimized":
        return (
            (image.optimized.name, _output_format(image.optimized.name))
            if image.optimized
            else None
        )
    thumbnail = image.thumbnails.filter(size_name=variant).first()
    return (thumbnail.file.name, _output_format(thumbnail.file.name)) if thumbnail else None


def _output_format(name: str) -> str:
    return "WEBP" if name.endswith(".webp") else "JPEG"
