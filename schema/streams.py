"""What every transport that streams subscriptions shares: the per-viewer cap, and access
that ends an open stream. Websockets (config/websocket.py) and HTTP streams (SSE and
multipart, schema/views.py) hold their connections here, so that a viewer's subscriptions
are counted once across transports, and a revoked token, a deactivated user, an expired
token, a session signed out or its password changed (whatever domains/accounts/access.py
refuses) ends all of them alike.

The counts are this process's: with several server processes a viewer is capped per process.
"""

import asyncio
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Protocol

from channels.db import database_sync_to_async
from django.conf import settings
from django.utils import timezone
from graphql import GraphQLError
from strawberry.types import ExecutionResult

from domains.accounts.access import access_channel, access_refusal
from domains.accounts.viewers import JobTokenViewer, credential_holder_id
from domains.jobs.stream import event_hub
from schema.frames import frame_writer

logger = logging.getLogger(__name__)

TOO_MANY_SUBSCRIPTIONS = "TOO_MANY_SUBSCRIPTIONS"
ACCESS_REVOKED = "ACCESS_REVOKED"


class StreamConnection(Protocol):
    """An open connection that carries subscriptions: a websocket, or one HTTP stream."""

    def open_operations(self) -> int: ...


# The open connections of each viewer ("user:<pk>", or "addr:<ip>" when anonymous).
_connections: defaultdict[str, set[StreamConnection]] = defaultdict(set)


def viewer_key(user: Any, address: str | None) -> str:
    """Whose count a connection's subscriptions go to: the user whose credentials it holds
    (a job token's are its owner's), else the client address."""
    holder = credential_holder_id(user)
    if holder is not None:
        return f"user:{holder}"
    return f"addr:{address or '-'}"


def connections(key: str) -> set[StreamConnection]:
    return _connections.get(key, set())


def hold(key: str, connection: StreamConnection) -> None:
    _connections[key].add(connection)


def release(key: str, connection: StreamConnection) -> bool:
    """Forget an open connection; whether it was held."""
    held = _connections.get(key)
    if held is None or connection not in held:
        return False
    held.discard(connection)
    if not held:
        del _connections[key]
    return True


def subscriptions_refusal(key: str) -> str | None:
    """Why the viewer may not start another subscription on any transport; None if they may."""
    held = connections(key)
    # Each connection runs at most GRAPHQL_WS_MAX_SUBSCRIPTIONS operations: while that many
    # for every one of them stays under the cap, there is nothing to count (a connect is
    # then no walk over the viewer's other connections, thousands of them in the bench).
    if (
        len(held) * settings.GRAPHQL_WS_MAX_SUBSCRIPTIONS
        < settings.GRAPHQL_WS_MAX_SUBSCRIPTIONS_PER_USER
    ):
        return None
    running = sum(c.open_operations() for c in held)
    if running >= settings.GRAPHQL_WS_MAX_SUBSCRIPTIONS_PER_USER:
        return (
            f"You already run {settings.GRAPHQL_WS_MAX_SUBSCRIPTIONS_PER_USER} subscriptions "
            "across your connections: complete one before starting another."
        )
    return None


class Coalesced:
    """One call at a time per key, shared: a caller gets the result of a call that began
    after it asked (the one running when it asked may have read too early), so callers
    asking while one runs share the next one. A burst of N askers costs two calls, not N,
    and no asker gets an answer older than its question."""

    def __init__(self, call: Callable[[Any], Awaitable[Any]]):
        self._call = call
        self._running: dict[Any, asyncio.Future] = {}
        self._queued: dict[Any, asyncio.Future] = {}

    async def __call__(self, key: Any) -> Any:
        if key not in self._running:
            future = self._start(key)
        else:
            future = self._queued.get(key)
            if future is None:
                future = self._queued[key] = asyncio.get_running_loop().create_future()
        return await asyncio.shield(future)  # one asker going away cancels nobody's answer

    def _start(self, key: Any) -> asyncio.Future:
        running = self._running[key] = asyncio.ensure_future(self._call(key))
        running.add_done_callback(lambda done: self._finished(key, done))
        return running

    def _finished(self, key: Any, done: asyncio.Future) -> None:
        del self._running[key]
        if not done.cancelled():
            done.exception()  # retrieved: each asker sees it raised
        queued = self._queued.pop(key, None)
        if queued is None:
            return
        following = self._start(key)

        def relay(finished: asyncio.Future) -> None:
            if queued.done():
                return
            if finished.cancelled():
                queued.cancel()
            elif finished.exception() is not None:
                queued.set_exception(finished.exception())
            else:
                queued.set_result(finished.result())

        following.add_done_callback(relay)


async def _access_refusal(credentials: "Credentials") -> str | None:
    return await database_sync_to_async(access_refusal)(
        user_id=credentials.user_id,
        token_id=credentials.token_id,
        session_key=credentials.session_key,
    )


_refusals = Coalesced(_access_refusal)


@dataclass(frozen=True)
class Credentials:
    """What a connection authenticated with: the user, and the token, else the session."""

    user_id: int
    token_id: int | None
    session_key: str | None = None
    expires_at: datetime | None = None  # a job token's: short-lived, re-checked right then

    async def refusal(self) -> str | None:
        """Why the connection may no longer act (the database's word, read after this was
        asked, once for every connection that asks with the same credentials meanwhile), or
        None."""
        return await _refusals(self)

    def watch(self, refused: Callable[[str], None]) -> "AccessWatch":
        """Calls `refused(reason)` once the credentials no longer hold; see AccessWatch."""
        return _AccessWatch.join(self, refused)

    async def until_refused(self) -> str:
        """Wait until the credentials no longer hold, and say why."""
        refused = asyncio.get_running_loop().create_future()
        watch = self.watch(lambda reason: refused.done() or refused.set_result(reason))
        try:
            return await refused
        finally:
            watch.cancel()

    def _next_check(self) -> float:
        """Seconds until the next check: the periodic one, or the token's expiry if sooner."""
        if self.expires_at is None:
            return settings.GRAPHQL_WS_ACCESS_RECHECK
        until_expiry = (self.expires_at - timezone.now()).total_seconds() + 0.05
        return max(0.05, min(settings.GRAPHQL_WS_ACCESS_RECHECK, until_expiry))


class AccessWatch(Protocol):
    def cancel(self) -> None: ...


class _AccessWatch:
    """Every open connection with the same credentials watched by one task: checked at each
    access change of the user, and every GRAPHQL_WS_ACCESS_RECHECK seconds (expiry; a signal
    lost while Redis reconnected). Subscribed before its first check, and checked again
    after each connection joined, so no change slips by any of them; a connection costs a
    callback here, not a task, a subscription and a check each."""

    _watches: ClassVar[dict[Credentials, "_AccessWatch"]] = {}

    def __init__(self, credentials: Credentials):
        self.credentials = credentials
        self.holders: dict[object, Callable[[str], None]] = {}
        self.joined = asyncio.Event()  # a connection joined since the last check began
        self.task = asyncio.get_running_loop().create_task(self._run())
        self.task.add_done_callback(self._stopped)

    @classmethod
    def join(cls, credentials: Credentials, refused: Callable[[str], None]) -> "_Held":
        watch = cls._watches.get(credentials)
        if watch is None or watch.task.done():
            watch = cls._watches[credentials] = cls(credentials)
        held = _Held(watch)
        watch.holders[held] = refused
        watch.joined.set()
        return held

    def leave(self, held: "_Held") -> None:
        self.holders.pop(held, None)
        if not self.holders and not self.task.done():
            self.task.cancel()
            if self._watches.get(self.credentials) is self:
                del self._watches[self.credentials]

    async def _run(self) -> None:
        channel = access_channel(self.credentials.user_id)
        async with event_hub().subscribe(channel, signals=True) as changes:
            while True:
                self.joined.clear()
                refusal = await self.credentials.refusal()
                if refusal is not None:
                    break
                if self.joined.is_set():
                    continue  # joined during the check: it may have read before they came
                change = asyncio.ensure_future(changes.get())
                joined = asyncio.ensure_future(self.joined.wait())
                try:
                    await asyncio.wait(
                        [change, joined],
                        timeout=self.credentials._next_check(),
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    for waiting in (change, joined):
                        waiting.cancel()
        if self._watches.get(self.credentials) is self:
            del self._watches[self.credentials]
        holders, self.holders = self.holders, {}
        for refused in holders.values():
            refused(refusal)

    def _stopped(self, task: asyncio.Task) -> None:
        if self._watches.get(self.credentials) is self:
            del self._watches[self.credentials]
        if task.cancelled() or task.exception() is None:
            return
        logger.error("stream.access_watch_failed", exc_info=task.exception())
        # Its connections cannot be vouched for any more: each ends as refused.
        holders, self.holders = self.holders, {}
        for refused in holders.values():
            refused("Access could not be checked")


class _Held:
    """One connection's place in an access watch."""

    __slots__ = ("_watch",)

    def __init__(self, watch: _AccessWatch):
        self._watch = watch

    def cancel(self) -> None:
        self._watch.leave(self)


def credentials_of(user: Any, token_id: int | None, session: Any) -> Credentials:
    """A connection's credentials: its token's when it sent one, else its session's; a job
    token's are its owner's, watched until the token expires."""
    session_key = getattr(session, "session_key", None) if token_id is None else None
    expires_at = user.expires_at if isinstance(user, JobTokenViewer) else None
    return Credentials(
        user_id=credential_holder_id(user),
        token_id=token_id,
        session_key=session_key,
        expires_at=expires_at,
    )


def coded_result(message: str, code: str) -> ExecutionResult:
    """A stream's last result: an error a client reads by its code."""
    return ExecutionResult(data=None, errors=[GraphQLError(message, extensions={"code": code})])


class _HTTPStream:
    """One SSE or multipart stream: one subscription."""

    def open_operations(self) -> int:
        return 1


@dataclass(frozen=True)
class Framing:
    """How one HTTP stream writes its messages: a result as its transport's message (SSE
    event, multipart part), a coded error as one, the completion, and the heartbeat sent after
    `heartbeat_interval` quiet seconds (first of all with `heartbeat_first`)."""

    next: Callable[[Any], Awaitable[bytes]]
    coded: Callable[[ExecutionResult], Awaitable[bytes]]  # a coded error: no event's label
    complete: bytes
    heartbeat: bytes
    heartbeat_interval: float
    heartbeat_first: bool
    # A shared frame the hub writes as this stream's message (its SSE id, if labelled), or
    # None until the stream's own first message told what surrounds the data.
    shared: Callable[[list, int | None], bytes | None] | None = None


class _HTTPWriter:
    """How the hub writes an HTTP stream's frames: straight into the queue its response
    reads, when that is empty (else the response has not taken the last one yet: the
    subscription's own path keeps the latest state for it)."""

    __slots__ = ("_build", "_queue", "open")

    def __init__(self, queue: asyncio.Queue, build: Callable[[list, int | None], bytes | None]):
        self._queue = queue
        self._build = build
        self.open = True

    def write(self, frame: list, seq: int | None) -> bool:
        if not self.open or not self._queue.empty():
            return False
        message = self._build(frame, seq)
        if message is None:
            return False
        self._queue.put_nowait((_MESSAGE, message))
        return True


# What the pump hands the response: a message; the last message (the stream completes after
# it); the end of the results (it completes); an error raised on the way.
_MESSAGE, _LAST, _END, _RAISED = range(4)


async def guarded_stream(
    results: AsyncIterator[Any], *, key: str, credentials: Credentials, framing: Framing
) -> AsyncIterator[bytes]:
    """An HTTP stream's messages, its results held to the rules a websocket's obey: refused
    with TOO_MANY_SUBSCRIPTIONS over the viewer's cap, and ended with ACCESS_REVOKED (then
    completed) as soon as its credentials no longer hold; heartbeats while it is quiet.

    One task (the pump) reads the results and frames each as it comes; the response takes
    them from a queue of one (a slow client holds the pump back, and the subscription's
    mailbox keeps only the latest state meanwhile). A revocation stops the pump, drops what
    it framed but the client was not sent, and sends the coded error last. An event thus
    costs the pump's wake-up and the response's, whatever the heartbeat and the access
    watch do: they add nothing per event.
    """
    refusal = subscriptions_refusal(key)
    if refusal is not None:
        yield await framing.coded(coded_result(refusal, TOO_MANY_SUBSCRIPTIONS))
        yield framing.complete
        return
    stream = _HTTPStream()
    hold(key, stream)
    queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue(maxsize=1)
    writer = _HTTPWriter(queue, framing.shared) if framing.shared is not None else None

    async def pump() -> None:
        frame_writer.set(writer)  # the subscription runs in this task: the hub writes here
        try:
            async for result in results:
                await queue.put((_MESSAGE, await framing.next(result)))
        except Exception as error:  # noqa: BLE001  (raised again in the response's task)
            await queue.put((_RAISED, error))
        else:
            await queue.put((_END, None))

    async def watch() -> None:
        try:
            reason = await credentials.until_refused()
            logger.info(
                "stream.access_ended", extra={"user_id": credentials.user_id, "reason": reason}
            )
            last = (_LAST, await framing.coded(coded_result(reason, ACCESS_REVOKED)))
        except Exception as error:  # noqa: BLE001  (raised again in the response's task)
            last = (_RAISED, error)
        if writer is not None:
            writer.open = False  # nor does the hub
        pumping.cancel()  # it puts nothing more: a cancelled put leaves the queue as it was
        while not queue.empty():
            queue.get_nowait()
        queue.put_nowait(last)

    pumping = asyncio.create_task(pump())
    watching = asyncio.create_task(watch())
    try:
        if framing.heartbeat_first:
            yield framing.heartbeat
        while True:
            try:
                async with asyncio.timeout(framing.heartbeat_interval):
                    kind, value = await queue.get()
            except TimeoutError:
                yield framing.heartbeat
                continue
            if kind == _RAISED:
                raise value
            if kind == _END:
                break
            yield value
            if kind == _LAST:
                break
        yield framing.complete
    finally:
        if writer is not None:
            writer.open = False
        release(key, stream)
        for task in (watching, pumping):
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
        with suppress(RuntimeError):
            await results.aclose()
