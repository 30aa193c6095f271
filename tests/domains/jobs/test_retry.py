"""jobRetry's rules per kind, and its refusals; jobsCancel's selection.

A retry is a new job linked to the original, tied to its domain's record and sent; each
domain decides whether and how. No worker runs here: what a retry starts is read from the
new job's outbox (its task and arguments).
"""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from domains.analytics.models import MetricsSnapshot
from domains.crm.models import SyncKind, SyncLog
from domains.errors import DomainError
from domains.jobs.attempts import job_attempt_start
from domains.jobs.ending import job_end
from domains.jobs.models import Job, JobKind, JobStatus
from domains.jobs.retry import RetryOptions, job_retry, jobs_cancel
from domains.jobs.services import job_create
from domains.jobs.tasks import JobTaskName
from domains.media.models import Image, ImageStatus
from domains.orders.models import Order, OrderStatus, ReservationStatus
from domains.orders.models import PaymentStatus as OrderPaymentStatus
from domains.payments.models import Payment, PaymentStatus
from domains.reports.models import Report
from domains.reports.services import sales_report_generate
from testbed.factories import make_order, make_product

pytestmark = pytest.mark.django_db(transaction=True)


def _failed(job: Job, status: JobStatus = JobStatus.FAILURE) -> Job:
    assert job_end(job_id=job.pk, status=status, error="It broke.")
    job.refresh_from_db()
    return job


def _refused(job: Job, code: str, options: RetryOptions | None = None) -> None:
    jobs = Job.objects.count()
    with pytest.raises(DomainError) as raised:
        job_retry(job=job, options=options)
    assert raised.value.code == code
    assert Job.objects.count() == jobs  # nothing of the refused retry stays


def test_a_report_is_retried_as_a_new_report_with_its_parameters(user):
    report = sales_report_generate(
        viewer=user,
        start_date=timezone.localdate() - timedelta(days=3),
        end_date=timezone.localdate(),
        region="north",
    )
    original = _failed(report.job)

    retry = job_retry(job=original)

    assert (retry.kind, retry.owner, retry.status) == (
        JobKind.SALES_REPORT,
        user,
        JobStatus.PENDING,
    )
    assert retry.retry_of == original
    assert list(original.retries.all()) == [retry]
    again = Report.objects.get(job=retry)
    assert again.pk != report.pk
    assert again.parameters == report.parameters
    assert retry.task_name == JobTaskName.REPORTS_GENERATE_SALES
    assert retry.task_kwargs == {"report_id": again.pk}
    report.refresh_from_db()
    assert report.job == original
    assert report.error_message


@pytest.mark.parametrize("status", [JobStatus.FAILURE, JobStatus.CANCELLED, JobStatus.TIMEOUT])
def test_each_ended_but_unsuccessful_status_can_be_retried(user, status):
    job = job_create(kind=JobKind.PRODUCT_SYNC, owner=user, total=1)
    Job.objects.filter(pk=job.pk).update(
        task_name=JobTaskName.CATALOG_SYNC_PRODUCT, task_kwargs={"sku": "SKU-1"}
    )
    original = _failed(job, status)

    retry = job_retry(job=original)

    assert retry.task_name == JobTaskName.CATALOG_SYNC_PRODUCT
    assert retry.task_kwargs == {"sku": "SKU-1"}
    assert retry.total == 1


def test_a_successful_or_running_job_is_not_retryable(user):
    done = job_create(kind=JobKind.PRODUCT_SYNC, owner=user)
    job_end(job_id=done.pk, status=JobStatus.SUCCESS)
    done.refresh_from_db()
    running = job_create(kind=JobKind.PRODUCT_SYNC, owner=user)
    job_attempt_start(job_id=running.pk)[1].started()
    running.refresh_from_db()

    _refused(done, "NOT_RETRYABLE")
    _refused(running, "NOT_RETRYABLE")
    _refused(job_create(kind=JobKind.PRODUCT_SYNC, owner=user), "NOT_RETRYABLE")


@pytest.mark.parametrize("kind", [JobKind.NOTIFICATION, JobKind.EMAIL])
def test_kinds_without_a_retry_are_refused(user, kind):
    # A fan-out's channels that went out, or an email that may have, would go twice.
    _refused(_failed(job_create(kind=kind, owner=user)), "NOT_RETRYABLE")


def test_a_job_is_retried_once_then_its_latest_attempt_is(user):
    original = _failed(job_create(kind=JobKind.PRODUCT_SYNC, owner=user))
    retry = job_retry(job=original)

    _refused(original, "NOT_RETRYABLE")
    assert Job.objects.filter(retry_of=original).count() == 1
    second = job_retry(job=_failed(retry))
    assert second.retry_of == retry


def test_a_snapshot_is_taken_again_as_of_now(staff_user):
    job = job_create(kind=JobKind.METRICS_SNAPSHOT, owner=staff_user)
    old = MetricsSnapshot.objects.create(
        requested_by=staff_user, as_of=timezone.now() - timedelta(hours=1), job=job
    )

    retry = job_retry(job=_failed(job))

    again = MetricsSnapshot.objects.get(job=retry)
    assert again.as_of > old.as_of
    assert again.requested_by == staff_user
    assert retry.task_kwargs == {"snapshot_id": again.pk}


def test_a_customer_sync_is_run_again_over_the_same_window(staff_user):
    job = job_create(kind=JobKind.CUSTOMER_SYNC, owner=staff_user)
    since = timezone.now() - timedelta(hours=6)
    SyncLog.objects.create(kind=SyncKind.INCREMENTAL, since=since, triggered_by=staff_user, job=job)

    retry = job_retry(job=_failed(job))

    again = SyncLog.objects.get(job=retry)
    assert (again.kind, again.since) == (SyncKind.INCREMENTAL, since)
    assert retry.task_kwargs == {"sync_log_id": again.pk}


def test_an_image_is_processed_again_and_follows_its_new_job(user):
    job = job_create(kind=JobKind.IMAGE_PROCESSING, owner=user, total=3)
    image = Image.objects.create(
        owner=user, job=job, format="JPEG", original="x.jpg", original_bytes=1, width=1, height=1
    )
    original = _failed(job)
    assert Image.objects.get(pk=image.pk).status == ImageStatus.FAILED

    retry = job_retry(job=original)

    image.refresh_from_db()
    assert (image.status, image.error_message, image.job) == (ImageStatus.PENDING, "", retry)
    assert retry.task_kwargs == {"image_id": image.pk}
    assert retry.total == 3


def _payment(user, *, method="tok_decline", key="client-key"):
    order = make_order(customer=user, lines=[(make_product(), 1)], status=OrderStatus.PENDING)
    job = job_create(kind=JobKind.PAYMENT, owner=user)
    payment = Payment.objects.create(
        order=order,
        created_by=user,
        amount=order.total_amount,
        currency=order.currency,
        method=method,
        idempotency_key=key,
        job=job,
    )
    return payment


def test_a_failed_payment_is_retried_under_a_key_of_its_new_attempt(user):
    payment = _payment(user)
    original = _failed(payment.job)
    assert Payment.objects.get(pk=payment.pk).status == PaymentStatus.FAILED

    retry = job_retry(job=original, options=RetryOptions(payment_method="tok_visa"))

    again = Payment.objects.get(job=retry)
    assert (again.order, again.method, again.status) == (
        payment.order,
        "tok_visa",
        PaymentStatus.PENDING,
    )
    assert again.idempotency_key == f"retry-{retry.task_id}"
    assert again.gateway_idempotency_key != payment.gateway_idempotency_key
    assert retry.task_kwargs == {"payment_id": again.pk}


def test_a_payment_retry_keeps_the_method_unless_given(user):
    payment = _payment(user, method="tok_visa")
    retry = job_retry(job=_failed(payment.job))
    assert Payment.objects.get(job=retry).method == "tok_visa"


def test_a_payment_whose_outcome_is_unknown_or_that_went_through_is_not_retried(user):
    unknown = _payment(user, key="k-1")
    Payment.objects.filter(pk=unknown.pk).update(status=PaymentStatus.PROCESSING)
    paid = _payment(user, key="k-2")
    Payment.objects.filter(pk=paid.pk).update(status=PaymentStatus.SUCCEEDED)

    _refused(_failed(unknown.job, JobStatus.TIMEOUT), "NOT_RETRYABLE")
    _refused(_failed(paid.job), "NOT_RETRYABLE")


def test_a_payment_of_an_order_no_longer_payable_is_refused(user):
    payment = _payment(user)
    original = _failed(payment.job)
    Order.objects.filter(pk=payment.order_id).update(status=OrderStatus.CANCELLED)

    _refused(original, "ORDER_NOT_PAYABLE")


def test_a_payment_retry_with_a_bad_method_is_refused(user):
    original = _failed(_payment(user).job)
    _refused(original, "INVALID_METHOD", RetryOptions(payment_method=" "))


def _failed_checkout(user, *, reservation=ReservationStatus.RELEASED):
    """An order whose checkout failed, with its compensation where `reservation` says.

    The order is failed before its job ends, so the end sends no compensation: a worker of
    the suite's stack, alive in this process, would otherwise undo the order under the
    test (a held reservation released before the retry is asked for)."""
    order = make_order(customer=user, lines=[(make_product(), 1)], status=OrderStatus.FAILED)
    job = job_create(kind=JobKind.ORDER_WORKFLOW, owner=user, total=4)
    Job.objects.filter(pk=job.pk).update(
        task_name=JobTaskName.ORDERS_CHECKOUT,
        task_kwargs={"order_id": order.pk, "payment_method": "tok_decline"},
    )
    Order.objects.filter(pk=order.pk).update(job=job)
    job = _failed(job)
    Order.objects.filter(pk=order.pk).update(
        reservation=reservation, payment_status=OrderPaymentStatus.REFUNDED
    )
    return order, job


def test_a_failed_checkout_makes_the_order_payable_and_checks_it_out_again(user):
    order, original = _failed_checkout(user)
    assert Order.objects.get(pk=order.pk).status == OrderStatus.FAILED

    retry = job_retry(job=original, options=RetryOptions(payment_method="tok_visa"))

    order.refresh_from_db()
    assert (order.status, order.payment_status, order.reservation, order.job) == (
        OrderStatus.PROCESSING,
        OrderPaymentStatus.UNPAID,
        ReservationStatus.NONE,
        retry,
    )
    assert retry.task_name == JobTaskName.ORDERS_CHECKOUT
    assert retry.task_kwargs == {"order_id": order.pk, "payment_method": "tok_visa"}


def test_a_checkout_still_being_undone_is_not_retried_yet(user):
    held, held_job = _failed_checkout(user, reservation=ReservationStatus.RESERVED)
    charged, charged_job = _failed_checkout(user)
    Payment.objects.create(
        order=charged,
        created_by=user,
        amount=Decimal("10.00"),
        currency="EUR",
        method="tok_visa",
        idempotency_key="checkout-x",
        status=PaymentStatus.PROCESSING,
    )

    _refused(held_job, "PAYMENT_IN_PROGRESS")
    _refused(charged_job, "PAYMENT_IN_PROGRESS")
    assert Order.objects.get(pk=held.pk).status == OrderStatus.FAILED


def test_jobs_cancel_cancels_the_active_jobs_selected_and_passes_over_the_rest(user):
    pending = job_create(kind=JobKind.PRODUCT_SYNC, owner=user)
    other_kind = job_create(kind=JobKind.SALES_REPORT, owner=user)
    done = _failed(job_create(kind=JobKind.PRODUCT_SYNC, owner=user))

    outcome = jobs_cancel(jobs=Job.objects.filter(kind=JobKind.PRODUCT_SYNC))

    assert [job.pk for job in outcome.cancelled] == [pending.pk]
    assert Job.objects.get(pk=pending.pk).status == JobStatus.CANCELLED
    assert Job.objects.get(pk=other_kind.pk).status == JobStatus.PENDING
    assert Job.objects.get(pk=done.pk).status == JobStatus.FAILURE
