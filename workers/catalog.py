"""Celery tasks for catalog: one product, or the whole supplier catalog as a chord.

Every call to the supplier goes through the catalog client's global rate limit; a call
over the limit (or answered 429) comes back as RetryLater and the task is rescheduled
after the wait it names (the kit's one retry policy), so no worker sleeps on the limit.
"""

import logging

from celery import shared_task
from django.conf import settings

from domains.catalog.client import supplier_skus
from domains.catalog.errors import CatalogError
from domains.catalog.services import product_sync
from domains.jobs.parts import job_part_done
from domains.jobs.tasks import JobTaskName
from workers.base import JobPartTask, JobTask
from workers.chords import job_finish, start_chord

logger = logging.getLogger(__name__)


@shared_task(
    bind=True,
    base=JobTask,
    name=JobTaskName.CATALOG_SYNC_PRODUCT,
    max_retries=settings.CATALOG_SYNC_MAX_RETRIES,
)
def sync_product(self: JobTask, *, job_id: int, sku: str) -> dict:
    product = product_sync(sku=sku)
    return {"sku": product.sku, "synced": 1}


@shared_task(
    bind=True,
    base=JobTask,
    name=JobTaskName.CATALOG_SYNC_ALL,
    max_retries=settings.CATALOG_SYNC_MAX_RETRIES,
)
def sync_all(self: JobTask, *, job_id: int) -> None:
    """List the supplier's SKUs, then become a chord: one task per SKU, then the tally."""
    skus = list(supplier_skus())
    self.reporter.progress(stage="syncing", current=0, total=len(skus), force=True)
    start_chord(
        job_id=job_id,
        parts=[sync_item.s(sku, job_id=job_id, total=len(skus)) for sku in skus],
        body=sync_all_finish.s(job_id=job_id),
    )


@shared_task(
    bind=True,
    base=JobPartTask,
    name="catalog.sync_item",
    max_retries=settings.CATALOG_SYNC_MAX_RETRIES,
)
def sync_item(self: JobPartTask, sku: str, *, job_id: int, total: int) -> dict:
    try:
        product_sync(sku=sku)
        outcome = {"sku": sku, "synced": True}
    except CatalogError as refused:
        outcome = {"sku": sku, "synced": False, "error": refused.message}
    done = job_part_done(job_id=job_id, part_id=sku)
    self.reporter.progress(current=min(done, total), total=total)
    return outcome


@shared_task(bind=True, base=JobPartTask, name="catalog.sync_all_finish")
def sync_all_finish(self: JobPartTask, outcomes: list[dict], *, job_id: int) -> None:
    failed = [o for o in outcomes if not o["synced"]]
    job_finish(job_id, {"synced": len(outcomes) - len(failed), "failed": failed})
