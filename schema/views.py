"""The GraphQL endpoint: HTTP through Django (sessions, CSRF, bearer tokens), websockets
through Channels in both subprotocols."""

import asyncio
import logging

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.http.response import HttpResponseBase
from django.utils.decorators import method_decorator
from django.views.decorators.csrf import ensure_csrf_cookie
from strawberry.channels import GraphQLWSConsumer
from strawberry.django.views import GraphQLView
from strawberry.exceptions import ConnectionRejectionError
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler

from domains.accounts.services import user_for_token

logger = logging.getLogger(__name__)


def _body_too_large() -> JsonResponse:
    return JsonResponse(
        {
            "errors": [
                {"message": f"The request body is over {settings.GRAPHQL_MAX_BODY_BYTES:,} bytes."}
            ]
        },
        status=413,
    )


@method_decorator(ensure_csrf_cookie, name="dispatch")  # GraphiQL's POSTs carry the token
class GraphQLHTTPView(GraphQLView):
    """GraphQL over HTTP: JSON, and the multipart request spec for uploads.

    Cookie sessions are CSRF-checked (CsrfViewMiddleware; bearer-token clients are exempt,
    see BearerTokenMiddleware). A body declared over GRAPHQL_MAX_BODY_BYTES is refused
    unread here; under ASGI, GraphQLBodyLimit refuses it before Django spools it.
    """

    multipart_uploads_enabled = True

    def __init__(self, **kwargs):
        kwargs.setdefault("graphql_ide", "graphiql" if settings.GRAPHQL_GRAPHIQL else None)
        kwargs.setdefault("multipart_uploads_enabled", True)
        super().__init__(**kwargs)

    def dispatch(self, request: HttpRequest, *args, **kwargs) -> HttpResponseBase:
        declared = request.META.get("CONTENT_LENGTH")
        if declared and declared.isdigit() and int(declared) > settings.GRAPHQL_MAX_BODY_BYTES:
            return _body_too_large()
        return super().dispatch(request, *args, **kwargs)


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
        response = _body_too_large()
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
            }
        )
        await send({"type": "http.response.body", "body": response.content})


class LegacyGraphQLWSHandler(BaseGraphQLWSHandler):
    """subscriptions-transport-ws, with the connection_init timeout the modern protocol has."""

    async def handle(self) -> None:
        watchdog = asyncio.create_task(self._close_unless_initialised())
        try:
            await super().handle()
        finally:
            watchdog.cancel()

    async def _close_unless_initialised(self) -> None:
        await asyncio.sleep(self.view.connection_init_wait_timeout.total_seconds())
        if not self.connection_acknowledged:
            await self.websocket.close(code=4408, reason="Connection initialisation timeout")


def _token_from(params: dict) -> str | None:
    header = params.get("Authorization") or params.get("authorization")
    if isinstance(header, str) and header.lower().startswith("bearer "):
        return header[7:].strip()
    token = params.get("authToken")
    return token.strip() if isinstance(token, str) else None


class GraphQLWebSocketConsumer(GraphQLWSConsumer):
    graphql_ws_handler_class = LegacyGraphQLWSHandler

    async def on_ws_connect(self, context):
        """Authenticate from the connection_init payload; else the session cookie's user."""
        params = context.get("connection_params") or {}
        token = _token_from(params)
        if token is not None:
            user = await sync_to_async(user_for_token)(token)
            if user is None:
                logger.info("ws.token_rejected")
                raise ConnectionRejectionError({"message": "Invalid or expired token."})
            self.scope["user"] = user
        return None


def websocket_consumer():
    from schema import schema

    return GraphQLWebSocketConsumer.as_asgi(
        schema=schema,
        keep_alive=True,
        keep_alive_interval=settings.GRAPHQL_WS_KEEPALIVE,
        connection_init_wait_timeout=settings.GRAPHQL_WS_INIT_TIMEOUT,
        allowed_origins=settings.CSRF_TRUSTED_ORIGINS,
    )
