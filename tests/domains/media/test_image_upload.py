"""The upload service and the processing parts, without GraphQL or Celery."""

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from domains.jobs.ending import job_end
from domains.jobs.models import Job, JobKind, JobStatus
from domains.jobs.reporter import JobReporter
from domains.media.errors import ImageError
from domains.media.models import Image, ImageStatus, Thumbnail
from domains.media.services import image_upload, thumbnail_make
from testbed.factories import make_user
from tests.domains.media import images
from tests.domains.media.conftest import stored_image_files
from tests.domains.media.factories import make_image

pytestmark = pytest.mark.django_db


def _file(content: bytes, name: str = "photo.jpg") -> ContentFile:
    return ContentFile(content, name=name)


def test_an_upload_is_kept_under_a_generated_name_with_its_job(
    django_capture_on_commit_callbacks,
):
    owner = make_user()

    with django_capture_on_commit_callbacks() as dispatched:
        image = image_upload(
            viewer=owner, upload=_file(images.photo((900, 600), orientation=6), "../../me.jpg")
        )

    assert (image.format, image.width, image.height) == ("JPEG", 900, 600)
    assert image.status == ImageStatus.PENDING
    assert image.original.name == f"images/{image.key.hex}/original.jpg"
    assert default_storage.exists(image.original.name)
    assert (image.job.kind, image.job.status, image.job.total) == (
        JobKind.IMAGE_PROCESSING,
        JobStatus.PENDING,
        3,
    )
    assert len(dispatched) == 1


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b"", "EMPTY_FILE"),
        (images.photo(gps=False) + b"\0" * 200_000, "FILE_TOO_LARGE"),
        (images.decompression_bomb(), "TOO_MANY_PIXELS"),
        (images.TEXT_NAMED_JPG, "UNSUPPORTED_FORMAT"),
    ],
    ids=["empty", "too-large", "bomb", "text"],
)
def test_a_refused_upload_keeps_nothing(settings, media_root, content, code):
    settings.IMAGE_UPLOAD_MAX_BYTES = 200_000
    files_before = stored_image_files(media_root)

    with pytest.raises(ImageError) as refused:
        image_upload(viewer=make_user(), upload=_file(content))

    assert refused.value.code == code
    assert Image.objects.count() == Job.objects.count() == 0
    assert stored_image_files(media_root) == files_before


def test_a_part_run_twice_keeps_one_thumbnail_and_one_file(media_root):
    image = make_image(owner=make_user())
    reporter = JobReporter(image.job)

    thumbnail_make(image=image, size_name="small", reporter=reporter)
    thumbnail_make(image=image, size_name="small", reporter=reporter)

    thumbnail = Thumbnail.objects.get()
    assert (thumbnail.width, thumbnail.height) == (150, 100)
    assert default_storage.exists(thumbnail.file.name)
    mine = [p for p in stored_image_files(media_root) if image.storage_dir in str(p)]
    assert len([p for p in mine if "small" in p.name]) == 1
    image.job.refresh_from_db()
    assert (image.job.current, image.job.total, image.job.status) == (1, 3, JobStatus.PROGRESS)


def test_a_failed_image_ends_once_with_its_jobs_reason():
    image = make_image(owner=make_user())

    assert job_end(
        job_id=image.job_id, status=JobStatus.FAILURE, error="The small thumbnail failed: bad."
    )
    assert not job_end(job_id=image.job_id, status=JobStatus.FAILURE, error="generic")

    image.refresh_from_db()
    image.job.refresh_from_db()
    assert image.status == ImageStatus.FAILED
    assert image.error_message == image.job.error == "The small thumbnail failed: bad."
    assert image.job.status == JobStatus.FAILURE
