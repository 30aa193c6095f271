from django.db.models import QuerySet

from domains.accounts.models import User
from domains.media.models import Image


def image_list(*, viewer: User, own_only: bool = False) -> QuerySet[Image]:
    """The images the viewer may see and fetch: their own; staff all, unless `own_only`."""
    if not viewer.is_authenticated:
        return Image.objects.none()
    if viewer.is_staff and not own_only:
        return Image.objects.all()
    return Image.objects.filter(owner=viewer)


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
