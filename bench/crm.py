"""CRM sync throughput: customers upserted per second by the sync, against a bare upsert.

The sync reads 10,000 customers from the sandbox CRM over real HTTP (a uvicorn server in
its own process), validates them, upserts them by external id and checkpoints its SyncLog
page by page. The baseline, in the same run, is one `bulk_create(update_conflicts=True)`
of the same rows already in memory: no HTTP, no validation, no change detection. Both are
timed creating every row, then updating every row (after the CRM edits them all).

    .venv/bin/python bench/crm.py [--customers 10000] [--repeat 3]
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from django.conf import settings
from django.utils import timezone

from bench import harness
from config.embedded_redis import free_port
from domains.crm.client import CrmClient
from domains.crm.models import Customer, SyncLog
from domains.crm.services import customer_fields, customers_bulk_upsert, customers_sync_run
from domains.jobs.models import JobKind
from domains.jobs.reporter import JobReporter
from domains.jobs.services import job_create
from domains.sandbox.crm import crm_sandbox_configure
from testbed.stack import Server


def _sync(client: CrmClient) -> float:
    job = job_create(kind=JobKind.CUSTOMER_SYNC, owner=None)
    sync_log = SyncLog.objects.create(kind="full", job=job)
    started = time.perf_counter()
    sync_log = customers_sync_run(sync_log=sync_log, reporter=JobReporter(job), client=client)
    elapsed = time.perf_counter() - started
    assert sync_log.errors == 0
    return elapsed


def _bulk_upsert(client: CrmClient) -> float:
    records = [r for page in client.customer_pages(updated_since=None) for r in page.records]
    now = timezone.now()
    rows = []
    for record in records:
        external_id, fields = customer_fields(record)
        rows.append(Customer(external_id=external_id, synced_at=now, **fields))
    started = time.perf_counter()
    customers_bulk_upsert(rows)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    port = free_port()
    server = Server(port)
    settings.CRM_BASE_URL = f"http://127.0.0.1:{port}/sandbox/crm"
    settings.CRM_RATE_PER_MINUTE = 1_000_000  # measure the sync, not the CRM's API limit
    client = CrmClient()
    n = args.customers
    created, updated, base_created, base_updated = [], [], [], []
    try:
        for _ in range(args.repeat):
            crm_sandbox_configure(count=n, revise=True)
            Customer.objects.all().delete()
            base_created.append(_bulk_upsert(client))
            Customer.objects.all().delete()
            created.append(_sync(client))
            crm_sandbox_configure(count=n, revise=True)  # the CRM edits every customer
            updated.append(_sync(client))
            base_updated.append(_bulk_upsert(client))
            assert Customer.objects.count() == n
    finally:
        server.stop()
    print(
        f"CRM sync of {n:,} customers ({settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]}, page size {settings.CRM_PAGE_SIZE}, median of {args.repeat}):"
    )
    print(
        harness.row(
            "creating: upserts/s",
            n / harness.median(created),
            n / harness.median(base_created),
            "/s",
        )
    )
    print(
        harness.row(
            "updating: upserts/s",
            n / harness.median(updated),
            n / harness.median(base_updated),
            "/s",
        )
    )
    print("  (ratio = sync / bare bulk upsert; target >= 0.5x)")


if __name__ == "__main__":
    main()
