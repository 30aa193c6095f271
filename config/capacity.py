"""Bounded work per server process: a request either gets its turn and a database
connection in time, or answers at once with a coded "try again" (HTTP 503), having done
nothing. Never a 500, never half a write.

- `RequestGate` (ASGI, around Django): at most SERVER_MAX_CONCURRENT_REQUESTS HTTP
  requests are inside Django at once. Django runs each request's sync code on a thread of
  its own, so this bounds those threads; the rest wait in the event loop, which costs no
  thread, for up to SERVER_QUEUE_TIMEOUT seconds. It also bounds the event loop's
  default executor (sync code that async views run elsewhere) to ASGI_THREADS. A process
  then needs at most SERVER_MAX_CONCURRENT_REQUESTS + ASGI_THREADS connections, which
  DB_POOL_MAX_SIZE is sized to cover (config/settings.py). A subscription streamed over
  HTTP (SSE, multipart) holds its slot only until its response starts: from then on it
  waits on the event loop with no thread and no connection (schema/views.py), capped per
  viewer like websocket subscriptions.
- `DatabaseConnectionFirst` (Django middleware): takes the request's pooled connection
  before any other code runs, so that a pool that stays exhausted (or a database that
  refuses clients) is answered before any row is read or written. The connection stays
  the request's until it ends (Django returns it to the pool then).
"""

import asyncio
import json
import logging
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.db import DatabaseError, connection
from django.http import HttpResponse

from domains.errors import ServiceUnavailable
from domains.infra.availability import unavailable_service
from domains.infra.log_context import request_id_var

logger = logging.getLogger(__name__)

# Liveness must not depend on the database; readiness reports it as a value.
_WITHOUT_DATABASE = ("/healthz", "/readyz")


def unavailable_body(request_id: str | None = None) -> bytes:
    """A GraphQL-shaped error, so that a GraphQL client reads its code like any other."""
    extensions = {"code": ServiceUnavailable.code}
    if request_id:
        extensions["requestId"] = request_id
    return json.dumps(
        {
            "data": None,
            "errors": [{"message": ServiceUnavailable.message, "extensions": extensions}],
        }
    ).encode()


class DatabaseConnectionFirst:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not request.path.startswith(_WITHOUT_DATABASE):
            try:
                connection.ensure_connection()
            except DatabaseError as error:
                service = unavailable_service(error) or "database"
                logger.warning(
                    "request.service_unavailable",
                    extra={"path": request.path, "service": service, "error": str(error)},
                )
                return HttpResponse(
                    unavailable_body(request_id_var.get()),
                    status=503,
                    content_type="application/json",
                    headers={"Retry-After": "1"},
                )
        return self.get_response(request)


class RequestGate:
    def __init__(self, app, limit: int | None = None, wait: float | None = None):
        self.app = app
        self.limit = limit or settings.SERVER_MAX_CONCURRENT_REQUESTS
        self.wait = settings.SERVER_QUEUE_TIMEOUT if wait is None else wait
        self._slots: asyncio.Semaphore | None = None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"].startswith(_WITHOUT_DATABASE):
            return await self.app(scope, receive, send)
        if self._slots is None:  # made on the server's loop, at the first request
            self._slots = asyncio.Semaphore(self.limit)
            asyncio.get_running_loop().set_default_executor(
                ThreadPoolExecutor(settings.ASGI_THREADS, thread_name_prefix="asgi")
            )
        try:
            await asyncio.wait_for(self._slots.acquire(), self.wait)
        except TimeoutError:
            logger.warning(
                "request.queue_timeout", extra={"path": scope["path"], "limit": self.limit}
            )
            await _send_unavailable(send)
            return
        held = True

        def release() -> None:
            nonlocal held
            if held:
                held = False
                self._slots.release()

        async def send_releasing_streams(message) -> None:
            if message["type"] == "http.response.start" and _is_stream(message):
                release()
            await send(message)

        try:
            await self.app(scope, receive, send_releasing_streams)
        finally:
            release()


_STREAM_TYPES = (b"text/event-stream", b"multipart/mixed")


def _is_stream(start: dict) -> bool:
    # Header names keep the case the application gave them (Django's: "Content-Type").
    content_type = next(
        (value for name, value in start.get("headers", ()) if name.lower() == b"content-type"),
        b"",
    )
    return content_type.startswith(_STREAM_TYPES)


async def _send_unavailable(send) -> None:
    body = unavailable_body()
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", b"1"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
