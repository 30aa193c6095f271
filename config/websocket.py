"""The GraphQL websocket: Channels in both subprotocols, authenticated at connection_init.

Both protocols' handlers share the same guards: a frame of the wrong shape closes the
socket with 4400 (it never kills the handler, which would leave a socket that answers pings
for ever), a viewer holds at most GRAPHQL_WS_MAX_PER_USER sockets (4429 beyond), and a
socket at most GRAPHQL_WS_MAX_SUBSCRIPTIONS operations, a viewer at most
GRAPHQL_WS_MAX_SUBSCRIPTIONS_PER_USER across their sockets and HTTP streams (an error with
the code TOO_MANY_SUBSCRIPTIONS beyond). The counts are this process's: with several
server processes a viewer's sockets are capped per process.

A socket stays authenticated only while its credentials hold: revoking its token or
deactivating its user closes it (4401, with the reason) within moments, on every server
process, and nothing runs on it afterwards. The cap and the access watch are the ones
HTTP streams obey too (schema/streams.py).

An operation served from a shared frame (schema/frames.py) takes its live events from the
process's hub, which writes each frame into the socket itself (`_OperationWriter`): the
operation's task is woken only for what the hub could not write. A socket whose write
buffer is above the transport's high-water mark is skipped, never awaited; its operations
then send the latest state (and always the end) their own way once it drains, and one
stuck past GRAPHQL_WS_STUCK_CLOSE seconds is closed (SLOW_CONSUMER_CODE, with the reason).
"""

import asyncio
import copy
import json
import logging
from collections import deque
from contextlib import suppress
from typing import Any

from asgiref.sync import sync_to_async
from channels.auth import UserLazyObject, get_user
from channels.exceptions import StopConsumer
from channels.layers import get_channel_layer
from channels.sessions import InstanceSessionWrapper
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.http import parse_cookie
from graphql import OperationType
from strawberry.channels import GraphQLWSConsumer
from strawberry.http.exceptions import NonJsonMessageReceived, NonTextMessageReceived
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from websockets.frames import Frame, Opcode
from websockets.protocol import State

from domains.accounts.services import token_authenticate, token_viewer
from domains.accounts.viewers import credential_holder_id
from domains.infra.metrics import open_sockets
from schema import streams
from schema.frames import encode_frame, frame_writer
from schema.limits import operation_type
from schema.persisted import PersistedQueryRefused, persisted_document

logger = logging.getLogger(__name__)

ACCESS_ENDED_CODE = 4401
UNAUTHENTICATED = "UNAUTHENTICATED"  # as an HTTP stream's 401 says
_AUTHENTICATION_REQUIRED = (
    'Authentication required: send {"Authorization": "Bearer <token>"} in connection_init.'
)
SLOW_CONSUMER_CODE = 1008  # policy violation: the client read nothing for too long
_UNKNOWN = object()
_OPERATION_STARTS = {"subscribe", "start"}  # graphql-transport-ws, subscriptions-transport-ws


class SocketRefused(Exception):
    """Closes the socket at connection_init with this code and reason."""

    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _frame_problem(message: object) -> str | None:
    """What is wrong with a frame's shape, or None; the protocol's handler checks the rest."""
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        return 'A frame must be a JSON object with a string "type".'
    if message["type"] in ("subscribe", "start", "stop", "complete") and not isinstance(
        message.get("id"), str
    ):
        return f'A "{message["type"]}" frame needs a string "id".'
    if message["type"] in ("subscribe", "start"):
        payload = message.get("payload")
        query = payload.get("query") if isinstance(payload, dict) else None
        # A persisted query's hash may stand in for the document (schema/persisted.py).
        if not isinstance(query, str) and not (query is None and _asks_persisted(payload)):
            return f'A "{message["type"]}" frame needs a payload with a string "query".'
        if not isinstance(payload.get("variables", {}), dict | None):
            return 'The payload\'s "variables" must be an object.'
    return None


def _asks_persisted(payload: object) -> bool:
    extensions = payload.get("extensions") if isinstance(payload, dict) else None
    return isinstance(extensions, dict) and "persistedQuery" in extensions


async def _with_document(handler: "_Guards", payload: dict) -> dict[str, Any] | None:
    """Puts the persisted document a payload asks for in its query (schema/persisted.py);
    the coded refusal if it cannot be had, else None."""
    try:
        payload["query"] = await persisted_document(
            payload.get("query"), payload.get("extensions"), client=handler.viewer_key
        )
    except PersistedQueryRefused as refused:
        return refused.error
    return None


def _subscription_refusal(handler: "_Guards") -> str | None:
    if handler.open_operations() >= settings.GRAPHQL_WS_MAX_SUBSCRIPTIONS:
        return (
            f"This socket already runs {settings.GRAPHQL_WS_MAX_SUBSCRIPTIONS} operations: "
            "complete one before starting another."
        )
    return streams.subscriptions_refusal(handler.viewer_key)


def _coded(message: str, code: str) -> dict[str, Any]:
    return {"message": message, "extensions": {"code": code}}


def _operation_refusal(handler: "_Guards", payload: dict) -> dict[str, Any] | None:
    """Why an operation may not start on this socket, as a coded error; None if it may.

    Mutations run Django's synchronous code, which the websocket's event loop must not
    run: they are sent over HTTP.
    """
    kind = operation_type(payload["query"], payload.get("operationName"))
    if kind == OperationType.MUTATION:
        return _coded(
            "Mutations are not run over the websocket: send them as a POST to /graphql/.",
            "HTTP_ONLY",
        )
    user = handler.view.scope.get("user")
    if kind == OperationType.SUBSCRIPTION and (user is None or credential_holder_id(user) is None):
        return _coded(_AUTHENTICATION_REQUIRED, UNAUTHENTICATED)
    refusal = _subscription_refusal(handler)
    return _coded(refusal, streams.TOO_MANY_SUBSCRIPTIONS) if refusal else None


class _OperationWriter:
    """How the hub writes one operation's frames into its socket: straight to the transport
    as the frame's wire bytes where the socket's server allows (`wire_target`), else
    uvicorn's own send (below Channels' and Strawberry's), driven to its end at once, as it
    completes without waiting while the transport takes writes. The frame around the data
    is the one the operation's first frame (its snapshot, sent the usual way) had: its id,
    type and extensions."""

    __slots__ = (
        "_frame_type",
        "_operation_id",
        "_running",
        "_socket",
        "_target",
        "framing",
        "prefix",
        "suffix",
    )

    def __init__(self, handler: "_Guards", operation_id: str, frame_type: str, running: dict):
        self._socket: GraphQLWebSocketConsumer = handler.view
        self._target: Any = _UNKNOWN  # the socket's wire_target, asked at the first write
        self._running = running  # the handler's operations by id: one completed is not written
        self._operation_id = operation_id
        self._frame_type = frame_type
        self.prefix = f'{{"id":{json.dumps(operation_id)},"type":"{frame_type}","payload":{{"data":'
        self.suffix: str | None = None  # known once the operation's first frame went out
        self.framing: tuple[str, str] | None = None  # (prefix, suffix): its frames' key

    def note(self, message: object) -> None:
        """A message the operation sends its own way: its first data frame gives the rest."""
        if (
            self.suffix is None
            and isinstance(message, dict)
            and message.get("id") == self._operation_id
            and message.get("type") == self._frame_type
        ):
            payload = message.get("payload")
            if isinstance(payload, dict) and payload.keys() <= {"data", "extensions"}:
                extensions = payload.get("extensions")
                tail = "" if extensions is None else f',"extensions":{json.dumps(extensions)}'
                self.suffix = f"{tail}}}}}"
                self.framing = (self.prefix, self.suffix)

    def write(self, frame: list, seq: int | None) -> bool:
        """Writes the frame without waiting, or says False: the socket is closing, its
        server's send could wait, or its write buffer is above the high-water mark (then a
        check closes it if it stays stuck)."""
        framing = self.framing
        if framing is None or self._operation_id not in self._running:
            return False
        # The whole websocket frame, built once per shared frame for every socket whose
        # operation has this id and framing (a server's frames are not masked: the same
        # bytes for each of them), then written to each socket as it is.
        messages = frame[2]
        wire = messages.get(framing)
        if wire is None:
            text = self.prefix + frame[1] + self.suffix
            wire = messages[framing] = (text, _text_frame(text))
        socket, target = self._socket, self._target
        if target is _UNKNOWN:
            target = self._target = socket.wire_target()
        if target is None:
            return socket.write_now(wire[0])
        # Checked here, not through a method of the socket: at 1,000 subscribers a
        # delivery's cost is mostly the objects it touches, each a cache miss.
        transport, protocol, writable = target
        # Its server sends a close (close_sent) before the transport closes; a client's
        # close, or a lost connection, closes the transport.
        if socket.access_ended or protocol.close_sent or transport.is_closing():
            return False
        if not writable.is_set():
            socket.check_stuck_later()
            return False
        transport.write(wire[1])
        return True


def _text_frame(text: str) -> bytes:
    """A text message as one unmasked, uncompressed websocket frame (a server's)."""
    return Frame(Opcode.TEXT, text.encode()).serialize(mask=False)


class _Guards:
    """What both protocols' handlers share: frame checks, socket and subscription caps."""

    viewer_key: str = ""

    def open_operations(self) -> int:
        raise NotImplementedError

    async def _refuse_frame(self, problem: str) -> None:
        logger.info("ws.bad_frame", extra={"reason": problem})
        await self.websocket.close(code=4400, reason=problem)

    async def _refuse_operation(self, refusal: dict[str, Any], error_frame: dict) -> None:
        """The operation's coded error; missing credentials also close the socket 4401
        (the code an ended access closes with), so that the client signs in first."""
        await self.send_message(error_frame)
        if refusal["extensions"]["code"] == UNAUTHENTICATED:
            logger.info("ws.unauthenticated_subscription")
            await self.websocket.close(code=ACCESS_ENDED_CODE, reason=refusal["message"])

    async def _guarded_message(self, message: Any, handle) -> None:
        """A frame of the wrong shape closes the socket; once the socket's access ended
        nothing is handled; an operation starts only after its credentials are checked
        again, as an HTTP request's are."""
        if self.view.access_ended:
            return
        problem = _frame_problem(message)
        if problem is None:
            if message["type"] in _OPERATION_STARTS and not await self.view.access_holds():
                return
            try:
                return await handle(message)
            except (KeyError, TypeError, AttributeError, ValueError):
                problem = "The frame does not fit the protocol."
        await self._refuse_frame(problem)

    async def _guarded_init(self, message: Any, handle) -> None:
        try:
            await handle(message)
        except SocketRefused as refused:
            logger.info("ws.refused", extra={"code": refused.code, "reason": refused.reason})
            await self.refuse_connection(refused)
            return
        if self.connection_acknowledged:
            self.viewer_key = viewer_key(self.view.scope)
            streams.hold(self.viewer_key, self)
            open_sockets.inc()
            self._stop_init_timer()

    def _stop_init_timer(self) -> None:
        """The connection_init timeout has nothing left to watch once the socket is
        acknowledged: its task (and the frames it holds) goes now, not when it wakes."""
        raise NotImplementedError

    async def refuse_connection(self, refused: SocketRefused) -> None:
        await self.websocket.close(code=refused.code, reason=refused.reason)

    def _forget(self) -> None:
        if streams.release(self.viewer_key, self):
            open_sockets.dec()


class TransportWSHandler(_Guards, BaseGraphQLTransportWSHandler):
    """graphql-transport-ws."""

    def open_operations(self) -> int:
        return len(self.operations)

    async def handle(self) -> None:
        self.view.protocol_handler = self
        try:
            await super().handle()
        finally:
            self._forget()

    async def end_operations(self) -> None:
        for operation_id in list(self.operations):
            await self.cleanup_operation(operation_id)

    def _stop_init_timer(self) -> None:
        timer, self.connection_init_timeout_task = self.connection_init_timeout_task, None
        if timer is not None:
            timer.cancel()

    async def handle_message(self, message) -> None:
        await self._guarded_message(message, super().handle_message)

    async def handle_connection_init(self, message) -> None:
        await self._guarded_init(message, super().handle_connection_init)

    async def run_operation(self, operation) -> None:
        frame_writer.set(_OperationWriter(self, operation.id, "next", self.operations))
        await super().run_operation(operation)

    async def handle_subscribe(self, message) -> None:
        refusal = self.connection_acknowledged and (
            await _with_document(self, message["payload"])
            or _operation_refusal(self, message["payload"])
        )
        if refusal:
            await self._refuse_operation(
                refusal, {"id": message["id"], "type": "error", "payload": [refusal]}
            )
            return
        await super().handle_subscribe(message)


class _JsonFramesOnly:
    """The legacy handler's socket, whose frames must be JSON text: strawberry's handler
    skipped a frame that is not JSON and closed 1002 on a binary one, where
    graphql-transport-ws (and every other malformed frame here) closes 4400."""

    def __init__(self, websocket, refuse_frame):
        self._websocket = websocket
        self._refuse_frame = refuse_frame

    def __getattr__(self, name: str):
        return getattr(self._websocket, name)

    async def iter_json(self, *, ignore_parsing_errors: bool = False):
        try:
            async for message in self._websocket.iter_json():
                yield message
        except NonJsonMessageReceived:
            await self._refuse_frame("A frame must be a JSON object.")
        except NonTextMessageReceived:
            await self._refuse_frame("A frame must be JSON text, not binary.")


class LegacyGraphQLWSHandler(_Guards, BaseGraphQLWSHandler):
    """subscriptions-transport-ws, with the connection_init timeout the modern protocol has."""

    def open_operations(self) -> int:
        return sum(not task.done() for task in self.tasks.values())

    async def handle(self) -> None:
        self.view.protocol_handler = self
        self.websocket = _JsonFramesOnly(self.websocket, self._refuse_frame)
        watchdog = self._watchdog = asyncio.create_task(self._close_unless_initialised())
        try:
            await super().handle()
        finally:
            watchdog.cancel()
            self._forget()

    async def end_operations(self) -> None:
        await self.cleanup()

    def _stop_init_timer(self) -> None:
        self._watchdog.cancel()

    async def _close_unless_initialised(self) -> None:
        await asyncio.sleep(self.view.connection_init_wait_timeout.total_seconds())
        if not self.connection_acknowledged:
            await self.websocket.close(code=4408, reason="Connection initialisation timeout")

    async def handle_message(self, message) -> None:
        await self._guarded_message(message, super().handle_message)

    async def handle_connection_init(self, message) -> None:
        await self._guarded_init(message, super().handle_connection_init)

    async def refuse_connection(self, refused: SocketRefused) -> None:
        await self.send_message(
            {"type": "connection_error", "payload": {"message": refused.reason}}
        )
        await super().refuse_connection(refused)

    async def handle_async_results(self, operation_id, query, operation_name, variables) -> None:
        frame_writer.set(_OperationWriter(self, operation_id, "data", self.tasks))
        await super().handle_async_results(operation_id, query, operation_name, variables)

    async def handle_start(self, message) -> None:
        refusal = self.connection_acknowledged and (
            await _with_document(self, message["payload"])
            or _operation_refusal(self, message["payload"])
        )
        if refusal and message["id"] not in self.tasks:
            await self._refuse_operation(
                refusal, {"type": "error", "id": message["id"], "payload": refusal}
            )
            return
        await super().handle_start(message)


def viewer_key(scope: dict) -> str:
    return streams.viewer_key(scope.get("user"), (scope.get("client") or ["-"])[0])


def _open_sockets(key: str) -> int:
    """The viewer's open sockets, counted only when they could reach the cap (a connect is
    otherwise no walk over the viewer's other connections)."""
    held = streams.connections(key)
    if len(held) < settings.GRAPHQL_WS_MAX_PER_USER:
        return len(held)
    return sum(isinstance(c, _Guards) for c in held)


_token_rows = streams.Coalesced(sync_to_async(token_authenticate))


async def _authenticated_token(token: str) -> Any:
    """The token's row (token_authenticate), read once for the sockets that present the
    same token while it is read (a read begun after each asked); each its own copy."""
    row = await _token_rows(token)
    return None if row is None else copy.deepcopy(row)


def _token_from(params: dict) -> str | None:
    header = params.get("Authorization") or params.get("authorization")
    if isinstance(header, str) and header.lower().startswith("bearer "):
        return header[7:].strip()
    token = params.get("authToken")
    return token.strip() if isinstance(token, str) else None


class _Inbox:
    """The frames a socket received that its handler has not read: what Strawberry's
    consumer keeps in an asyncio.Queue (put_nowait, get), at a fifth of its size. Every
    idle subscriber holds one (an asyncio.Queue is three deques, 3.2 KB). One reader: the
    protocol handler's loop."""

    __slots__ = ("_items", "_waiter")

    def __init__(self):
        self._items: deque = deque()
        self._waiter: asyncio.Future | None = None

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def get(self) -> Any:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.popleft()


class GraphQLWebSocketConsumer(GraphQLWSConsumer):
    graphql_transport_ws_handler_class = TransportWSHandler
    graphql_ws_handler_class = LegacyGraphQLWSHandler

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.message_queue = _Inbox()
        self.protocol_handler: TransportWSHandler | LegacyGraphQLWSHandler | None = None
        self.access_ended = False
        self._credentials: streams.Credentials | None = None
        self._access_watch: streams.AccessWatch | None = None
        self._access_ending: asyncio.Task | None = None
        self._stuck_check: asyncio.TimerHandle | None = None
        self._protocol: Any = _UNKNOWN
        self._wire: Any = _UNKNOWN  # wire_target's answer, once asked
        self._closing_stuck: asyncio.Task | None = None

    async def __call__(self, scope, receive, send):
        """Channels' consumer loop without its task per frame: with no channel layer to
        listen to as well, each frame is awaited and dispatched in turn, as Channels does
        (`await_many_dispatch` wraps every receive in a task of its own, which an idle
        socket holds, with asyncio.wait's waiter, for as long as it stays open)."""
        if get_channel_layer(self.channel_layer_alias) is not None:
            return await super().__call__(scope, receive, send)
        self.scope, self.channel_layer, self.base_send = scope, None, send
        with suppress(StopConsumer):
            while True:
                await self.dispatch(await receive())

    async def on_ws_connect(self, context):
        """Authenticate from the connection_init payload; else the session cookie's user.

        Refuses an invalid token (4403) and a viewer's socket over the cap (4429).
        """
        params = context.get("connection_params") or {}
        token = _token_from(params)
        token_id = None
        if token is not None:
            row = await _authenticated_token(token)
            if row is None:
                raise SocketRefused(4403, "Invalid or expired token")
            self.scope["user"], token_id = token_viewer(row), row.pk
        if _open_sockets(viewer_key(self.scope)) >= settings.GRAPHQL_WS_MAX_PER_USER:
            raise SocketRefused(
                4429,
                f"Too many open websockets (at most {settings.GRAPHQL_WS_MAX_PER_USER}): "
                "close one, or run several subscriptions on one socket.",
            )
        user = self.scope.get("user")
        if credential_holder_id(user) is not None:  # a user's, or a job token's owner's
            self._credentials = streams.credentials_of(user, token_id, self.scope.get("session"))
            self._access_watch = self._credentials.watch(self._access_refused)
        return None

    async def access_holds(self) -> bool:
        """Whether the socket's credentials still hold (anonymous: nothing to lose); ends
        its access when not."""
        if self._credentials is not None and (refusal := await self._credentials.refusal()):
            await self._end_access(refusal)
        return not self.access_ended

    def _access_refused(self, reason: str) -> None:
        """Called by the access watch the socket's credentials share with every connection
        that holds the same ones (no task of its own while they hold)."""
        self._access_ending = asyncio.get_running_loop().create_task(self._end_access(reason))

    async def _end_access(self, reason: str) -> None:
        if self.access_ended:
            return
        self.access_ended = True
        user_id = self._credentials.user_id
        self.scope["user"] = AnonymousUser()
        if self.protocol_handler is not None:
            await self.protocol_handler.end_operations()
        logger.info("ws.access_ended", extra={"user_id": user_id, "reason": reason})
        await self.close(code=ACCESS_ENDED_CODE, reason=reason)

    def encode_json(self, data: object) -> str:
        writer = frame_writer.get()  # the operation whose task sends this, if any
        if writer is not None:
            writer.note(data)
        return encode_frame(data, super().encode_json)

    def _server_protocol(self) -> Any:
        """uvicorn's protocol under this socket where its send tells whether the transport
        takes writes now (websockets-sansio, wsproto), else None."""
        if self._protocol is _UNKNOWN:
            protocol = getattr(self.base_send, "__self__", None)
            writable = getattr(protocol, "writable", None)
            self._protocol = protocol if isinstance(writable, asyncio.Event) else None
        return self._protocol

    def wire_target(self) -> tuple | None:
        """Where a frame built once for many sockets is written as its wire bytes: uvicorn's
        transport, with the protocol and `writable` event each write checks; None where the
        socket's server does not speak websockets-sansio over a connection without
        extensions (no per-message deflate). Asked once the socket is open (its first frame
        has gone out), then kept."""
        if self._wire is _UNKNOWN:
            protocol = self._server_protocol()
            connection = getattr(protocol, "conn", None)
            transport = getattr(protocol, "transport", None)
            takes = (
                getattr(connection, "extensions", None) == []
                and getattr(connection, "state", None) is State.OPEN
                and callable(getattr(transport, "write", None))
            )
            self._wire = (transport, protocol, protocol.writable) if takes else None
        return self._wire

    def write_now(self, text: str) -> bool:
        """Sends a frame through uvicorn's send without waiting, or says False: the socket
        is closing, or its send could wait (its write buffer is above the high-water mark:
        then a check closes it if it stays stuck)."""
        protocol = self._server_protocol()
        if protocol is None or self.access_ended or getattr(protocol, "close_sent", True):
            return False
        if not protocol.writable.is_set():
            self.check_stuck_later()
            return False
        sending = self.base_send({"type": "websocket.send", "text": text})
        try:
            sending.send(None)
        except StopIteration:
            return True
        except (OSError, RuntimeError):  # gone meanwhile: its operations' own sends find out
            return False
        sending.close()  # it would have waited after all: the operation sends it its way
        return False

    async def send(self, *args, **kwargs) -> None:
        protocol = self._server_protocol()
        if protocol is not None and not protocol.writable.is_set():
            self.check_stuck_later()
        await super().send(*args, **kwargs)

    def check_stuck_later(self) -> None:
        if self._stuck_check is None:
            self._stuck_check = asyncio.get_running_loop().call_later(
                settings.GRAPHQL_WS_STUCK_CLOSE, self._close_if_stuck
            )

    def _close_if_stuck(self) -> None:
        self._stuck_check = None
        protocol = self._server_protocol()
        if protocol is None or protocol.writable.is_set() or self._closing_stuck is not None:
            return
        reason = (
            f"The socket took no frames for {settings.GRAPHQL_WS_STUCK_CLOSE:g} seconds: "
            "read it as frames come, then subscribe again."
        )
        logger.info("ws.too_slow", extra={"viewer": viewer_key(self.scope), "reason": reason})
        self._closing_stuck = asyncio.create_task(self._close_stuck(protocol, reason))

    async def _close_stuck(self, protocol: Any, reason: str) -> None:
        with suppress(OSError, RuntimeError):
            try:
                async with asyncio.timeout(settings.GRAPHQL_WS_STUCK_CLOSE):
                    await self.close(code=SLOW_CONSUMER_CODE, reason=reason)
            except TimeoutError:
                protocol.transport.abort()  # its buffer never drained: the close cannot pass

    async def disconnect(self, code: int) -> None:
        if self._access_watch is not None:
            self._access_watch.cancel()
        if self._stuck_check is not None:
            self._stuck_check.cancel()
        await super().disconnect(code)


class SocketSession:
    """Channels' AuthMiddlewareStack for the websocket, as one layer holding one copy of
    the scope: its cookies, its session (read only: Channels' wrapper saves a session on
    http.response.start, which a websocket never sends, yet looks into it at every frame:
    the socket's send goes on as it is), and its user. The stack's three layers each kept
    a copy of the scope (Auth two) for as long as the socket stayed open."""

    def __init__(self, inner):
        self.inner = inner

    async def __call__(self, scope, receive, send):
        cookie = next((value for name, value in scope["headers"] if name == b"cookie"), None)
        cookies = parse_cookie(cookie.decode("latin1")) if cookie is not None else {}
        session = InstanceSessionWrapper({**scope, "cookies": cookies}, send)  # its own copy
        await session.resolve_session()
        scope = session.scope
        if "user" not in scope:
            scope["user"] = UserLazyObject()
            scope["user"]._wrapped = await get_user(scope)
        return await self.inner(scope, receive, send)


def websocket_consumer():
    from schema import schema

    return GraphQLWebSocketConsumer.as_asgi(
        schema=schema,
        keep_alive=True,
        keep_alive_interval=settings.GRAPHQL_WS_KEEPALIVE,
        connection_init_wait_timeout=settings.GRAPHQL_WS_INIT_TIMEOUT,
        max_subscriptions_per_connection=None,  # counted by the handlers, with a code
        allowed_origins=settings.CSRF_TRUSTED_ORIGINS,
    )
