"""The ASGI body limit: a GraphQL POST over its limit is refused unread, with a coded 413.

A multipart upload (the GraphQL multipart request spec) may be as large as
GRAPHQL_MAX_BODY_BYTES; any other body (JSON) as Django's DATA_UPLOAD_MAX_MEMORY_SIZE,
which Django itself enforces when the body is read.
"""

from django.conf import settings
from django.http import JsonResponse

BODY_TOO_LARGE = "BODY_TOO_LARGE"


def body_limit(content_type: str) -> int:
    """The most bytes a GraphQL POST of this content type may carry."""
    if content_type.lower().startswith("multipart/form-data"):
        return settings.GRAPHQL_MAX_BODY_BYTES
    return settings.DATA_UPLOAD_MAX_MEMORY_SIZE or settings.GRAPHQL_MAX_BODY_BYTES


def body_too_large(content_type: str) -> JsonResponse:
    limit = body_limit(content_type)
    if content_type.lower().startswith("multipart/form-data"):
        advice = "upload a smaller file."
    else:
        advice = (
            "send files as a multipart upload (the GraphQL multipart request spec), and "
            "keep the document and variables under this."
        )
    message = f"The request body is over {limit:,} bytes: {advice}"
    return JsonResponse(
        {"errors": [{"message": message, "extensions": {"code": BODY_TOO_LARGE}}]}, status=413
    )


class _BodyTooLarge(Exception):
    pass


class GraphQLBodyLimit:
    """ASGI middleware: a GraphQL POST over its limit gets 413 before it is read.

    Django's ASGI handler spools the whole body before any view runs, so the limit is kept
    here: a declared Content-Length over it is refused without reading a byte, and a body
    without one (chunked) is cut off as soon as it passes the limit.
    """

    def __init__(self, app, path: str = "/graphql/"):
        self.app = app
        self.path = path

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != self.path:
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        content_type = headers.get(b"content-type", b"").decode("latin-1")
        limit = body_limit(content_type)
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            return await self._refuse(send, content_type)
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise _BodyTooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _BodyTooLarge:
            await self._refuse(send, content_type)

    async def _refuse(self, send, content_type: str) -> None:
        response = body_too_large(content_type)
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
            }
        )
        await send({"type": "http.response.body", "body": response.content})
