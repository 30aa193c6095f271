"""The CRM's customers API, read through the resilient client."""

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings

from domains.integrations.client import Breaker, RateLimit, ResilientClient


@dataclass(frozen=True)
class CustomerPage:
    number: int
    count: int  # customers matching the query, over all pages
    records: list[dict]
    next: int | None


class CrmClient:
    def __init__(self, http: ResilientClient | None = None):
        self.http = http or ResilientClient(
            service="crm",
            base_url=settings.CRM_BASE_URL,
            api_key=settings.CRM_API_KEY,
            rate_limit=RateLimit(per_minute=settings.CRM_RATE_PER_MINUTE, burst=10),
            breaker=Breaker(failure_threshold=5, reset_timeout=30),
        )

    def customer_pages(
        self, *, updated_since: datetime | None, first_page: int = 1, page_size: int | None = None
    ) -> Iterator[CustomerPage]:
        """Pages of customers changed since `updated_since` (all, when None), in order.

        The next page is fetched while the caller works on this one, so the sync waits on
        the CRM's network round trips only once.
        """
        params = {"page_size": page_size or settings.CRM_PAGE_SIZE}
        if updated_since is not None:
            params["updated_since"] = updated_since.isoformat()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="crm-prefetch") as prefetch:
            upcoming: Future | None = prefetch.submit(self._page, params, first_page)
            while upcoming is not None:
                page = upcoming.result()
                upcoming = prefetch.submit(self._page, params, page.next) if page.next else None
                yield page

    def _page(self, params: dict, number: int) -> CustomerPage:
        answer = self.http.get("/customers", params={**params, "page": number})
        return CustomerPage(
            number=number,
            count=int(answer["count"]),
            records=list(answer["results"]),
            next=answer.get("next"),
        )
