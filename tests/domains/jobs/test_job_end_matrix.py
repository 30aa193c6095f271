"""Every JobKind x every way a job ends: the Job, its domain record and a live subscriber
agree, through the one transition, and the subscriber completes.

The paths: the task's outcome (success, failure, a retry budget exhausted, a time limit),
a cancel while pending (ended at once) and a cancel while running (ended by the task when
its reporter sees the flag). The real workers end jobs through these same calls; their
end-to-end tests live beside each domain.
"""

import asyncio
from decimal import Decimal

import pytest
from django.utils import timezone

from domains.analytics.models import MetricsSnapshot
from domains.crm.models import SyncKind, SyncLog
from domains.jobs.models import Job, JobKind, JobStatus
from domains.jobs.progress import JobCancelled, job_attempt_start, job_end
from domains.jobs.services import job_cancel, job_create
from domains.jobs.stream import job_progress_stream
from domains.media.models import Image
from domains.notifications.models import (
    Channel,
    Notification,
    NotificationDelivery,
    OutgoingEmail,
)
from domains.orders.models import Order, OrderStatus
from domains.payments.models import Payment
from domains.reports.models import Report
from tests.fixtures.factories import make_order, make_product

pytestmark = pytest.mark.django_db(transaction=True)


def _report(user, job):
    Report.objects.create(
        owner=user, job=job, parameters={"startDate": "2026-01-01", "endDate": "2026-01-31"}
    )
    return lambda: Report.objects.get(job=job).status


def _payment(user, job):
    order = make_order(customer=user, lines=[(make_product(), 1)], status=OrderStatus.PENDING)
    Payment.objects.create(
        order=order,
        created_by=user,
        amount=Decimal("10.00"),
        currency="EUR",
        method="tok_visa",
        idempotency_key=f"key-{job.pk}",
        job=job,
    )
    return lambda: Payment.objects.get(job=job).status


def _image(user, job):
    Image.objects.create(
        owner=user, job=job, format="JPEG", original="x.jpg", original_bytes=1, width=1, height=1
    )
    return lambda: Image.objects.get(job=job).status


def _order(user, job):
    order = make_order(customer=user, lines=[(make_product(), 1)], status=OrderStatus.PROCESSING)
    order.job = job
    order.save(update_fields=["job"])
    return lambda: Order.objects.get(job=job).status


def _sync_log(user, job):
    SyncLog.objects.create(kind=SyncKind.FULL, triggered_by=user, job=job)
    return lambda: SyncLog.objects.get(job=job).status


def _snapshot(user, job):
    MetricsSnapshot.objects.create(requested_by=user, job=job, as_of=timezone.now())
    return lambda: MetricsSnapshot.objects.get(job=job).status


def _notification(user, job):
    notification = Notification.objects.create(
        recipient=user, notification_type="test", channels=[Channel.SMS], job=job
    )
    NotificationDelivery.objects.create(notification=notification, channel=Channel.SMS)
    return lambda: NotificationDelivery.objects.get(notification__job=job).status


def _email(user, job):
    OutgoingEmail.objects.create(recipient=user, to_address=user.email, template="welcome", job=job)
    return lambda: OutgoingEmail.objects.get(job=job).status


def _no_record(user, job):
    return lambda: None


RECORDS = {
    JobKind.SALES_REPORT: _report,
    JobKind.PAYMENT: _payment,
    JobKind.IMAGE_PROCESSING: _image,
    JobKind.ORDER_WORKFLOW: _order,
    JobKind.CUSTOMER_SYNC: _sync_log,
    JobKind.PRODUCT_SYNC: _no_record,
    JobKind.METRICS_SNAPSHOT: _snapshot,
    JobKind.NOTIFICATION: _notification,
    JobKind.EMAIL: _email,
}

# What each record says after its job ends each way (None: the path leaves it to the
# domain's own step, e.g. a payment's outcome is the gateway's, not the job's).
PATHS = ("succeeds", "fails", "retries_exhausted", "times_out")
CANCELS = ("cancelled_pending", "cancelled_running")


def _ends(succeeds, failed, cancelled) -> dict[str, str | None]:
    """What a record says after each path: its job succeeded, failed (a failure, a
    budget run out, a time limit), or was cancelled."""
    return (
        {"succeeds": succeeds}
        | dict.fromkeys(PATHS[1:], failed)
        | dict.fromkeys(CANCELS, cancelled)
    )


EXPECTED = {
    JobKind.SALES_REPORT: _ends("completed", "failed", "cancelled"),
    # A payment's success is the gateway's answer (recorded by the charge, not its job);
    # one never sent fails, so the order can be paid again.
    JobKind.PAYMENT: _ends("pending", "failed", "failed"),
    JobKind.IMAGE_PROCESSING: _ends("ready", "failed", "cancelled"),
    # The last step confirms the order; an order whose checkout did not end so fails.
    JobKind.ORDER_WORKFLOW: _ends("processing", "failed", "failed"),
    JobKind.CUSTOMER_SYNC: _ends("completed", "failed", "cancelled"),
    JobKind.PRODUCT_SYNC: _ends(None, None, None),
    JobKind.METRICS_SNAPSHOT: _ends("completed", "failed", "cancelled"),
    # Channels are sent (and recorded) by their parts; the ones not yet sent end with it.
    JobKind.NOTIFICATION: _ends("pending", "failed", "cancelled"),
    JobKind.EMAIL: _ends("queued", "failed", "cancelled"),
}
JOB_STATUS = {
    "succeeds": JobStatus.SUCCESS,
    "fails": JobStatus.FAILURE,
    "retries_exhausted": JobStatus.FAILURE,
    "times_out": JobStatus.TIMEOUT,
    "cancelled_pending": JobStatus.CANCELLED,
    "cancelled_running": JobStatus.CANCELLED,
}


def _end(job: Job, path: str) -> None:
    if path == "cancelled_pending":
        job_cancel(job=job)
        return
    _, reporter = job_attempt_start(job_id=job.pk)
    reporter.started()
    reporter.progress(current=1, total=2, force=True)
    if path == "succeeds":
        reporter.succeeded({"ok": True})
    elif path == "fails":
        reporter.failed("The supplier refused the request.")
    elif path == "retries_exhausted":
        reporter.failed("The service was still unavailable after 9 tries.")
    elif path == "times_out":
        reporter.timed_out("The job ran past its time limit.")
    else:
        job_cancel(job=job)
        with pytest.raises(JobCancelled):
            reporter.progress(current=2, total=2, force=True)
        reporter.cancelled()  # what the task base does with JobCancelled


@pytest.mark.parametrize("path", list(JOB_STATUS))
@pytest.mark.parametrize("kind", list(JobKind))
def test_the_job_its_record_and_a_live_subscriber_agree(user, kind, path):
    job = job_create(kind=kind, owner=user)
    record_status = RECORDS[kind](user, job)

    async def follow():
        stream = job_progress_stream(job=job)
        events = [await anext(stream)]
        await asyncio.get_running_loop().run_in_executor(None, _end, job, path)
        events += [event async for event in stream]  # completes after the terminal event
        return events

    events = asyncio.run(asyncio.wait_for(follow(), timeout=20))

    job.refresh_from_db()
    assert job.status == JOB_STATUS[path]
    assert events[-1]["status"] == job.status
    assert events[-1]["seq"] == job.seq
    assert [e["seq"] for e in events] == sorted({e["seq"] for e in events})
    assert record_status() == EXPECTED[kind][path]
    assert not job_end(job_id=job.pk, status=JobStatus.FAILURE), "a job ends once"
    assert record_status() == EXPECTED[kind][path]


def test_a_handler_that_fails_leaves_the_job_running(user, monkeypatch):
    """The job and its record end together or not at all."""
    job = job_create(kind=JobKind.SALES_REPORT, owner=user)
    _report(user, job)
    job_attempt_start(job_id=job.pk)[1].started()

    from domains.jobs import progress

    def broken(job, status, reason):
        raise RuntimeError("the record could not be written")

    monkeypatch.setitem(progress._end_handlers, JobKind.SALES_REPORT, broken)
    with pytest.raises(RuntimeError):
        job_end(job_id=job.pk, status=JobStatus.SUCCESS)
    job.refresh_from_db()
    assert job.status == JobStatus.STARTED
