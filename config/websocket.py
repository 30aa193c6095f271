"""The GraphQL websocket: Channels in both subprotocols, authenticated at connection_init."""

import asyncio
import logging

from asgiref.sync import sync_to_async
from django.conf import settings
from strawberry.channels import GraphQLWSConsumer
from strawberry.exceptions import ConnectionRejectionError
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler

from domains.accounts.services import user_for_token

logger = logging.getLogger(__name__)


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
