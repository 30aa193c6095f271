"""Sandbox stand-in for the CRM API that customersSync reads.

GET /customers?page=&page_size=&updated_since= answers a page of customers, oldest
change first, with the total `count` and the `next` page number (null on the last).
The customers are generated from a few numbers, not stored: how many, a `revision` (each
one changes every customer, as a bulk edit in the CRM would) and which of them are
malformed. Those numbers live in Redis, so that tests and demos change them at run time.
To try failure, `crm_sandbox_throttle(page, times)` makes the next `times` requests for
that page answer 429 with Retry-After, as a CRM past its API limit does.
"""

import time
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.http import HttpRequest, JsonResponse
from django.urls import path
from django.utils.dateparse import parse_datetime

from domains.infra.redis import sync_client
from domains.sandbox.standin import bearer_required

CONFIG_KEY = "sandbox:crm:config"
MAX_PAGE_SIZE = 1_000
_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
_FIRST = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia")
_LAST = ("Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen", "Thompson")
_COMPANIES = ("Initech", "Globex", "Umbrella", "Hooli", "Vandelay", "Stark", "Wayne")


def crm_sandbox_configure(
    *, count: int, malformed: tuple[int, ...] = (), revise: bool = False, latency_ms: int = 0
) -> dict:
    """Set how many customers the CRM holds and which are malformed; `revise` edits all;
    `latency_ms` makes every page that much slower to answer, as a distant CRM is."""
    client = sync_client()
    config = _config()
    revision = config["revision"] + 1 if revise else config["revision"]
    revised_at = datetime.now(UTC).isoformat() if revise else config["revised_at"].isoformat()
    client.hset(
        CONFIG_KEY,
        mapping={
            "count": count,
            "malformed": ",".join(map(str, malformed)),
            "revision": revision,
            "revised_at": revised_at,
            "latency_ms": latency_ms,
        },
    )
    return _config()


def crm_sandbox_throttle(*, page: int, times: int = 1) -> None:
    sync_client().set(_throttle_key(page), times, ex=3600)


def _throttle_key(page: int) -> str:
    return f"sandbox:crm:throttle:{page}"


def _config() -> dict:
    raw = sync_client().hgetall(CONFIG_KEY)
    return {
        "count": int(raw.get("count", settings.SANDBOX_CRM_CUSTOMERS)),
        "malformed": {int(i) for i in raw.get("malformed", "").split(",") if i},
        "revision": int(raw.get("revision", 0)),
        "revised_at": datetime.fromisoformat(raw["revised_at"]) if "revised_at" in raw else _EPOCH,
        "latency_ms": int(raw.get("latency_ms", 0)),
    }


def _customer(index: int, config: dict) -> dict:
    """Customer `index` as the CRM's API shows it; the oldest change comes first."""
    revision = config["revision"]
    updated_at = config["revised_at"] - timedelta(seconds=config["count"] - index)
    customer = {
        "id": f"crm-{index:07d}",
        "email": f"customer{index}@crm.example.com",
        "firstName": _FIRST[index % len(_FIRST)],
        "lastName": _LAST[index % len(_LAST)],
        "phone": f"+1555{index:07d}",
        "company": _COMPANIES[index % len(_COMPANIES)] + (f" (rev {revision})" if revision else ""),
        "updatedAt": updated_at.isoformat(),
    }
    if index in config["malformed"]:
        customer.update(email="not an email", updatedAt="last tuesday")
    return customer


@bearer_required(lambda: settings.SANDBOX_CRM_API_KEY)
def customers(request: HttpRequest) -> JsonResponse:
    try:
        page = max(1, int(request.GET.get("page", 1)))
        page_size = min(MAX_PAGE_SIZE, max(1, int(request.GET.get("page_size", 100))))
    except ValueError:
        return JsonResponse({"error": "page and page_size are numbers"}, status=400)
    throttle = _throttle_key(page)
    if sync_client().exists(throttle) and sync_client().decr(throttle) >= 0:
        response = JsonResponse({"error": "API limit reached"}, status=429)
        response["Retry-After"] = "1"
        return response
    config = _config()
    time.sleep(config["latency_ms"] / 1000)  # a sync view: the server runs it in a thread
    first = 0
    if since := request.GET.get("updated_since"):
        since_at = parse_datetime(since)
        if since_at is None:
            return JsonResponse({"error": "updated_since is not an ISO 8601 time"}, status=400)
        # Customer i changed at revised_at - (count - i) s: the ones after `since` are a tail.
        behind = (config["revised_at"] - since_at).total_seconds()
        first = max(0, min(config["count"], config["count"] - int(behind)))
    matching = config["count"] - first
    start = first + (page - 1) * page_size
    end = min(config["count"], start + page_size)
    return JsonResponse(
        {
            "count": matching,
            "page": page,
            "next": page + 1 if end < config["count"] else None,
            "results": [_customer(i, config) for i in range(start, end)],
        }
    )


urlpatterns = [path("customers", customers, name="sandbox-crm-customers")]
