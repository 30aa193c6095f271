import uuid

from django.conf import settings
from django.db import models

from domains.jobs.models import JobBacked, JobKind, job_ends


class ImageStatus(models.TextChoices):
    PENDING = "pending"
    PROCESSING = "processing"
    READY = "ready"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Image(JobBacked):
    """An uploaded picture; its files live in Django storage under `images/<key>/`."""

    job_kind = JobKind.IMAGE_PROCESSING
    job_end_statuses = job_ends(
        completed=ImageStatus.READY, failed=ImageStatus.FAILED, cancelled=ImageStatus.CANCELLED
    )
    job_open_statuses = (ImageStatus.PENDING, ImageStatus.PROCESSING)

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="images"
    )
    # Names every stored file, so that nothing the client sent ends up in a path.
    key = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    status = models.CharField(
        max_length=16, choices=ImageStatus.choices, default=ImageStatus.PENDING
    )
    format = models.CharField(max_length=8)  # as read from the content: JPEG, PNG, WEBP, GIF
    original = models.FileField(max_length=255)
    original_bytes = models.PositiveBigIntegerField()
    # Upright dimensions: EXIF orientation already applied.
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    optimized = models.FileField(blank=True, max_length=255)
    optimized_bytes = models.PositiveBigIntegerField(null=True, blank=True)
    optimized_width = models.PositiveIntegerField(null=True, blank=True)
    optimized_height = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at", "-id")
        indexes = [models.Index(fields=("owner", "-created_at"))]

    def __str__(self) -> str:
        return f"image #{self.pk} {self.status}"

    @property
    def storage_dir(self) -> str:
        return f"images/{self.key.hex}"


class Thumbnail(models.Model):
    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="thumbnails")
    size_name = models.CharField(max_length=16)
    box = models.PositiveIntegerField()  # the square the thumbnail fits in, in pixels
    file = models.FileField(max_length=255)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    byte_size = models.PositiveBigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("image", "box")
        constraints = [
            models.UniqueConstraint(fields=("image", "size_name"), name="one_thumbnail_per_size")
        ]

    def __str__(self) -> str:
        return f"{self.size_name} thumbnail of image #{self.image_id}"
