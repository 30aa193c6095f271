"""Images end to end: a real multipart upload to a real server, processed by a real worker."""

import asyncio
import io
import socket

import httpx
import pytest
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.test import Client
from PIL import Image as PILImage

from domains.jobs.models import Job, JobKind
from domains.jobs.services import job_create, job_dispatch
from domains.media.models import Image, ImageStatus
from schema.base import global_id
from testbed.graphql import JOB_PROGRESS, Subscription
from testbed.waiting import job_finished
from tests.domains.media import images
from tests.domains.media.conftest import (
    IMAGE,
    stored_image_files,
    upload,
    uploaded,
)

pytestmark = pytest.mark.e2e

BOXES = settings.IMAGE_THUMBNAIL_BOXES
CANCEL = "mutation($id: ID!) { jobCancel(id: $id) { job { status } errors { code } } }"


def _fetch(url: str, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(url, headers=headers, timeout=30)


def _events(live, job_id: str, token: str) -> list[dict]:
    async def replay():
        async with Subscription(
            live.server.ws_url, JOB_PROGRESS, {"id": job_id, "afterSeq": 0}, token=token
        ) as sub:
            return [r["jobProgress"] for r in await sub.collect()]

    return asyncio.run(replay())


def test_an_upload_becomes_three_upright_thumbnails_without_gps(live, user, media_root):
    client = live.client(user)
    original = images.photo((1600, 1000), orientation=6)
    assert images.has_gps(original)

    started = uploaded(
        upload(live.server.graphql_url, original, token=client.token, filename="berlin-home.jpg")
    )

    assert started["errors"] == []
    assert started["job"]["kind"] == "IMAGE_PROCESSING"
    assert (started["image"]["format"], started["image"]["width"]) == ("JPEG", 1600)
    events = _events(live, started["job"]["id"], client.token)
    assert events[-1]["status"] == "SUCCESS", events[-1]
    counts = [e["current"] for e in events if e["status"] == "PROGRESS"]
    assert counts[0] == 0
    assert counts[-1] == 3
    assert counts == sorted(counts), "the finished-thumbnail count only goes up"
    assert {e["total"] for e in events if e["status"] == "PROGRESS"} == {3}
    image = client.data(IMAGE, {"id": started["image"]["id"]})["image"]
    assert image["status"] == ImageStatus.READY
    assert image["job"]["status"] == "SUCCESS"
    assert [t["sizeName"] for t in image["thumbnails"]] == ["small", "medium", "large"]
    for thumbnail in image["thumbnails"]:
        box = BOXES[thumbnail["sizeName"]]
        assert max(thumbnail["width"], thumbnail["height"]) == box
        assert abs(thumbnail["width"] / thumbnail["height"] - 1.6) < 0.02
    outputs = [image["optimizedUrl"]] + [t["url"] for t in image["thumbnails"]]
    for url in outputs:
        served = _fetch(url, client.token)
        assert served.status_code == 200
        assert served.headers["content-type"] == "image/jpeg"
        assert not images.has_gps(served.content)
        assert not images.has_exif(served.content)
        with PILImage.open(io.BytesIO(served.content)) as made:
            assert made.width > made.height, "upright: landscape as the viewer saw it"
        assert images.is_near(images.colour_at(served.content, (0.5, 0.1)), images.TOP)
        assert images.is_near(images.colour_at(served.content, (0.5, 0.9)), images.BOTTOM)
    assert _fetch(image["originalUrl"], client.token).content == original
    stored_original = Image.objects.get().original.name
    assert "berlin" not in stored_original
    assert stored_original.endswith("/original.jpg")


def test_a_thumbnail_counted_in_progress_is_already_in_the_image_query(live, user):
    client = live.client(user)
    started = uploaded(
        upload(live.server.graphql_url, images.photo((4000, 3000)), token=client.token)
    )
    variables = {"id": started["image"]["id"]}

    async def watch() -> list[tuple[int, int]]:
        counted = []
        async with Subscription(
            live.server.ws_url, JOB_PROGRESS, {"id": started["job"]["id"]}, token=client.token
        ) as sub:
            while (data := await sub.next()) is not None:
                event = data["jobProgress"]
                if event["status"] in ("PROGRESS", "SUCCESS"):
                    seen = await asyncio.to_thread(client.data, IMAGE, variables)
                    counted.append((event["current"], len(seen["image"]["thumbnails"])))
        return counted

    counted = asyncio.run(watch())

    assert counted
    assert all(listed >= current for current, listed in counted), counted
    assert counted[-1] == (3, 3)


@pytest.mark.parametrize(
    ("content", "filename", "content_type", "code"),
    [
        (images.decompression_bomb(), "tiny.png", "image/png", "TOO_MANY_PIXELS"),
        (images.TEXT_NAMED_JPG, "holiday.jpg", "image/jpeg", "UNSUPPORTED_FORMAT"),
        (images.bmp(), "old.bmp", "image/bmp", "UNSUPPORTED_FORMAT"),
        (
            b"\xff\xd8\xff" + b"\0" * settings.IMAGE_UPLOAD_MAX_BYTES,
            "big.jpg",
            "image/jpeg",
            "FILE_TOO_LARGE",
        ),
    ],
    ids=[
        "decompression-bomb",
        "text-named-jpg",
        "unsupported-bmp",
        "over-size-limit",
    ],
)
def test_a_hostile_upload_is_refused_with_a_user_error_and_nothing_kept(
    live, user, media_root, content, filename, content_type, code
):
    client = live.client(user)
    files_before = stored_image_files(media_root)

    refused = uploaded(
        upload(
            live.server.graphql_url,
            content,
            token=client.token,
            filename=filename,
            content_type=content_type,
        )
    )

    assert refused["image"] is None
    assert refused["job"] is None
    assert [(e["field"], e["code"]) for e in refused["errors"]] == [("file", code)]
    assert refused["errors"][0]["message"]
    assert Image.objects.count() == Job.objects.count() == 0
    assert stored_image_files(media_root) == files_before
    assert live.server.alive()
    assert live.worker.alive()


def test_a_body_over_the_limit_is_refused_before_it_is_read(live, user):
    limit = settings.GRAPHQL_MAX_BODY_BYTES
    with socket.create_connection(("127.0.0.1", live.server.port), timeout=10) as conn:
        conn.sendall(
            b"POST /graphql/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: multipart/form-data; boundary=x\r\n"
            + f"Content-Length: {limit + 1}\r\n\r\n".encode()
            + b"--x\r\n"  # a few bytes of the declared body, then nothing more
        )
        answer = conn.recv(65536)

    assert answer.startswith(b"HTTP/1.1 413")
    assert live.server.alive()


def test_a_chunked_body_is_cut_off_at_the_limit(live, user):
    chunk = b"\0" * (1024 * 1024)
    sent = 0

    def body():
        nonlocal sent
        while sent < settings.GRAPHQL_MAX_BODY_BYTES * 3:
            sent += len(chunk)
            yield chunk

    try:
        response = httpx.post(
            live.server.graphql_url,
            content=body(),
            headers={"Content-Type": "multipart/form-data; boundary=x"},
            timeout=30,
        )
        assert response.status_code == 413
    except httpx.HTTPError:
        pass  # the server closed the connection mid-upload, as it should
    assert sent < settings.GRAPHQL_MAX_BODY_BYTES * 3
    assert live.server.alive()


def test_another_user_cannot_see_the_image_or_fetch_its_files(live, user, other_user):
    owner = live.client(user)
    started = uploaded(upload(live.server.graphql_url, images.photo(), token=owner.token))
    assert job_finished(Job.objects.get().pk).status == "SUCCESS"
    image = owner.data(IMAGE, {"id": started["image"]["id"]})["image"]
    urls = [image["originalUrl"], image["optimizedUrl"]] + [t["url"] for t in image["thumbnails"]]
    stranger = live.client(other_user)

    assert stranger.data(IMAGE, {"id": image["id"]})["image"] is None
    assert stranger.data("{ images { totalCount } }")["images"]["totalCount"] == 0
    assert owner.data("{ images { totalCount } }")["images"]["totalCount"] == 1
    for url in urls:
        assert _fetch(url, owner.token).status_code == 200
        assert _fetch(url, stranger.token).status_code == 404
        assert _fetch(url).status_code == 404


def test_staff_may_fetch_any_image_file(live, user, staff_user):
    owner = live.client(user)
    started = uploaded(upload(live.server.graphql_url, images.photo(), token=owner.token))
    job_finished(Job.objects.get().pk)

    image = live.client(staff_user).data(IMAGE, {"id": started["image"]["id"]})["image"]

    assert _fetch(image["thumbnails"][0]["url"], live.client(staff_user).token).status_code == 200


def _browser_session(user) -> dict[str, str]:
    browser = Client()
    browser.force_login(user)
    browser.get("/graphql/", HTTP_ACCEPT="text/html")
    return {name: morsel.value for name, morsel in browser.cookies.items()}


def test_a_cookie_session_upload_without_a_csrf_token_is_refused(live, user, media_root):
    cookies = _browser_session(user)
    files_before = stored_image_files(media_root)

    response = upload(live.server.graphql_url, images.photo(), cookies=cookies)

    assert response.status_code == 403
    assert Image.objects.count() == 0
    assert stored_image_files(media_root) == files_before


def test_a_cookie_session_upload_with_the_csrf_token_is_served(live, user):
    cookies = _browser_session(user)

    response = upload(
        live.server.graphql_url,
        images.photo(),
        cookies=cookies,
        headers={"X-CSRFToken": cookies["csrftoken"]},
    )

    assert uploaded(response)["errors"] == []
    assert job_finished(Job.objects.get().pk).status == "SUCCESS"


def _processing_image(owner, original: bytes) -> Image:
    """An image whose stored original went bad after it was accepted (say, in storage)."""
    with transaction.atomic():
        job = job_create(kind=JobKind.IMAGE_PROCESSING, owner=owner, total=3)
        image = Image(owner=owner, format="JPEG", original_bytes=len(original), width=1, height=1)
        image.job = job
        image.original = default_storage.save(
            f"{image.storage_dir}/original.jpg", ContentFile(original)
        )
        image.save()
        job_dispatch(job=job, task_name="media.process_image", image_id=image.pk)
    return image


@pytest.mark.parametrize(
    ("original", "reason"),
    [
        (images.truncated_jpeg(), "damaged or truncated"),
        (images.decompression_bomb(), "more than"),
    ],
    ids=["truncated", "decompression-bomb"],
)
def test_a_failed_thumbnail_fails_the_job_with_the_reason(live, user, original, reason):
    image = _processing_image(user, original)

    job = job_finished(Job.objects.get().pk)

    assert job.status == "FAILURE"
    assert reason in job.error
    assert "thumbnail" in job.error or "optimized" in job.error
    seen = live.client(user).data(IMAGE, {"id": str(global_id("Image", image.pk))})["image"]
    assert seen["status"] == ImageStatus.FAILED
    assert seen["errorMessage"] == job.error
    assert seen["job"]["status"] == "FAILURE"
    assert live.worker.alive()


def test_a_cancelled_upload_ends_cancelled_and_its_image_says_so(live, user):
    client = live.client(user)
    started = uploaded(
        upload(live.server.graphql_url, images.photo((7000, 5000)), token=client.token)
    )

    cancelled = client.data(CANCEL, {"id": started["job"]["id"]})["jobCancel"]

    assert cancelled["errors"] == []
    assert job_finished(Job.objects.get().pk).status == "CANCELLED"
    image = client.data(IMAGE, {"id": started["image"]["id"]})["image"]
    assert image["status"] == ImageStatus.CANCELLED
    assert image["job"]["status"] == "CANCELLED"
    assert live.worker.alive()
