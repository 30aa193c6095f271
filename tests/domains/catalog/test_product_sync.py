"""productSync and productsSyncAll: staff only, through the catalog client, whose rate
limit binds every worker process together."""

import time
from collections import Counter

import httpx
import pytest
from django.conf import settings

from domains.catalog.models import Product
from domains.jobs.models import Job, JobStatus
from domains.sandbox.catalog import product_data
from domains.sandbox.standin import recorded_calls
from testbed.stack import kill_running, start_worker
from testbed.waiting import job_finished, wait_until
from tests.fixtures.commerce import COMMERCE_ENV
from tests.fixtures.redis import job_terminal_statuses

pytestmark = pytest.mark.e2e

SYNC = "mutation($sku: String!) { productSync(sku: $sku) { job { id kind } errors { code } } }"
SYNC_ALL = "mutation { productsSyncAll { job { id kind } errors { code } } }"
RATE_PER_SECOND = int(COMMERCE_ENV["CATALOG_RATE_PER_MINUTE"]) / 60
BURST = int(COMMERCE_ENV["CATALOG_RATE_BURST"])
CATALOG_SIZE = int(COMMERCE_ENV["SANDBOX_CATALOG_SIZE"])


def test_staff_sync_one_product_from_the_supplier(shop, staff_user):
    started = shop.client(staff_user).data(SYNC, {"sku": "SUP-00007"})["productSync"]

    job = job_finished(Job.objects.get().pk)
    product = Product.objects.get(sku="SUP-00007")
    expected = product_data("SUP-00007")
    assert started["errors"] == []
    assert job.status == JobStatus.SUCCESS
    assert (product.name, str(product.price), product.category.name) == (
        expected["name"],
        expected["price"],
        expected["category"],
    )
    assert product.external_synced_at is not None
    assert product.inventory.available == 0


def test_a_sku_the_supplier_does_not_list_fails_the_job(shop, staff_user):
    shop.client(staff_user).data(SYNC, {"sku": "SUP-99999"})

    job = job_finished(Job.objects.get().pk)

    assert (job.status, job.error) == (JobStatus.FAILURE, "The supplier does not list SUP-99999.")
    assert not Product.objects.exists()


def test_only_staff_may_sync(shop, user):
    client = shop.client(user)

    refused = [client.execute(SYNC, {"sku": "SUP-00001"}), client.execute(SYNC_ALL)]

    # the staff check's one shape: the operation's top-level error, no payload
    assert [r["data"] for r in refused] == [None, None]
    assert [[e["extensions"]["code"] for e in r["errors"]] for r in refused] == [
        ["PERMISSION_DENIED"]
    ] * 2
    assert not Job.objects.exists()


def test_the_rate_limit_holds_across_four_worker_processes(shop, staff_user):
    sandbox = {"SANDBOX_BASE_URL": f"{shop.server.url}/sandbox"}
    four = start_worker("catalog-four", concurrency=4, **sandbox, **COMMERCE_ENV)
    try:
        shop.client(staff_user).data(SYNC_ALL)
        job = job_finished(Job.objects.get().pk, timeout=120)
    finally:
        four.stop()

    assert job.status == JobStatus.SUCCESS, job.error
    assert job.result == {"synced": CATALOG_SIZE, "failed": []}
    assert Product.objects.count() == CATALOG_SIZE
    times = sorted(call["at"] for call in recorded_calls("catalog"))
    assert len(times) == CATALOG_SIZE + 1  # the listing, then one call per product
    assert times[-1] - times[0] >= (len(times) - BURST) / RATE_PER_SECOND - 0.5, "paced"
    # However the calls fall, no window holds more than the rate allows plus the burst.
    for first in range(len(times)):
        for last in range(first, len(times)):
            window = times[last] - times[first]
            assert last - first + 1 <= BURST + window * RATE_PER_SECOND + 1, (first, last)


def test_a_429_from_the_supplier_reschedules_the_sync_after_retry_after(shop, staff_user):
    httpx.post(
        shop.server.url + "/sandbox/catalog/control",
        json={"throttle": 1, "retry_after": 2},
        headers={"Authorization": f"Bearer {settings.SANDBOX_CATALOG_API_KEY}"},
    )

    shop.client(staff_user).data(SYNC, {"sku": "SUP-00003"})

    job = job_finished(Job.objects.get().pk)
    calls = recorded_calls("catalog")
    assert (job.status, job.attempts) == (JobStatus.SUCCESS, 1)  # a retry is no new attempt
    assert len(calls) == 2
    assert calls[1]["at"] - calls[0]["at"] >= 2.0, "Retry-After honoured"
    assert Product.objects.filter(sku="SUP-00003").exists()


CANCEL = "mutation($id: ID!) { jobCancel(id: $id) { job { status } errors { code } } }"


def test_a_cancelled_catalog_sync_fetches_no_item_after_the_cancel(shop, staff_user):
    client = shop.client(staff_user)
    job_id = client.data(SYNC_ALL)["productsSyncAll"]["job"]["id"]
    job_pk = Job.objects.get().pk
    wait_until(lambda: (Job.objects.get(pk=job_pk).current or 0) >= 3, 60, "a few items synced")

    assert client.data(CANCEL, {"id": job_id})["jobCancel"]["errors"] == []
    cancelled_at = time.time()
    job = job_finished(job_pk, timeout=60)

    fetched_after = [
        c for c in recorded_calls("catalog") if c["at"] > cancelled_at and "/products/" in c["path"]
    ]
    assert job.status == JobStatus.CANCELLED
    # Items already being fetched when the cancel came (one per worker process) may finish.
    assert len(fetched_after) <= 2, fetched_after
    assert Product.objects.count() < CATALOG_SIZE


def _catalog_control(shop, **control) -> None:
    httpx.post(
        shop.server.url + "/sandbox/catalog/control",
        json=control,
        headers={"Authorization": f"Bearer {settings.SANDBOX_CATALOG_API_KEY}"},
    ).raise_for_status()


def test_a_worker_killed_mid_item_ends_the_sync_once_and_no_item_loops(shop, staff_user):
    _catalog_control(shop, latency=1.5)  # each product answers late: an item to kill
    shop.client(staff_user).data(SYNC_ALL)
    job_pk = Job.objects.get().pk

    kill_running("catalog.sync_item", worker="commerce-worker")
    _catalog_control(shop, latency=0)
    job = job_finished(job_pk, timeout=120)

    assert job.status == JobStatus.SUCCESS, job.error
    assert job.result == {"synced": CATALOG_SIZE, "failed": []}
    assert job_terminal_statuses(job_pk) == ["SUCCESS"], "ended once"
    fetches = Counter(c["path"] for c in recorded_calls("catalog") if "/products/" in c["path"])
    assert len(fetches) == CATALOG_SIZE
    assert max(fetches.values()) <= 2, "the killed item ran again once; nothing looped"
    assert Product.objects.count() == CATALOG_SIZE
