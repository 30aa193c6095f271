"""The ASGI body limit: a GraphQL POST over GRAPHQL_MAX_BODY_BYTES is refused unread."""

from django.conf import settings
from django.http import JsonResponse


def body_too_large() -> JsonResponse:
    return JsonResponse(
        {
            "errors": [
                {"message": f"The request body is over {settings.GRAPHQL_MAX_BODY_BYTES:,} bytes."}
            ]
        },
        status=413,
    )


class _BodyTooLarge(Exception):
    pass


class GraphQLBodyLimit:
    """ASGI middleware: a GraphQL POST over GRAPHQL_MAX_BODY_BYTES gets 413 before it is read.

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
        limit = settings.GRAPHQL_MAX_BODY_BYTES
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            return await self._refuse(send)
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
            await self._refuse(send)

    async def _refuse(self, send) -> None:
        response = body_too_large()
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
            }
        )
        await send({"type": "http.response.body", "body": response.content})
