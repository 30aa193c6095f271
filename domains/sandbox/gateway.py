"""Sandbox stand-in for the payment gateway: charge, refund and verify, with its ledger.

Behaves like a real gateway where it matters to the client: a bearer key is required;
`Idempotency-Key` is honoured (the same key and body get the stored answer again, the
same key with another body gets 422, concurrent repeats wait for the first); 5xx and
429 answers are not stored, so a retry is a fresh attempt.

Test card tokens (the charge's `source`):
  tok_visa          charged
  tok_decline       402 card_declined
  tok_timeout       hangs for SANDBOX_GATEWAY_HANG_SECONDS, then 504 (nothing charged)
  tok_rate_limited  429 with Retry-After: 1 on the key's first attempt, then charged
  tok_fail_<n>      500 on the key's first n attempts, then charged
  tok_slow          charged, then answers SANDBOX_GATEWAY_SLOW_SECONDS later
  tok_flagged       charged, but verify reports the charge "flagged" by risk checks
GET /charges?idempotency_key=K answers the charge made under K, or 404 when none was (what
a client asks when it lost the answer to a charge, like Stripe's idempotent replay).
POST control {"down": true} makes every endpoint answer 503 until {"down": false}.
"""

import asyncio
import hashlib
import json
import re
import uuid
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from functools import wraps

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from domains.infra.redis import sync_client
from domains.sandbox.models import GatewayCharge, GatewayReply
from domains.sandbox.standin import bearer_required, error, json_body, record_call

SERVICE = "gateway"
DOWN_KEY = "sandbox:gateway:down"
CHARGING_TOKENS = {"tok_visa", "tok_slow", "tok_flagged", "tok_rate_limited"}
MAX_AMOUNT = Decimal("9999999999.99")  # what the ledger's amount column holds
_FAIL_TOKEN = re.compile(r"^tok_fail_(\d+)$")

Reply = tuple[int, dict, bool]  # status, body, whether the answer is final (stored)


def _api_key() -> str:
    return settings.SANDBOX_GATEWAY_API_KEY


def _fingerprint(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _attempt_number(key: str) -> int:
    counter = f"sandbox:gateway:attempts:{key}"
    attempt = sync_client().incr(counter)
    sync_client().expire(counter, 3600)
    return attempt


def _key_lock(key: str):
    """One request per idempotency key at a time, charges and lookups alike."""
    return sync_client().lock(f"sandbox:gateway:lock:{key}", timeout=30, blocking_timeout=15)


def _idempotent(key: str, fingerprint: str, produce: Callable[[], Reply]) -> Reply:
    """The stored answer to `key`, or `produce`'s, stored when final; one request at a time."""
    with _key_lock(key):
        stored = GatewayReply.objects.filter(idempotency_key=key).first()
        if stored is not None:
            if stored.request_fingerprint != fingerprint:
                return (
                    422,
                    {
                        "error": {
                            "code": "idempotency_key_reused",
                            "message": "This key was used with other parameters.",
                        }
                    },
                    False,
                )
            return stored.status_code, {**stored.body, "replayed": True}, True
        with transaction.atomic():
            status, body, final = produce()
            if final:
                GatewayReply.objects.create(
                    idempotency_key=key,
                    request_fingerprint=fingerprint,
                    status_code=status,
                    body=body,
                )
        return status, body, final


def _charge_reply(key: str, fingerprint: str, amount: Decimal, body: dict) -> Reply:
    token = body["source"]
    failing = _FAIL_TOKEN.match(token)
    if token == "tok_rate_limited" and _attempt_number(key) == 1:
        return 429, {"error": {"code": "rate_limited", "message": "Slow down."}}, False
    if failing and _attempt_number(key) <= int(failing.group(1)):
        return 500, {"error": {"code": "internal", "message": "Something broke."}}, False
    if token == "tok_decline":
        return 402, {"error": {"code": "card_declined", "message": "The card was declined."}}, True
    if token not in CHARGING_TOKENS and not failing:
        return 400, {"error": {"code": "invalid_source", "message": "Unknown card token."}}, True
    charge = GatewayCharge.objects.create(
        idempotency_key=key,
        request_fingerprint=fingerprint,
        transaction_id=f"ch_{uuid.uuid4().hex[:24]}",
        amount=amount,
        currency=body["currency"],
        token=token,
        reference=str(body.get("reference", ""))[:64],
    )
    return 201, _charge_body(charge), True


def _charge_body(charge: GatewayCharge) -> dict:
    if charge.refunded:
        status = "refunded"
    elif charge.token == "tok_flagged":
        status = "flagged"
    else:
        status = "captured"
    return {
        "id": charge.transaction_id,
        "amount": str(charge.amount),
        "currency": charge.currency,
        "status": status,
        "reference": charge.reference,
    }


def _parsed_charge(body: dict | None) -> tuple[Decimal, dict] | None:
    if (
        not body
        or not isinstance(body.get("source"), str)
        or not isinstance(body.get("currency"), str)
    ):
        return None
    try:
        amount = Decimal(str(body.get("amount")))
    except InvalidOperation:
        return None
    if not amount.is_finite() or not 0 < amount <= MAX_AMOUNT or len(body["currency"]) != 3:
        return None
    if amount.as_tuple().exponent < -2:  # no fractions of a cent
        return None
    return amount, body


def _down() -> bool:
    return bool(sync_client().exists(DOWN_KEY))


def _served(view):
    """Log the call (tests count what arrived) and answer 503 while the gateway is down."""

    @wraps(view)
    async def serve(request: HttpRequest, *args, **kwargs) -> JsonResponse:
        key = request.headers.get("Idempotency-Key") or request.GET.get("idempotency_key", "")
        record_call(SERVICE, request, key=key)
        if _down():
            return error(503, "unavailable", "The gateway is down.")
        return await view(request, *args, **kwargs)

    return serve


def _respond(reply: Reply, **headers: str) -> JsonResponse:
    status, body, _final = reply
    response = JsonResponse(body, status=status)
    for name, value in headers.items():
        response[name] = value
    return response


@csrf_exempt
@require_http_methods(["GET", "POST"])
async def charges(request: HttpRequest) -> JsonResponse:
    """POST makes a charge; GET looks one up by the key it was made with."""
    if request.method == "GET":
        return await charge_lookup(request)
    return await charge_create(request)


@bearer_required(_api_key)
@_served
async def charge_create(request: HttpRequest) -> JsonResponse:
    key = request.headers.get("Idempotency-Key", "")
    body = json_body(request)
    if not key:
        return error(400, "idempotency_key_required", "Send an Idempotency-Key header.")
    parsed = _parsed_charge(body)
    if parsed is None:
        return error(400, "invalid_request", "Send amount > 0, a 3-letter currency, a source.")
    amount, body = parsed
    if body["source"] == "tok_timeout":
        await asyncio.sleep(settings.SANDBOX_GATEWAY_HANG_SECONDS)
        return error(504, "timeout", "The card network did not answer.")
    fingerprint = _fingerprint(body)
    reply = await sync_to_async(_idempotent, thread_sensitive=False)(
        key, fingerprint, lambda: _charge_reply(key, fingerprint, amount, body)
    )
    if reply[0] == 429:
        return _respond(reply, **{"Retry-After": "1"})
    if body["source"] == "tok_slow" and not reply[1].get("replayed"):
        # Charged and committed; the answer is slow to come back (a worker may die meanwhile).
        await asyncio.sleep(settings.SANDBOX_GATEWAY_SLOW_SECONDS)
    return _respond(reply)


def _refund_reply(transaction_id: str) -> Reply:
    charge = GatewayCharge.objects.filter(transaction_id=transaction_id).first()
    if charge is None:
        return 404, {"error": {"code": "no_such_charge", "message": "No such charge."}}, True
    if not GatewayCharge.objects.filter(pk=charge.pk, refunded=False).update(refunded=True):
        return 400, {"error": {"code": "already_refunded", "message": "Already refunded."}}, True
    return (
        201,
        {"id": f"re_{transaction_id}", "charge": transaction_id, "amount": str(charge.amount)},
        True,
    )


@csrf_exempt
@require_POST
@bearer_required(_api_key)
@_served
async def refund_create(request: HttpRequest) -> JsonResponse:
    key = request.headers.get("Idempotency-Key", "")
    body = json_body(request)
    if not key or not body or not isinstance(body.get("charge"), str):
        return error(400, "invalid_request", "Send an Idempotency-Key and the charge's id.")
    reply = await sync_to_async(_idempotent, thread_sensitive=False)(
        key, _fingerprint(body), lambda: _refund_reply(body["charge"])
    )
    return _respond(reply)


def _charge_made_under(key: str) -> GatewayCharge | None:
    # Under the key's lock: a charge still being made with this key is waited for.
    with _key_lock(key):
        return GatewayCharge.objects.filter(idempotency_key=key).first()


@bearer_required(_api_key)
@_served
async def charge_lookup(request: HttpRequest) -> JsonResponse:
    key = request.GET.get("idempotency_key", "")
    if not key:
        return error(400, "invalid_request", "Send the idempotency_key to look up.")
    charge = await sync_to_async(_charge_made_under, thread_sensitive=False)(key)
    if charge is None:
        return error(404, "no_such_charge", "No charge was made with this idempotency key.")
    return JsonResponse(_charge_body(charge))


@require_GET
@bearer_required(_api_key)
@_served
async def charge_detail(request: HttpRequest, transaction_id: str) -> JsonResponse:
    charge = await GatewayCharge.objects.filter(transaction_id=transaction_id).afirst()
    if charge is None:
        return error(404, "no_such_charge", "No such charge.")
    return JsonResponse(_charge_body(charge))


@csrf_exempt
@require_POST
@bearer_required(_api_key)
async def control(request: HttpRequest) -> JsonResponse:
    """Switch an outage on or off, to try the client's breaker by hand."""
    body = json_body(request) or {}
    if body.get("down"):
        sync_client().set(DOWN_KEY, "1", ex=3600)
    else:
        sync_client().delete(DOWN_KEY)
    return JsonResponse({"down": _down()})


urlpatterns = [
    path("charges", charges, name="sandbox-gateway-charges"),
    path("charges/<str:transaction_id>", charge_detail, name="sandbox-gateway-charge"),
    path("refunds", refund_create, name="sandbox-gateway-refunds"),
    path("control", control, name="sandbox-gateway-control"),
]
