"""CRM sync: customers read page by page from the CRM and upserted by their external id.

Each page is one transaction: its upsert and the SyncLog's counters and checkpoint (the
next page) move together, so a retried run resumes where it stopped and counts each
record once. A malformed record is counted and logged; it does not stop the run.
"""

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from domains.accounts.models import User
from domains.accounts.permissions import staff_required
from domains.crm.client import CrmClient
from domains.crm.errors import CrmError, CrmErrorCode
from domains.crm.models import Customer, SyncKind, SyncLog, SyncStatus
from domains.jobs.models import Job, JobKind
from domains.jobs.reporter import JobReporter
from domains.jobs.retry import RetryOptions
from domains.jobs.services import job_create, job_dispatch
from domains.jobs.tasks import JobTaskName

logger = logging.getLogger(__name__)

MAX_SINCE_HOURS = 24 * 366
MAX_ERROR_DETAILS = 100  # the first bad records, kept on the log; all are counted and logged
SYNCED_FIELDS = ("email", "first_name", "last_name", "phone", "company", "external_updated_at")


class MalformedRecord(ValueError):
    pass


def customers_sync(*, viewer: User | None, full_sync: bool, since_hours: int) -> SyncLog:
    """Start a sync: staff on demand, or the beat schedule (no viewer)."""
    if viewer is not None:
        staff_required(viewer)
    if not full_sync and not 1 <= since_hours <= MAX_SINCE_HOURS:
        raise CrmError(
            f"Enter between 1 and {MAX_SINCE_HOURS} hours.",
            code=CrmErrorCode.INVALID_SINCE_HOURS,
            field="sinceHours",
        )
    with transaction.atomic(durable=True):
        job = job_create(kind=JobKind.CUSTOMER_SYNC, owner=viewer)
        sync_log = SyncLog.objects.create(
            kind=SyncKind.FULL if full_sync else SyncKind.INCREMENTAL,
            since=None if full_sync else timezone.now() - timedelta(hours=since_hours),
            triggered_by=viewer,
            job=job,
        )
        job_dispatch(job=job, task_name=JobTaskName.CRM_SYNC, sync_log_id=sync_log.pk)
    logger.info(
        "crm.sync_requested", extra={"sync_log_id": sync_log.pk, "kind": str(sync_log.kind)}
    )
    return sync_log


def customers_sync_scheduled(*, full_sync: bool) -> SyncLog | None:
    """The beat's sync, unless one that covers it is still running (a slow CRM must not
    pile runs up): a full sync waits only for a full one, an incremental for any."""
    busy = SyncLog.objects.filter(
        status__in=[SyncStatus.PENDING, SyncStatus.RUNNING],
        created_at__gte=timezone.now() - timedelta(seconds=settings.CRM_SYNC_SOFT_TIME_LIMIT),
    )
    if full_sync:
        busy = busy.filter(kind=SyncKind.FULL)
    if busy.exists():
        logger.info("crm.sync_skipped_busy", extra={"full_sync": full_sync})
        return None
    return customers_sync(
        viewer=None, full_sync=full_sync, since_hours=settings.CRM_INCREMENTAL_SINCE_HOURS
    )


def customer_fields(record: Any) -> tuple[str, dict[str, Any]]:
    """A CRM record as (external id, Customer fields); MalformedRecord when it is not one."""
    if not isinstance(record, Mapping):
        raise MalformedRecord(f"not an object: {type(record).__name__}")
    external_id = str(record.get("id") or "").strip()
    if not external_id or len(external_id) > 64:
        raise MalformedRecord("missing or overlong id")
    email = str(record.get("email") or "").strip().lower()
    try:
        validate_email(email)
    except ValidationError as error:
        raise MalformedRecord(f"invalid email {email!r}") from error
    if len(email) > Customer._meta.get_field("email").max_length:
        raise MalformedRecord("overlong email")
    try:
        updated_at = parse_datetime(str(record.get("updatedAt") or ""))
    except ValueError:  # well formed, but no such date or time
        updated_at = None
    if updated_at is None or timezone.is_naive(updated_at):
        raise MalformedRecord(f"invalid updatedAt {record.get('updatedAt')!r}")
    return external_id, {
        "email": email,
        "first_name": str(record.get("firstName") or "")[:150],
        "last_name": str(record.get("lastName") or "")[:150],
        "phone": str(record.get("phone") or "")[:32],
        "company": str(record.get("company") or "")[:200],
        "external_updated_at": updated_at,
    }


@dataclass
class PageOutcome:
    created: int = 0
    updated: int = 0
    skipped: int = 0
    errors: list[dict[str, str]] = field(default_factory=list)

    @property
    def processed(self) -> int:
        return self.created + self.updated + self.skipped + len(self.errors)


def customers_upsert(records: Iterable[Any], *, now: datetime) -> PageOutcome:
    """Upsert a page of records by external id: new ones created, changed ones (another
    updatedAt) updated, unchanged ones left alone, malformed ones counted. Call inside a
    transaction."""
    outcome = PageOutcome()
    incoming: dict[str, dict[str, Any]] = {}
    for record in records:
        try:
            external_id, fields = customer_fields(record)
        except MalformedRecord as error:
            external_id = str(record.get("id", "")) if isinstance(record, Mapping) else ""
            outcome.errors.append({"externalId": external_id, "error": str(error)})
            logger.warning(
                "crm.record_malformed", extra={"external_id": external_id, "error": str(error)}
            )
            continue
        incoming[external_id] = fields
    # The CRM stamps every change, so a record whose stamp we hold is one we hold.
    stamps = dict(
        Customer.objects.filter(external_id__in=incoming).values_list(
            "external_id", "external_updated_at"
        )
    )
    changed = []
    for external_id, fields in incoming.items():
        if external_id not in stamps:
            outcome.created += 1
        elif stamps[external_id] != fields["external_updated_at"]:
            outcome.updated += 1
        else:
            outcome.skipped += 1
            continue
        changed.append(Customer(external_id=external_id, synced_at=now, **fields))
    customers_bulk_upsert(changed)
    return outcome


def customers_bulk_upsert(customers: list[Customer]) -> None:
    """One INSERT … ON CONFLICT (external_id) DO UPDATE per batch."""
    Customer.objects.bulk_create(
        customers,
        update_conflicts=True,
        unique_fields=["external_id"],
        update_fields=[*SYNCED_FIELDS, "synced_at"],
        batch_size=1_000,
    )


def customers_sync_run(
    *, sync_log: SyncLog, reporter: JobReporter, client: CrmClient | None = None
) -> SyncLog:
    """Run (or resume) a sync; raises RetryLater from the client for the task to reschedule."""
    client = client or CrmClient()
    SyncLog.objects.filter(
        pk=sync_log.pk, status__in=[SyncStatus.PENDING, SyncStatus.RUNNING]
    ).update(status=SyncStatus.RUNNING)
    sync_log.refresh_from_db()
    done = sync_log.created + sync_log.updated + sync_log.skipped + sync_log.errors
    reporter.progress(stage="syncing", current=done, force=True)
    for page in client.customer_pages(updated_since=sync_log.since, first_page=sync_log.next_page):
        with transaction.atomic():
            outcome = customers_upsert(page.records, now=timezone.now())
            room = max(0, MAX_ERROR_DETAILS - len(sync_log.error_details))
            sync_log.error_details += outcome.errors[:room]
            SyncLog.objects.filter(pk=sync_log.pk, next_page=page.number).update(
                created=F("created") + outcome.created,
                updated=F("updated") + outcome.updated,
                skipped=F("skipped") + outcome.skipped,
                errors=F("errors") + len(outcome.errors),
                error_details=sync_log.error_details,
                next_page=page.next or page.number + 1,
            )
        done += outcome.processed
        reporter.progress(current=done, total=page.count)
    # Completed with its job, in the transaction that ends it (domains.jobs.ending.job_end).
    sync_log.refresh_from_db()
    logger.info(
        "crm.sync_run",
        extra={
            "sync_log_id": sync_log.pk,
            "created_count": sync_log.created,
            "updated_count": sync_log.updated,
            "skipped_count": sync_log.skipped,
            "error_count": sync_log.errors,
        },
    )
    return sync_log


def sync_log_job_retry(original: Job, retry: Job, options: RetryOptions) -> None:
    """A new sync log of the same kind and window (an incremental sync covers what the
    failed one was to cover)."""
    sync_log = SyncLog.objects.get(job=original)
    again = SyncLog.objects.create(
        kind=sync_log.kind, since=sync_log.since, triggered_by=sync_log.triggered_by, job=retry
    )
    job_dispatch(job=retry, task_name=JobTaskName.CRM_SYNC, sync_log_id=again.pk)


def sync_log_summary(sync_log: SyncLog) -> dict[str, Any]:
    return {
        "syncLogId": sync_log.pk,
        "created": sync_log.created,
        "updated": sync_log.updated,
        "skipped": sync_log.skipped,
        "errors": sync_log.errors,
    }
