"""Celery tasks for webhooks, on their own queue (`webhooks`): one attempt of a delivery,
and the sweep that sends again what was not sent."""

import logging

from celery import shared_task
from django.conf import settings

from domains.infra.redis import sync_client
from domains.webhooks.services import (
    WEBHOOK_DELIVER_TASK,
    WEBHOOK_SWEEP_TASK,
    webhook_deliveries_sweep,
    webhook_delivery_attempt,
)

logger = logging.getLogger(__name__)

_LOCK = "webhooks:sweep:lock"


@shared_task(
    name=WEBHOOK_DELIVER_TASK,
    ignore_result=True,
    soft_time_limit=settings.WEBHOOK_SOFT_TIME_LIMIT,
    time_limit=settings.WEBHOOK_TIME_LIMIT,
)
def deliver(*, delivery_id: int) -> str:
    return webhook_delivery_attempt(delivery_id=delivery_id)


@shared_task(name=WEBHOOK_SWEEP_TASK, ignore_result=True)
def sweep() -> dict[str, int] | None:
    """One sweep at a time (a lock in Redis that expires, so a sweeper that died holds
    nothing)."""
    lock = sync_client().lock(_LOCK, timeout=max(30, settings.WEBHOOK_SWEEP_INTERVAL * 2))
    if not lock.acquire(blocking=False):
        return None
    try:
        counts = webhook_deliveries_sweep()
    finally:
        lock.release()
    if any(counts.values()):
        logger.info("webhooks.swept", extra=counts)
    return counts
