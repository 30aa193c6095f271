"""Celery tasks for catalog: one product, or the whole supplier catalog as a chord.

Every call to the supplier goes through the catalog client's global rate limit; a call
over the limit (or answered 429) comes back as RetryLater and the task is rescheduled
after the wait it names, so no worker sleeps on the limit.
"""

import logging

from celery import Task, chord, shared_task
from celery.exceptions import Ignore
from django.conf import settings

from domains.catalog.client import supplier_skus
from domains.catalog.services import CatalogError, product_sync
from domains.integrations.client import RetryLater
from domains.jobs.models import ACTIVE_STATUSES, Job
from domains.jobs.progress import JobReporter
from domains.redis import sync_client
from workers.base import JobTask
from workers.chords import hand_over

logger = logging.getLogger(__name__)


@shared_task(
    bind=True,
    base=JobTask,
    name="catalog.sync_product",
    max_retries=settings.CATALOG_SYNC_MAX_RETRIES,
)
def sync_product(self: JobTask, *, job_id: int, sku: str) -> dict:
    try:
        product = product_sync(sku=sku)
    except RetryLater as busy:
        raise self.retry(exc=busy, countdown=busy.retry_after) from None
    return {"sku": product.sku, "synced": 1}


@shared_task(
    bind=True,
    base=JobTask,
    name="catalog.sync_all",
    max_retries=settings.CATALOG_SYNC_MAX_RETRIES,
)
def sync_all(self: JobTask, *, job_id: int) -> None:
    """List the supplier's SKUs, then become a chord: one task per SKU, then the tally."""
    try:
        skus = list(supplier_skus())
    except RetryLater as busy:
        raise self.retry(exc=busy, countdown=busy.retry_after) from None
    self.reporter.progress(stage="syncing", current=0, total=len(skus), force=True)
    sync_client().delete(_done_key(job_id))
    header = [sync_item.s(sku, job_id=job_id, total=len(skus)) for sku in skus]
    finish = sync_all_finish.s(job_id=job_id)
    hand_over(chord(header, finish.on_error(sync_all_failed.s(job_id=job_id))))


def _done_key(job_id: int) -> str:
    return f"catalog:sync:{job_id}:done"


def _job_reporter(job_id: int) -> JobReporter | None:
    job = Job.objects.filter(pk=job_id, status__in=ACTIVE_STATUSES).first()
    return JobReporter(job) if job else None


@shared_task(
    bind=True,
    name="catalog.sync_item",
    acks_late=True,
    max_retries=settings.CATALOG_SYNC_MAX_RETRIES,
)
def sync_item(self: Task, sku: str, *, job_id: int, total: int) -> dict:
    try:
        product_sync(sku=sku)
        outcome = {"sku": sku, "synced": True}
    except RetryLater as busy:
        raise self.retry(exc=busy, countdown=busy.retry_after) from None
    except CatalogError as refused:
        outcome = {"sku": sku, "synced": False, "error": refused.message}
    done = sync_client().incr(_done_key(job_id))
    sync_client().expire(_done_key(job_id), 86400)
    reporter = _job_reporter(job_id)
    if reporter is not None:
        reporter.progress(current=min(done, total), total=total)
    return outcome


@shared_task(name="catalog.sync_all_finish", acks_late=True)
def sync_all_finish(outcomes: list[dict], *, job_id: int) -> None:
    reporter = _job_reporter(job_id)
    if reporter is None:
        raise Ignore
    failed = [o for o in outcomes if not o["synced"]]
    reporter.succeeded({"synced": len(outcomes) - len(failed), "failed": failed})


@shared_task(name="catalog.sync_all_failed", acks_late=True)
def sync_all_failed(failed_task_id: str, *, job_id: int) -> None:
    reporter = _job_reporter(job_id)
    if reporter is not None:
        reporter.failed("The catalog sync stopped: a product could not be fetched.")
    logger.error("catalog.sync_failed", extra={"job_id": job_id, "task": failed_task_id})
