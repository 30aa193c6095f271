"""The record each job kind works on, built for a job (the end-transition tests)."""

from decimal import Decimal

from django.utils import timezone

from domains.analytics.models import MetricsSnapshot
from domains.crm.models import SyncKind, SyncLog
from domains.jobs.models import JobKind
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
from testbed.factories import make_order, make_product


def _report(user, job):
    return Report.objects.create(
        owner=user, job=job, parameters={"startDate": "2026-01-01", "endDate": "2026-01-31"}
    )


def _payment(user, job):
    order = make_order(customer=user, lines=[(make_product(), 1)], status=OrderStatus.PENDING)
    return Payment.objects.create(
        order=order,
        created_by=user,
        amount=Decimal("10.00"),
        currency="EUR",
        method="tok_visa",
        idempotency_key=f"key-{job.pk}",
        job=job,
    )


def _image(user, job):
    return Image.objects.create(
        owner=user, job=job, format="JPEG", original="x.jpg", original_bytes=1, width=1, height=1
    )


def _order(user, job):
    order = make_order(customer=user, lines=[(make_product(), 1)], status=OrderStatus.PROCESSING)
    Order.objects.filter(pk=order.pk).update(job=job)
    return Order.objects.get(pk=order.pk)


def _sync_log(user, job):
    return SyncLog.objects.create(kind=SyncKind.FULL, triggered_by=user, job=job)


def _snapshot(user, job):
    return MetricsSnapshot.objects.create(requested_by=user, job=job, as_of=timezone.now())


def _notification(user, job):
    notification = Notification.objects.create(
        recipient=user, notification_type="test", channels=[Channel.SMS], job=job
    )
    NotificationDelivery.objects.create(notification=notification, channel=Channel.SMS)
    return notification


def _email(user, job):
    return OutgoingEmail.objects.create(
        recipient=user, to_address=user.email, template="welcome", job=job
    )


JOB_RECORDS = {
    JobKind.SALES_REPORT: _report,
    JobKind.PAYMENT: _payment,
    JobKind.IMAGE_PROCESSING: _image,
    JobKind.ORDER_WORKFLOW: _order,
    JobKind.CUSTOMER_SYNC: _sync_log,
    JobKind.METRICS_SNAPSHOT: _snapshot,
    JobKind.NOTIFICATION: _notification,
    JobKind.EMAIL: _email,
}
