"""Idempotent starts, called directly (no GraphQL, no worker): a key claimed with the job
it started gives that job back for 24 hours, to its owner only, for the same request only;
concurrent duplicates make one job; a refused request claims nothing; retention purges
expired keys."""

import threading
from datetime import date, timedelta

import pytest
from celery import current_app
from django.db import connection
from django.utils import timezone

from domains.errors import DomainError
from domains.jobs.idempotency import (
    IdempotencyError,
    IdempotentRequest,
    idempotency_digest,
    idempotent_start,
)
from domains.jobs.models import IdempotencyKey, Job, JobKind, JobStatus
from domains.jobs.retention import jobs_purge
from domains.orders.models import Order, OrderStatus
from domains.orders.services import order_checkout
from domains.payments.services import payment_process
from domains.reports.models import Report
from domains.reports.services import sales_report_generate
from testbed.factories import make_order
from tests.fixtures.commerce import stocked_product

START, END = date(2026, 1, 1), date(2026, 1, 31)
RACERS = 4


@pytest.fixture
def no_stray_tasks(transactional_db):
    """Services send their tasks on commit; no worker runs here: end their jobs and take
    them off the queue."""
    yield
    Job.objects.update(status=JobStatus.CANCELLED)
    current_app.control.purge()


def _report(user, key: str | None, end: date = END) -> Report:
    """salesReportGenerate's service under a key, as the schema runs it."""
    request = None
    if key is not None:
        request = IdempotentRequest(
            owner=user,
            operation="salesReportGenerate",
            key=key,
            digest=idempotency_digest({"startDate": str(START), "endDate": str(end)}),
            what="report",
        )
    return idempotent_start(
        request,
        start=lambda: sales_report_generate(viewer=user, start_date=START, end_date=end),
        replay=lambda job: job.report,
    )


def _checkout(user, order: Order, key: str) -> Order:
    request = IdempotentRequest(
        owner=user,
        operation="orderCheckout",
        key=key,
        digest=idempotency_digest({"id": order.pk, "paymentMethod": "tok_visa"}),
    )
    return idempotent_start(
        request,
        start=lambda: order_checkout(viewer=user, order=order, payment_method="tok_visa"),
        replay=lambda job: Order.objects.get(job=job),
    )


def _pay(user, order: Order, key: str):
    request = IdempotentRequest(
        owner=user,
        operation="paymentProcess",
        key=key,
        digest=idempotency_digest({"orderId": order.pk, "method": "tok_visa"}),
    )
    return idempotent_start(
        request,
        start=lambda: payment_process(viewer=user, order=order, method="tok_visa"),
        replay=lambda job: job.payment,
    )


def _at_once(start, count: int = RACERS) -> list:
    """`start()` in `count` threads released together; each answer, or the error raised."""
    barrier = threading.Barrier(count)
    answers: list = [None] * count

    def run(n: int) -> None:
        try:
            barrier.wait()
            answers[n] = start()
        except DomainError as error:
            answers[n] = error
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answers


def test_the_same_key_and_input_give_the_same_job(no_stray_tasks, user):
    first = _report(user, "k1")

    again = _report(user, "k1")

    assert (again.pk, again.job_id) == (first.pk, first.job_id)
    assert (Job.objects.count(), Report.objects.count(), IdempotencyKey.objects.count()) == (
        1,
        1,
        1,
    )


def test_without_a_key_every_request_starts_a_job(no_stray_tasks, user):
    _report(user, None)
    _report(user, None)

    assert Job.objects.count() == 2
    assert not IdempotencyKey.objects.exists()


def test_the_same_key_with_other_input_is_refused_and_starts_nothing(no_stray_tasks, user):
    first = _report(user, "k1")

    with pytest.raises(IdempotencyError) as refused:
        _report(user, "k1", end=END - timedelta(days=1))

    assert (refused.value.code, refused.value.field) == ("IDEMPOTENCY_KEY_REUSED", "idempotencyKey")
    assert refused.value.message == "This idempotency key was already used for a different report."
    assert list(Job.objects.values_list("pk", flat=True)) == [first.job_id]


def test_the_same_key_for_another_operation_is_refused(no_stray_tasks, user):
    _report(user, "k1")
    order = make_order(customer=user, lines=[(stocked_product(), 1)], status=OrderStatus.PENDING)

    with pytest.raises(IdempotencyError) as refused:
        _pay(user, order, "k1")

    assert refused.value.code == "IDEMPOTENCY_KEY_REUSED"
    assert Job.objects.filter(kind=JobKind.PAYMENT).count() == 0


@pytest.mark.parametrize("key", ["", "   ", "k" * 256])
def test_a_key_must_be_1_to_255_characters(no_stray_tasks, user, key):
    with pytest.raises(IdempotencyError) as refused:
        _report(user, key)

    assert refused.value.code == "INVALID_IDEMPOTENCY_KEY"
    assert not Job.objects.exists()


def test_another_users_identical_key_gives_their_own_job(no_stray_tasks, user, other_user):
    mine = _report(user, "shared")

    theirs = _report(other_user, "shared")

    assert theirs.job_id != mine.job_id
    assert theirs.job.owner == other_user
    assert _report(user, "shared").job_id == mine.job_id


def test_after_24_hours_a_key_is_new_again(no_stray_tasks, user):
    first = _report(user, "daily")
    IdempotencyKey.objects.update(created_at=timezone.now() - timedelta(hours=24, seconds=1))

    again = _report(user, "daily", end=END - timedelta(days=1))  # other input: a new key now

    assert again.job_id != first.job_id
    assert list(IdempotencyKey.objects.values_list("job_id", flat=True)) == [again.job_id]


def test_within_24_hours_a_key_is_still_held(no_stray_tasks, user):
    first = _report(user, "daily")
    IdempotencyKey.objects.update(created_at=timezone.now() - timedelta(hours=23, minutes=59))

    assert _report(user, "daily").job_id == first.job_id


def test_a_request_refused_by_its_domain_claims_nothing(no_stray_tasks, user):
    with pytest.raises(DomainError) as refused:
        _report(user, "fix-and-resend", end=START - timedelta(days=1))

    fixed = _report(user, "fix-and-resend")

    assert refused.value.code == "INVALID_DATE_RANGE"
    assert IdempotencyKey.objects.get().job_id == fixed.job_id
    assert Job.objects.count() == 1


def test_concurrent_duplicates_make_one_job(no_stray_tasks, user):
    answers = _at_once(lambda: _report(user, "twice"))

    assert {a.job_id for a in answers} == {Job.objects.get().pk}, answers
    assert (Report.objects.count(), IdempotencyKey.objects.count()) == (1, 1)


def test_concurrent_duplicates_of_a_payment_make_one_payment(no_stray_tasks, user):
    order = make_order(customer=user, lines=[(stocked_product(), 1)], status=OrderStatus.PENDING)

    answers = _at_once(lambda: _pay(user, order, "pay-once"))

    assert {a.job_id for a in answers} == {Job.objects.get().pk}, answers
    assert order.payments.count() == 1


def test_concurrent_duplicates_of_a_checkout_get_its_job_not_its_refusal(no_stray_tasks, user):
    # The second checkout of an order is refused by its domain once the first has begun:
    # a duplicate that lost the race answers with the first one's job all the same.
    order = make_order(customer=user, lines=[(stocked_product(), 1)], status=OrderStatus.PENDING)

    answers = _at_once(lambda: _checkout(user, order, "checkout-once"))

    assert {a.job_id for a in answers} == {Job.objects.get().pk}, answers
    order.refresh_from_db()
    assert order.status == OrderStatus.PROCESSING


def test_retention_purges_expired_keys_and_keeps_their_jobs(no_stray_tasks, user):
    old, live = _report(user, "old"), _report(user, "live")
    IdempotencyKey.objects.filter(key="old").update(created_at=timezone.now() - timedelta(hours=25))

    counts = jobs_purge(older_than=timedelta(days=30))

    assert counts.removed == {"idempotency keys": 1}
    assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["live"]
    assert Job.objects.filter(pk__in=[old.job_id, live.job_id]).count() == 2


def test_a_dry_run_counts_expired_keys_and_keeps_them(no_stray_tasks, user):
    _report(user, "old")
    IdempotencyKey.objects.update(created_at=timezone.now() - timedelta(hours=25))

    counts = jobs_purge(older_than=timedelta(days=30), dry_run=True)

    assert counts.removed == {"idempotency keys": 1}
    assert IdempotencyKey.objects.count() == 1
