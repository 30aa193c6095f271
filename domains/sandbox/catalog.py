"""Sandbox stand-in for the supplier catalog API that productSync reads.

The supplier lists SANDBOX_CATALOG_SIZE products (SUP-00001, ...) and also describes the
demo SKUs (SKU-<digits>); anything else is 404. Data is derived from the SKU, so a sync is
repeatable. With SANDBOX_CATALOG_PER_MINUTE set, calls beyond that many a minute get
429 with Retry-After, as a supplier's quota would answer; POST control
{"throttle": n, "retry_after": s} answers the next n calls so, and {"latency": s} makes
each product answer that late, to try it by hand.
"""

import asyncio
import hashlib
import math
import re
import time
from decimal import Decimal
from functools import wraps

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from domains.infra.redis import sync_client
from domains.sandbox.standin import bearer_required, error, json_body, record_call

SERVICE = "catalog"
PAGE_SIZE = 50
_KNOWN_SKU = re.compile(r"^(SUP-\d{5}|SKU-[A-Z]?\d{1,8})$")


def _api_key() -> str:
    return settings.SANDBOX_CATALOG_API_KEY


def _listed(sku: str) -> bool:
    if not _KNOWN_SKU.match(sku):
        return False
    return not sku.startswith("SUP-") or 1 <= int(sku[4:]) <= settings.SANDBOX_CATALOG_SIZE


def product_data(sku: str) -> dict:
    digest = int(hashlib.sha256(sku.encode()).hexdigest(), 16)
    return {
        "sku": sku,
        "name": f"Supplier item {sku}",
        "description": f"Described by the supplier for {sku}.",
        "price": str(Decimal(199 + digest % 20_000) / 100),
        "category": ("Books", "Garden", "Kitchen", "Toys")[digest % 4],
    }


THROTTLE_KEY = "sandbox:catalog:throttle"
# Takes one of the throttled calls, if any are left: returns the Retry-After to answer.
_TAKE_THROTTLED = """
local left = tonumber(redis.call('HGET', KEYS[1], 'left') or '0')
if left <= 0 then return 0 end
redis.call('HINCRBY', KEYS[1], 'left', -1)
return tonumber(redis.call('HGET', KEYS[1], 'retry_after'))
"""


def _over_quota() -> float:
    """Seconds until the quota allows another call; 0 when it allows this one."""
    throttled = sync_client().eval(_TAKE_THROTTLED, 1, THROTTLE_KEY)
    if throttled:
        return float(throttled)
    per_minute = settings.SANDBOX_CATALOG_PER_MINUTE
    if not per_minute:
        return 0
    now = time.time()
    window = int(now // 60)
    key = f"sandbox:catalog:quota:{window}"
    count = sync_client().incr(key)
    sync_client().expire(key, 120)
    return 0 if count <= per_minute else (window + 1) * 60 - now


def _guarded(view):
    @wraps(view)
    async def checked(request: HttpRequest, *args, **kwargs):
        record_call(SERVICE, request)
        wait = _over_quota()
        if wait:
            return error(
                429, "quota_exceeded", "Over quota.", **{"Retry-After": str(math.ceil(wait))}
            )
        return await view(request, *args, **kwargs)

    return checked


@require_GET
@bearer_required(_api_key)
@_guarded
async def product_list(request: HttpRequest) -> JsonResponse:
    try:
        page = max(1, int(request.GET.get("page", "1")))
    except ValueError:
        return error(400, "invalid_page", "page must be a number.")
    size = settings.SANDBOX_CATALOG_SIZE
    first = (page - 1) * PAGE_SIZE + 1
    skus = [f"SUP-{i:05d}" for i in range(first, min(size, first + PAGE_SIZE - 1) + 1)]
    return JsonResponse(
        {
            "results": [product_data(s) for s in skus],
            "next": page + 1 if first + PAGE_SIZE <= size else None,
        }
    )


@require_GET
@bearer_required(_api_key)
@_guarded
async def product_detail(request: HttpRequest, sku: str) -> JsonResponse:
    if not _listed(sku):
        return error(404, "no_such_product", "The supplier does not list this SKU.")
    latency = float(sync_client().hget(THROTTLE_KEY, "latency") or 0)
    if latency:
        await asyncio.sleep(latency)  # a slow supplier: each product answers this late
    return JsonResponse(product_data(sku))


@csrf_exempt
@require_POST
@bearer_required(_api_key)
async def control(request: HttpRequest) -> JsonResponse:
    """Answer the next `throttle` calls with 429 and Retry-After: `retry_after` seconds, and
    each product after `latency` seconds."""
    body = json_body(request) or {}
    left, retry_after = int(body.get("throttle", 0)), int(body.get("retry_after", 1))
    latency = float(body.get("latency", 0))
    sync_client().hset(
        THROTTLE_KEY, mapping={"left": left, "retry_after": retry_after, "latency": latency}
    )
    sync_client().expire(THROTTLE_KEY, 3600)
    return JsonResponse({"throttle": left, "retry_after": retry_after, "latency": latency})


urlpatterns = [
    path("products", product_list, name="sandbox-catalog-products"),
    path("products/<str:sku>", product_detail, name="sandbox-catalog-product"),
    path("control", control, name="sandbox-catalog-control"),
]
