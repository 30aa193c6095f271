"""The GraphQL endpoint for images through Django's test client: CSRF on multipart
uploads, the body limit, the viewer's scope and the number of queries."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from domains.jobs.ending import job_end
from domains.jobs.models import JobStatus
from domains.media.models import Image
from schema.base import global_id
from testbed.factories import make_token, make_user
from tests.domains.media import images
from tests.domains.media.conftest import multipart_fields
from tests.domains.media.factories import make_image

pytestmark = pytest.mark.django_db

IMAGES = """
{ images { totalCount edges { node { id status originalUrl thumbnails { sizeName url width } job { status } } } } }
"""


def _multipart(content: bytes) -> dict:
    fields = multipart_fields(content, "photo.jpg", "image/jpeg")
    name, data, content_type = fields["files"]["0"]
    return {**fields["data"], "0": SimpleUploadedFile(name, data, content_type)}


def _signed_in_browser(user) -> Client:
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(user)
    browser.get("/graphql/", HTTP_ACCEPT="text/html")
    return browser


def test_a_cookie_session_multipart_upload_without_a_csrf_token_is_refused():
    browser = _signed_in_browser(make_user())

    response = browser.post("/graphql/", _multipart(images.photo()))

    assert response.status_code == 403
    assert Image.objects.count() == 0


def test_a_cookie_session_multipart_upload_with_the_csrf_token_is_served(
    django_capture_on_commit_callbacks,
):
    browser = _signed_in_browser(make_user())

    with django_capture_on_commit_callbacks():
        response = browser.post(
            "/graphql/",
            _multipart(images.photo()),
            HTTP_X_CSRFTOKEN=browser.cookies["csrftoken"].value,
        )

    assert response.json()["data"]["imageUpload"]["errors"] == []
    assert Image.objects.count() == 1


def test_a_token_client_uploads_without_a_csrf_token(django_capture_on_commit_callbacks):
    user = make_user()
    api = Client(enforce_csrf_checks=True)

    with django_capture_on_commit_callbacks():
        response = api.post(
            "/graphql/",
            _multipart(images.photo()),
            HTTP_AUTHORIZATION=f"Bearer {make_token(user)}",
        )

    assert response.json()["data"]["imageUpload"]["image"]["format"] == "JPEG"


def test_an_anonymous_upload_is_refused_and_nothing_kept():
    response = Client().post("/graphql/", _multipart(images.photo()))

    assert response.json()["data"] is None
    assert Image.objects.count() == 0


def test_a_body_declared_over_the_limit_is_refused_unread(settings):
    response = Client().generic(
        "POST",
        "/graphql/",
        b"--x\r\n",
        content_type="multipart/form-data; boundary=x",
        CONTENT_LENGTH=str(settings.GRAPHQL_MAX_BODY_BYTES + 1),
    )

    assert response.status_code == 413


def _api(user) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {make_token(user)}")


def test_images_lists_the_viewers_own_in_a_fixed_number_of_queries(django_assert_num_queries):
    owner, stranger = make_user(), make_user()
    sizes = [("small", 150), ("medium", 400), ("large", 800)]
    for _ in range(4):
        make_image(owner=owner, thumbnails=sizes)
    make_image(owner=stranger, thumbnails=sizes)
    api = _api(owner)

    # token, count, images with their jobs, their thumbnails: the same for any number
    with django_assert_num_queries(4):
        body = api.post("/graphql/", {"query": IMAGES}, content_type="application/json").json()

    listed = body["data"]["images"]
    assert listed["totalCount"] == 4
    assert all(len(e["node"]["thumbnails"]) == 3 for e in listed["edges"])
    assert [t["sizeName"] for t in listed["edges"][0]["node"]["thumbnails"]] == [
        "small",
        "medium",
        "large",
    ]


def test_image_of_another_user_is_null_but_staff_see_it():
    owner, stranger, staff = make_user(), make_user(), make_user(is_staff=True)
    image = make_image(owner=owner)
    query = {"query": "query($id: ID!) { image(id: $id) { id } }"}
    query["variables"] = {"id": str(global_id("Image", image.pk))}

    def seen(user):
        return (
            _api(user)
            .post("/graphql/", query, content_type="application/json")
            .json()["data"]["image"]
        )

    assert seen(owner) == {"id": query["variables"]["id"]}
    assert seen(stranger) is None
    assert seen(staff) == {"id": query["variables"]["id"]}


def test_an_image_whose_job_was_cancelled_while_queued_reads_cancelled():
    owner = make_user()
    image = make_image(owner=owner, status="pending")
    job_end(job_id=image.job_id, status=JobStatus.CANCELLED)
    query = {
        "query": "query($id: ID!) { image(id: $id) { status job { status } } }",
        "variables": {"id": str(global_id("Image", image.pk))},
    }

    seen = _api(owner).post("/graphql/", query, content_type="application/json").json()

    assert seen["data"]["image"] == {"status": "cancelled", "job": {"status": "CANCELLED"}}
