"""GraphQL for images: upload, then the image with its files as they are made."""

from datetime import datetime
from typing import Annotated

import strawberry
import strawberry_django
from django.urls import reverse
from strawberry import relay
from strawberry.file_uploads import Upload
from strawberry.types import Info
from strawberry_django.permissions import IsAuthenticated
from strawberry_django.relay import DjangoListConnection

from domains.media import models
from domains.media.selectors import image_list
from domains.media.services import image_upload
from schema.base import http_request, viewer
from schema.errors import ImageError, domain_errors
from schema.extensions import RequiresRedis
from schema.idempotency import IdempotentStart

JobType = Annotated["JobType", strawberry.lazy("schema.jobs")]


def _file_url(info: Info, image_id: int, variant: str) -> str:
    """The file's URL; the view behind it serves the owner and staff only."""
    return http_request(info, "A file URL").build_absolute_uri(
        reverse("image-download", args=[image_id, variant])
    )


@strawberry_django.type(models.Thumbnail, name="Thumbnail")
class ThumbnailType:
    size_name: str
    width: int
    height: int
    byte_size: int

    @strawberry_django.field(only=["image_id", "size_name"])
    def url(self, root: models.Thumbnail, info: Info) -> str:
        return _file_url(info, root.image_id, root.size_name)


@strawberry_django.type(models.Image, name="Image")
class ImageType(relay.Node):
    format: str = strawberry_django.field(description="As read from the file's content.")
    width: int | None = strawberry_django.field(description="Upright: EXIF orientation applied.")
    height: int | None
    original_bytes: int
    optimized_bytes: int | None
    optimized_width: int | None
    optimized_height: int | None
    thumbnails: list[ThumbnailType] = strawberry_django.field(
        description="Smallest first; each appears as soon as it is made."
    )
    created_at: datetime
    completed_at: datetime | None
    job: JobType | None = strawberry_django.field(select_related=["job"])

    @strawberry_django.field(
        only=["status"], description="pending, processing, ready, failed or cancelled."
    )
    def status(self, root: models.Image) -> str:
        return root.status

    @strawberry_django.field(only=["error_message"])
    def error_message(self, root: models.Image) -> str | None:
        return root.error_message or None

    @strawberry_django.field(only=["pk"], description="Served to the owner or staff only.")
    def original_url(self, root: models.Image, info: Info) -> str:
        return _file_url(info, root.pk, "original")

    @strawberry_django.field(only=["optimized"])
    def optimized_url(self, root: models.Image, info: Info) -> str | None:
        return _file_url(info, root.pk, "optimized") if root.optimized else None

    @classmethod
    def get_queryset(cls, queryset, info: Info, **kwargs):
        return queryset.filter(pk__in=image_list(viewer=viewer(info)).values("pk"))


@strawberry_django.filter_type(models.Image, lookups=True)
class ImageFilter:
    status: str | None
    format: str | None


@strawberry.type
class ImageUploadPayload:
    image: ImageType | None = None
    job: JobType | None = None
    errors: list[ImageError] = strawberry.field(default_factory=list)


@strawberry.type
class Query:
    image: ImageType | None = strawberry_django.node(
        extensions=[IsAuthenticated(fail_silently=True)]
    )

    @strawberry_django.connection(
        DjangoListConnection[ImageType],
        filters=ImageFilter,
        extensions=[IsAuthenticated()],
        description="The viewer's own images, newest first.",
    )
    def images(self, info: Info) -> list[models.Image]:
        return image_list(viewer=viewer(info), own_only=True)


@strawberry.type
class Mutation:
    @strawberry.mutation(
        extensions=[IsAuthenticated(), RequiresRedis(), IdempotentStart()],
        description="Upload a JPEG, PNG, WebP or GIF (first frame) over the GraphQL "
        "multipart request spec; returns at once with the job making its thumbnails.",
    )
    @domain_errors
    def image_upload(self, info: Info, file: Upload) -> ImageUploadPayload:
        image = image_upload(viewer=viewer(info), upload=file)
        return ImageUploadPayload(image=image, job=image.job)
