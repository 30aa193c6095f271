"""What every sandbox stand-in shares: bearer keys checked, JSON in and out, a call log."""

import hmac
import inspect
import json
import time
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.http import HttpRequest, JsonResponse

from domains.infra.redis import sync_client

CALL_LOG_TTL = 3600


def calls_key(service: str) -> str:
    """A Redis list of every call a stand-in received, so tests can count what arrived."""
    return f"sandbox:{service}:calls"


def record_call(service: str, request: HttpRequest, **fields: Any) -> None:
    key = calls_key(service)
    entry = json.dumps(
        {"at": time.time(), "method": request.method, "path": request.path, **fields}
    )
    pipe = sync_client().pipeline()
    pipe.rpush(key, entry)
    pipe.expire(key, CALL_LOG_TTL)
    pipe.execute()


def recorded_calls(service: str) -> list[dict[str, Any]]:
    return [json.loads(entry) for entry in sync_client().lrange(calls_key(service), 0, -1)]


def error(status: int, code: str, message: str, **headers: str) -> JsonResponse:
    response = JsonResponse({"error": {"code": code, "message": message}}, status=status)
    for name, value in headers.items():
        response[name] = value
    return response


def bearer_required(api_key: Callable[[], str]):
    """Refuse a request without `Authorization: Bearer <the stand-in's key>`, as providers do.

    Every stand-in endpoint, reads and controls included, takes its installation's key
    (settings.sandbox_key): what they hold is users' data and the switches of outages.
    """

    def refused(request: HttpRequest) -> JsonResponse | None:
        sent = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(sent, f"Bearer {api_key()}".encode()):
            return error(401, "invalid_api_key", "A valid API key is required.")
        return None

    def decorate(view):
        if inspect.iscoroutinefunction(view):

            @wraps(view)
            async def checked_async(request: HttpRequest, *args, **kwargs):
                return refused(request) or await view(request, *args, **kwargs)

            return checked_async

        @wraps(view)
        def checked(request: HttpRequest, *args, **kwargs):
            return refused(request) or view(request, *args, **kwargs)

        return checked

    return decorate


def json_body(request: HttpRequest) -> dict[str, Any] | None:
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        return None
    return body if isinstance(body, dict) else None
