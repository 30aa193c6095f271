"""The supplier catalog's client, on the shared resilient client with a global rate limit."""

from collections.abc import Iterator
from functools import cache

from django.conf import settings

from domains.integrations.client import Breaker, RateLimit, ResilientClient

SERVICE = "catalog"


@cache
def catalog_client() -> ResilientClient:
    return ResilientClient(
        service=SERVICE,
        base_url=settings.CATALOG_API_URL,
        api_key=settings.CATALOG_API_KEY,
        timeout=(3.05, 10),
        rate_limit=RateLimit(
            per_minute=settings.CATALOG_RATE_PER_MINUTE, burst=settings.CATALOG_RATE_BURST
        ),
        breaker=Breaker(failure_threshold=5, reset_timeout=30),
    )


def supplier_product(sku: str) -> dict:
    return catalog_client().get(f"/products/{sku}")


def supplier_skus() -> Iterator[str]:
    """Every SKU the supplier lists, page by page."""
    page: int | None = 1
    while page is not None:
        body = catalog_client().get("/products", params={"page": page})
        yield from (item["sku"] for item in body["results"])
        page = body["next"]
