"""Sandbox stand-in for the SMS and push providers.

POST /sms {to, body} and POST /push {token, title, body, data} answer like a provider
({id, status}) and record the message in Redis, where GET /sms?to= and GET /push?token=
(and tests) read what was sent. Every call carries the stand-in's API key, reads included:
what was sent holds users' numbers and messages. Some addresses misbehave on purpose, to try failure:
SMS to +15550000429 answers 429 with Retry-After, to +15550000500 answers 500; the push
token "invalid-token" is refused with 400, as a provider refuses an unregistered device.
"""

import json
import uuid

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from domains.infra.redis import sync_client
from domains.sandbox.standin import bearer_required

RATE_LIMITED_NUMBER = "+15550000429"
FAILING_NUMBER = "+15550000500"
INVALID_PUSH_TOKEN = "invalid-token"
_KEEP = 10_000  # messages kept per channel


def _key(channel: str) -> str:
    return f"sandbox:messaging:{channel}"


def sent_messages(channel: str, **match: str) -> list[dict]:
    """What the stand-in accepted on a channel ("sms" or "push"), oldest first."""
    messages = [json.loads(m) for m in sync_client().lrange(_key(channel), 0, -1)]
    return [m for m in reversed(messages) if all(m.get(k) == v for k, v in match.items())]


def _error(status: int, message: str, **headers: str) -> JsonResponse:
    response = JsonResponse({"error": message}, status=status)
    for name, value in headers.items():
        response[name] = value
    return response


def _accept(channel: str, message: dict) -> JsonResponse:
    message = {"id": f"{channel}_{uuid.uuid4().hex[:16]}", **message}
    pipe = sync_client().pipeline()
    pipe.lpush(_key(channel), json.dumps(message))
    pipe.ltrim(_key(channel), 0, _KEEP - 1)
    pipe.execute()
    return JsonResponse({"id": message["id"], "status": "queued"}, status=201)


def _payload(request: HttpRequest) -> dict | JsonResponse:
    try:
        payload = json.loads(request.body or b"{}")
    except ValueError:
        return _error(400, "body is not JSON")
    return payload if isinstance(payload, dict) else _error(400, "body is not an object")


@csrf_exempt
@require_http_methods(["GET", "POST"])
@bearer_required(lambda: settings.SANDBOX_MESSAGING_API_KEY)
def sms(request: HttpRequest) -> JsonResponse:
    if request.method == "GET":
        return JsonResponse({"results": sent_messages("sms", **request.GET.dict())})
    payload = _payload(request)
    if isinstance(payload, JsonResponse):
        return payload
    to, body = str(payload.get("to", "")), str(payload.get("body", ""))
    if not to.startswith("+") or not to[1:].isdigit() or not body:
        return _error(400, "'to' must be an E.164 number and 'body' must not be empty")
    if to == RATE_LIMITED_NUMBER:
        return _error(429, "too many messages", **{"Retry-After": "1"})
    if to == FAILING_NUMBER:
        return _error(500, "carrier unavailable")
    return _accept("sms", {"to": to, "body": body[:1600]})


@csrf_exempt
@require_http_methods(["GET", "POST"])
@bearer_required(lambda: settings.SANDBOX_MESSAGING_API_KEY)
def push(request: HttpRequest) -> JsonResponse:
    if request.method == "GET":
        return JsonResponse({"results": sent_messages("push", **request.GET.dict())})
    payload = _payload(request)
    if isinstance(payload, JsonResponse):
        return payload
    token = str(payload.get("token", ""))
    if not token or token == INVALID_PUSH_TOKEN:
        return _error(400, "unregistered device token")
    return _accept(
        "push",
        {
            "token": token,
            "title": str(payload.get("title", "")),
            "body": str(payload.get("body", "")),
            "data": payload.get("data") or {},
        },
    )


urlpatterns = [path("sms", sms, name="sandbox-sms"), path("push", push, name="sandbox-push")]
