"""Uploading over the GraphQL multipart request spec, to a real server or Django's client."""

import json

import httpx
import pytest

from domains.infra.redis import sync_client

IMAGE_UPLOAD = """
mutation($file: Upload!) {
  imageUpload(file: $file) {
    image { id status format width height originalUrl }
    job { id kind status }
    errors { field message code }
  }
}
"""
IMAGE = """
query($id: ID!) {
  image(id: $id) {
    id status format width height errorMessage originalUrl optimizedUrl
    optimizedWidth optimizedHeight
    thumbnails { sizeName url width height byteSize }
    job { status error current total }
  }
}
"""


@pytest.fixture(autouse=True)
def _no_job_snapshots_left():
    """Job ids come round again between tests; a snapshot left in Redis must not answer."""
    for key in sync_client().scan_iter("job:*", count=1000):
        sync_client().delete(key)


def multipart_fields(content: bytes, filename: str, content_type: str) -> dict:
    """The form fields and file of an `imageUpload` request, as the spec lays them out."""
    return {
        "data": {
            "operations": json.dumps({"query": IMAGE_UPLOAD, "variables": {"file": None}}),
            "map": json.dumps({"0": ["variables.file"]}),
        },
        "files": {"0": (filename, content, content_type)},
    }


def upload(
    url: str,
    content: bytes,
    *,
    token: str | None = None,
    filename: str = "photo.jpg",
    content_type: str = "image/jpeg",
    **kwargs,
) -> httpx.Response:
    headers = kwargs.pop("headers", {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.post(
        url,
        **multipart_fields(content, filename, content_type),
        headers=headers,
        timeout=60,
        **kwargs,
    )


def uploaded(response: httpx.Response) -> dict:
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body["errors"]
    return body["data"]["imageUpload"]


def stored_image_files(media_root) -> list:
    folder = media_root / "images"
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []
