from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpRequest

from domains.media.processing import CONTENT_TYPES
from domains.media.selectors import image_file_name


def image_download(request: HttpRequest, image_id: int, variant: str) -> FileResponse:
    """One of an image's files, for its owner or staff (session or bearer token); else 404."""
    found = image_file_name(viewer=request.user, image_id=image_id, variant=variant)
    if found is None:
        raise Http404("No such image file.")
    name, file_format = found
    response = FileResponse(
        default_storage.open(name, "rb"), content_type=CONTENT_TYPES[file_format]
    )
    response["Cache-Control"] = "private, max-age=3600"
    return response
