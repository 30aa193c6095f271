"""The GraphQL websocket: Channels in both subprotocols, authenticated at connection_init.

A socket stays authenticated only while its credentials hold: revoking its token or
deactivating its user closes it (4401, with the reason) within moments, on every server
process, and nothing runs on it afterwards (domains/accounts/access.py).
"""

import asyncio
import logging
from contextlib import suppress

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from strawberry.channels import GraphQLWSConsumer
from strawberry.exceptions import ConnectionRejectionError
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler

from domains.accounts.access import access_channel, access_refusal
from domains.accounts.services import token_authenticate
from domains.jobs.stream import event_hub

logger = logging.getLogger(__name__)

ACCESS_ENDED_CODE = 4401


_OPERATION_STARTS = {"subscribe", "start"}  # graphql-transport-ws, subscriptions-transport-ws


class _AccessGuard:
    """Both protocols: the handler registers with its socket; each operation starts only
    after the socket's credentials are checked again (as an HTTP request's are), and once
    its access has ended no message is handled at all."""

    async def handle(self) -> None:
        self.view.protocol_handler = self
        await super().handle()

    async def handle_message(self, message) -> None:
        if self.view.access_ended:
            return
        starts = isinstance(message, dict) and message.get("type") in _OPERATION_STARTS
        if starts and not await self.view.access_holds():
            return
        await super().handle_message(message)


class TransportGraphQLWSHandler(_AccessGuard, BaseGraphQLTransportWSHandler):
    """graphql-transport-ws."""

    async def end_operations(self) -> None:
        for operation_id in list(self.operations):
            await self.cleanup_operation(operation_id)


class LegacyGraphQLWSHandler(_AccessGuard, BaseGraphQLWSHandler):
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

    async def end_operations(self) -> None:
        await self.cleanup()


def _token_from(params: dict) -> str | None:
    header = params.get("Authorization") or params.get("authorization")
    if isinstance(header, str) and header.lower().startswith("bearer "):
        return header[7:].strip()
    token = params.get("authToken")
    return token.strip() if isinstance(token, str) else None


class GraphQLWebSocketConsumer(GraphQLWSConsumer):
    graphql_transport_ws_handler_class = TransportGraphQLWSHandler
    graphql_ws_handler_class = LegacyGraphQLWSHandler

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.protocol_handler: TransportGraphQLWSHandler | LegacyGraphQLWSHandler | None = None
        self.access_ended = False
        self._credentials: tuple[int, int | None] | None = None  # user id, token id
        self._access_watch: asyncio.Task | None = None

    async def on_ws_connect(self, context):
        """Authenticate from the connection_init payload; else the session cookie's user."""
        params = context.get("connection_params") or {}
        token = _token_from(params)
        token_id = None
        if token is not None:
            row = await sync_to_async(token_authenticate)(token)
            if row is None:
                logger.info("ws.token_rejected")
                raise ConnectionRejectionError({"message": "Invalid or expired token."})
            self.scope["user"], token_id = row.user, row.pk
        user = self.scope.get("user")
        if user is not None and user.is_authenticated:
            self._credentials = (user.pk, token_id)
            self._access_watch = asyncio.create_task(self._watch_access())
        return None

    async def _refusal(self) -> str | None:
        if self._credentials is None:
            return None  # anonymous: nothing to lose
        user_id, token_id = self._credentials
        return await database_sync_to_async(access_refusal)(user_id=user_id, token_id=token_id)

    async def access_holds(self) -> bool:
        """Whether the socket's credentials still hold; ends its access when not."""
        if (refusal := await self._refusal()) is not None:
            await self._end_access(refusal)
        return not self.access_ended

    async def _watch_access(self) -> None:
        """Check the credentials at each access change of the user, and every so often
        (expiry; a signal lost while Redis reconnected); end the socket's access when
        they no longer hold. Subscribed before the first check, so no change slips by."""
        async with event_hub().subscribe(access_channel(self._credentials[0])) as changes:
            while (refusal := await self._refusal()) is None:
                with suppress(TimeoutError):
                    await asyncio.wait_for(changes.get(), settings.GRAPHQL_WS_ACCESS_RECHECK)
        await self._end_access(refusal)

    async def _end_access(self, reason: str) -> None:
        if self.access_ended:
            return
        self.access_ended = True
        user_id = self._credentials[0]
        self.scope["user"] = AnonymousUser()
        if self.protocol_handler is not None:
            await self.protocol_handler.end_operations()
        logger.info("ws.access_ended", extra={"user_id": user_id, "reason": reason})
        await self.close(code=ACCESS_ENDED_CODE, reason=reason)

    async def disconnect(self, code: int) -> None:
        if self._access_watch is not None:
            self._access_watch.cancel()
        await super().disconnect(code)


def websocket_consumer():
    from schema import schema

    return GraphQLWebSocketConsumer.as_asgi(
        schema=schema,
        keep_alive=True,
        keep_alive_interval=settings.GRAPHQL_WS_KEEPALIVE,
        connection_init_wait_timeout=settings.GRAPHQL_WS_INIT_TIMEOUT,
        allowed_origins=settings.CSRF_TRUSTED_ORIGINS,
    )
