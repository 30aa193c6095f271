"""Image rows for tests that start past the upload (the upload itself is tested on its own)."""

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from domains.jobs.models import JobKind
from domains.jobs.services import job_create
from domains.media.models import Image, ImageStatus, Thumbnail
from tests.domains.media import images


def make_image(
    *, owner, original: bytes | None = None, status: str = ImageStatus.PROCESSING, thumbnails=()
) -> Image:
    """An image with its original stored (unchecked) and its job; call inside a transaction
    when the job is to be dispatched."""
    original = images.photo() if original is None else original
    image = Image(owner=owner, format="JPEG", original_bytes=len(original), width=1, height=1)
    image.status = status
    image.job = job_create(kind=JobKind.IMAGE_PROCESSING, owner=owner, total=3)
    image.original = default_storage.save(
        f"{image.storage_dir}/original.jpg", ContentFile(original)
    )
    image.save()
    for size_name, box in thumbnails:
        Thumbnail.objects.create(
            image=image,
            size_name=size_name,
            box=box,
            file=f"{image.storage_dir}/{size_name}.jpg",
            width=box,
            height=box,
            byte_size=1,
        )
    return image
