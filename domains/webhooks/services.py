"""Webhooks: registering endpoints, writing a job end's deliveries in the end's own
transaction, and sending them by the Standard Webhooks specification.

Each delivery row is its own outbox entry: sent after commit (a task on the `webhooks`
queue, so that a slow receiver holds no job worker), sent again by the sweep when its send
was lost (the broker was down, a worker died), and each attempt claims the row with one
conditional UPDATE (domains.infra.claims), so two workers never send the same attempt. Every
attempt carries the delivery's one `webhook-id` and is signed afresh (the timestamp is the
attempt's), so receivers verify it and drop repeats.
"""

import base64
import json
import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from functools import partial
from typing import Any

import urllib3
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone
from standardwebhooks import Webhook

from domains.accounts.models import User
from domains.accounts.permissions import staff_required
from domains.errors import CommonErrorCode
from domains.infra.claims import claim_take
from domains.infra.metrics import webhook_attempts, webhook_deliveries
from domains.jobs.models import Job, JobStatus
from domains.jobs.outbox import outbox_send
from domains.notifications.emails import email_queue
from domains.webhooks.errors import WebhookError, WebhookErrorCode
from domains.webhooks.models import (
    WebhookDelivery,
    WebhookDeliveryStatus,
    WebhookEndpoint,
    WebhookEventType,
)
from domains.webhooks.targets import CHECKED_POOLS, TargetRefused, webhook_url_check

logger = logging.getLogger(__name__)

# The task that makes one attempt, and the sweep (workers/webhooks.py), sent by name.
WEBHOOK_DELIVER_TASK = "webhooks.deliver"
WEBHOOK_SWEEP_TASK = "webhooks.sweep"
ENDPOINT_DISABLED_TEMPLATE = "webhook_endpoint_disabled"

EVENT_OF_STATUS = {
    JobStatus.SUCCESS: WebhookEventType.JOB_SUCCEEDED,
    JobStatus.FAILURE: WebhookEventType.JOB_FAILED,
    JobStatus.CANCELLED: WebhookEventType.JOB_CANCELLED,
    JobStatus.TIMEOUT: WebhookEventType.JOB_TIMED_OUT,
}
# The payload's "type": JOB_TIMED_OUT -> "job.timed_out".
MESSAGE_TYPES = {event: "job." + event.removeprefix("JOB_").lower() for event in WebhookEventType}


# --- endpoints ---------------------------------------------------------------------------
def webhook_endpoint_create(
    *, viewer: User, url: str, events: Iterable[str], all_jobs: bool = False
) -> WebhookEndpoint:
    """An endpoint for the viewer's jobs (staff: every job with `all_jobs`); its secret is
    on the returned row, for the caller to show once."""
    url = url.strip()
    if len(url) > WebhookEndpoint._meta.get_field("url").max_length:
        raise WebhookError("The URL is too long.", code=WebhookErrorCode.INVALID_URL, field="url")
    try:
        chosen = sorted({WebhookEventType(event) for event in events})
    except ValueError as error:
        raise WebhookError(
            f"Unknown event: {error}", code=WebhookErrorCode.INVALID_EVENTS, field="events"
        ) from None
    if not chosen:
        raise WebhookError(
            "Choose at least one event.", code=WebhookErrorCode.INVALID_EVENTS, field="events"
        )
    if all_jobs:
        staff_required(viewer)  # an endpoint for every job is staff's
    webhook_url_check(url)  # before the transaction: resolving may take a while
    with transaction.atomic(durable=True):
        if WebhookEndpoint.objects.filter(owner=viewer).count() >= (
            settings.WEBHOOK_MAX_ENDPOINTS_PER_USER
        ):
            raise WebhookError(
                f"At most {settings.WEBHOOK_MAX_ENDPOINTS_PER_USER} endpoints per user.",
                code=WebhookErrorCode.TOO_MANY_ENDPOINTS,
            )
        endpoint = WebhookEndpoint.objects.create(
            owner=viewer, url=url, events=[str(e) for e in chosen], all_jobs=all_jobs
        )
    logger.info("webhook.endpoint_created", extra={"endpoint_id": endpoint.pk})
    return endpoint


def webhook_endpoint_delete(*, endpoint: WebhookEndpoint) -> None:
    """The endpoint and its delivery log; an attempt in flight finds its row gone."""
    endpoint.delete()
    logger.info("webhook.endpoint_deleted", extra={"endpoint_id": endpoint.pk})


# --- a job's end: its deliveries (in the end's transaction) --------------------------------
def job_global_id(job_id: int) -> str:
    """The job's id as the API gives it (a relay global ID, as schema.base.global_id makes)."""
    return base64.b64encode(f"Job:{job_id}".encode()).decode()


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None


def webhook_payload(job: Job, event: WebhookEventType) -> dict[str, Any]:
    return {
        "type": MESSAGE_TYPES[event],
        "timestamp": _iso(job.finished_at),
        "data": {
            "job": {
                "id": job_global_id(job.pk),
                "kind": job.kind,
                "status": job.status,
                "error": job.error or None,
                "result": job.result,
                "finishedAt": _iso(job.finished_at),
            }
        },
    }


def webhook_deliveries_create(job: Job, status: JobStatus) -> list[WebhookDelivery]:
    """A job end hook (domains.jobs.ending): one delivery per active endpoint that asked
    for this end, the owner's own and staff's all-jobs ones, sent once this commits."""
    event = EVENT_OF_STATUS[JobStatus(status)]
    audience = Q(all_jobs=True, owner__is_staff=True)
    if job.owner_id is not None:
        audience |= Q(owner_id=job.owner_id)
    endpoints = [
        e for e in WebhookEndpoint.objects.filter(audience, is_active=True) if event in e.events
    ]
    if not endpoints:
        return []
    payload = webhook_payload(job, event)
    now = timezone.now()
    deliveries = WebhookDelivery.objects.bulk_create(
        WebhookDelivery(endpoint=e, job=job, event_type=event, payload=payload, next_attempt_at=now)
        for e in endpoints
    )
    transaction.on_commit(partial(_created, [d.pk for d in deliveries]))
    return deliveries


def _created(delivery_ids: list[int]) -> None:
    webhook_deliveries.labels(status="created").inc(len(delivery_ids))
    for delivery_id in delivery_ids:
        if not webhook_delivery_dispatch(delivery_id=delivery_id):
            break  # the broker is down: the sweep sends them all


# --- sending -----------------------------------------------------------------------------
def webhook_delivery_dispatch(*, delivery_id: int, eta: datetime | None = None) -> bool:
    """Hand the delivery's attempt to the `webhooks` queue (at `eta`, when due later); a
    failure is logged and left to the sweep, which finds the row due and not sent."""
    if not outbox_send(
        task_name=WEBHOOK_DELIVER_TASK, kwargs={"delivery_id": delivery_id}, eta=eta
    ):
        logger.warning("webhook.send_failed", extra={"delivery_id": delivery_id})
        return False
    WebhookDelivery.objects.filter(pk=delivery_id).update(dispatched_at=eta or timezone.now())
    return True


_pool: urllib3.PoolManager | None = None


def _http() -> urllib3.PoolManager:
    """One pool per process (made after a worker's fork), whose connections go only to
    checked addresses; no proxies from the environment, no retries, no redirects."""
    global _pool
    if _pool is None:
        _pool = urllib3.PoolManager(retries=False)
        _pool.pool_classes_by_scheme = CHECKED_POOLS
    return _pool


def webhook_signed(delivery: WebhookDelivery, now: datetime) -> tuple[bytes, dict[str, str]]:
    """The body and headers of one attempt: the same body and id on every attempt, signed
    with this attempt's timestamp."""
    body = json.dumps(delivery.payload, separators=(",", ":"), default=str).encode()
    signature = Webhook(delivery.endpoint.secret).sign(delivery.webhook_id, now, body)
    return body, {
        "content-type": "application/json",
        "user-agent": "jobstream-webhooks/1",
        "webhook-id": delivery.webhook_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }


def _post(delivery: WebhookDelivery, now: datetime) -> tuple[int | None, str, str, str]:
    """One POST: (status, the body's first bytes, error, outcome). Nothing is sent to a
    target that fails its check; a redirect is an answer, not followed."""
    body, headers = webhook_signed(delivery, now)
    timeout = settings.WEBHOOK_TIMEOUT
    try:
        webhook_url_check(delivery.endpoint.url)
        response = _http().request(
            "POST",
            delivery.endpoint.url,
            body=body,
            headers=headers,
            redirect=False,
            retries=False,
            preload_content=False,
            timeout=urllib3.Timeout(connect=timeout, read=timeout),
        )
    except TargetRefused as refused:
        return None, "", refused.message, "refused"
    except urllib3.exceptions.HTTPError as error:
        return None, "", f"{type(error).__name__}: {error}"[:1000], "network_error"
    try:
        kept = response.read(settings.WEBHOOK_RESPONSE_BODY_BYTES, decode_content=True)
    except urllib3.exceptions.HTTPError:
        kept = b""  # the status is the answer; the body is only kept for the log
    finally:
        response.close()  # the rest is never read
    text = kept[: settings.WEBHOOK_RESPONSE_BODY_BYTES].decode("utf-8", "replace")
    if 200 <= response.status < 300:
        return response.status, text, "", "success"
    error = f"HTTP {response.status}"
    if 300 <= response.status < 400:
        error += " (redirects are not followed)"
    return response.status, text, error, "http_error"


def webhook_delivery_attempt(*, delivery_id: int) -> str:
    """Make the delivery's due attempt, if this run claims it: SUCCEEDED on a 2xx; else the
    next attempt after WEBHOOK_RETRY_DELAYS, then FAILED. Returns the outcome ("skipped"
    when there was nothing to do: not due, another run's, finished or deleted)."""
    now = timezone.now()
    claimed = claim_take(
        WebhookDelivery.objects.filter(pk=delivery_id, next_attempt_at__lte=now),
        free=WebhookDeliveryStatus.PENDING,
        held=WebhookDeliveryStatus.SENDING,
        expiry=settings.WEBHOOK_CLAIM_TIMEOUT,
        now=now,
        attempts=F("attempts") + 1,
    )
    if not claimed:
        return "skipped"
    delivery = WebhookDelivery.objects.select_related("endpoint__owner").get(pk=delivery_id)
    status, body, error, outcome = _post(delivery, now)
    webhook_attempts.labels(outcome=outcome).inc()
    _settle(delivery, now, status=status, body=body, error=error)
    logger.info(
        "webhook.attempted",
        extra={
            "delivery_id": delivery.pk,
            "job_id": delivery.job_id,
            "attempt": delivery.attempts,
            "outcome": outcome,
            "response_status": status,
        },
    )
    return outcome


def _settle(
    delivery: WebhookDelivery, claimed_at: datetime, *, status: int | None, body: str, error: str
) -> None:
    """Write the attempt's outcome, only over this run's own claim."""
    ours = WebhookDelivery.objects.filter(
        pk=delivery.pk, status=WebhookDeliveryStatus.SENDING, claimed_at=claimed_at
    )
    fields = {"last_response_status": status, "last_response_body": body, "last_error": error}
    now = timezone.now()
    retry_at = None
    with transaction.atomic():
        if error == "":
            settled = ours.update(
                status=WebhookDeliveryStatus.SUCCEEDED,
                delivered_at=now,
                next_attempt_at=None,
                **fields,
            )
            if settled:
                webhook_deliveries.labels(status="succeeded").inc()
                WebhookEndpoint.objects.filter(pk=delivery.endpoint_id).exclude(
                    failing_since=None
                ).update(failing_since=None)
            return
        delays = settings.WEBHOOK_RETRY_DELAYS
        if delivery.attempts <= len(delays):
            retry_at = now + timedelta(seconds=delays[delivery.attempts - 1])
            settled = ours.update(
                status=WebhookDeliveryStatus.PENDING,
                next_attempt_at=retry_at,
                dispatched_at=None,
                **fields,
            )
        else:
            settled = ours.update(
                status=WebhookDeliveryStatus.FAILED, next_attempt_at=None, **fields
            )
            if settled:
                webhook_deliveries.labels(status="failed").inc()
        if settled:
            _endpoint_failed(delivery.endpoint, now)
    if settled and retry_at is not None and retry_at - now <= settings.WEBHOOK_COUNTDOWN_MAX:
        # Soon: the broker holds it until then. Later ones wait in the row for the sweep.
        webhook_delivery_dispatch(delivery_id=delivery.pk, eta=retry_at)


def _endpoint_failed(endpoint: WebhookEndpoint, now: datetime) -> None:
    """Note that the endpoint fails; one that has failed for WEBHOOK_DISABLE_AFTER is
    disabled, its waiting deliveries failed, and its owner emailed (with this commit)."""
    WebhookEndpoint.objects.filter(pk=endpoint.pk, failing_since=None).update(failing_since=now)
    endpoint.refresh_from_db(fields=["failing_since", "is_active"])
    if endpoint.failing_since > now - settings.WEBHOOK_DISABLE_AFTER:
        return
    if not WebhookEndpoint.objects.filter(pk=endpoint.pk, is_active=True).update(
        is_active=False, disabled_at=now
    ):
        return
    days = settings.WEBHOOK_DISABLE_AFTER.days
    WebhookDelivery.objects.filter(endpoint=endpoint, status=WebhookDeliveryStatus.PENDING).update(
        status=WebhookDeliveryStatus.FAILED,
        next_attempt_at=None,
        last_error=f"The endpoint was disabled after failing for {days} days.",
    )
    owner = endpoint.owner
    email_queue(
        template=ENDPOINT_DISABLED_TEMPLATE,
        to_address=owner.email,
        recipient=owner,
        context={
            "first_name": owner.first_name,
            "url": endpoint.url,
            "days": days,
            "failing_since": endpoint.failing_since.isoformat(),
        },
    )
    logger.warning("webhook.endpoint_disabled", extra={"endpoint_id": endpoint.pk})


def webhook_delivery_retry(*, delivery: WebhookDelivery) -> WebhookDelivery:
    """One more attempt of a FAILED delivery, now, with its same webhook-id."""
    if not delivery.endpoint.is_active:
        raise WebhookError(
            "The endpoint is disabled: register it again to receive deliveries.",
            code=WebhookErrorCode.ENDPOINT_DISABLED,
        )
    with transaction.atomic(durable=True):
        retried = WebhookDelivery.objects.filter(
            pk=delivery.pk, status=WebhookDeliveryStatus.FAILED
        ).update(
            status=WebhookDeliveryStatus.PENDING,
            next_attempt_at=timezone.now(),
            dispatched_at=None,
            claimed_at=None,
        )
        if not retried:
            raise WebhookError(
                "Only a failed delivery can be retried.", code=CommonErrorCode.NOT_RETRYABLE
            )
        transaction.on_commit(partial(webhook_delivery_dispatch, delivery_id=delivery.pk))
    delivery.refresh_from_db()
    return delivery


# --- the sweep ---------------------------------------------------------------------------
def webhook_deliveries_sweep(*, now: datetime | None = None) -> dict[str, int]:
    """Send the deliveries due and not sent (their send was lost, or their wait was too
    long for the broker), sent longer than WEBHOOK_SEND_GRACE_SECONDS ago (the message was
    lost), or claimed by an attempt that died. A duplicate message claims nothing."""
    now = now or timezone.now()
    pending = WebhookDeliveryStatus.PENDING
    sent_long_ago = now - timedelta(seconds=settings.WEBHOOK_SEND_GRACE_SECONDS)
    due = WebhookDelivery.objects.filter(
        Q(status=pending, next_attempt_at__lte=now, dispatched_at__isnull=True)
        | Q(status=pending, next_attempt_at__lte=now, dispatched_at__lt=sent_long_ago)
        | Q(
            status=WebhookDeliveryStatus.SENDING,
            claimed_at__lt=now - settings.WEBHOOK_CLAIM_TIMEOUT,
        )
    ).order_by("next_attempt_at")
    counts = {"sent": 0, "unsent": 0}
    for delivery_id in due.values_list("pk", flat=True)[: settings.WEBHOOK_SWEEP_BATCH]:
        if not webhook_delivery_dispatch(delivery_id=delivery_id):
            counts["unsent"] += 1
            break  # the broker is down: the next sweep tries again
        counts["sent"] += 1
    return counts
