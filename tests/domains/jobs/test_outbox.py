"""The outbox's follow-ups: written with the change that calls for them, sent after commit,
sent again by the watchdog until done; and the watchdog's sweep of unsettled money."""

from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone

from domains.jobs.models import FollowUp, Job, JobKind, JobStatus
from domains.jobs.outbox import followup_queue, followups_sweep
from domains.jobs.services import job_create
from domains.jobs.tasks import JobTaskName
from domains.orders.models import OrderStatus, ReservationStatus
from domains.payments.models import Payment, PaymentStatus
from testbed.factories import make_order, make_product

pytestmark = pytest.mark.django_db(transaction=True)

PAST = timezone.now() - timedelta(hours=1)
NOTHING = {
    "followups_queued": 0,
    "followups_sent": 0,
    "followups_resent": 0,
    "followups_given_up": 0,
}


# No worker runs it (a worker discards an unregistered task): the rows say what was sent.
PROBE = "tests.outbox_probe"


def _queue(key: str = "test:1") -> FollowUp:
    with transaction.atomic():
        return followup_queue(task_name=PROBE, key=key, payment_id=0)


def test_a_follow_up_is_sent_once_its_transaction_commits():
    followup = _queue()

    followup.refresh_from_db()
    assert (followup.sends, followup.done_at) == (1, None)
    assert followup.resend_after > timezone.now()
    assert followups_sweep() == NOTHING


def _queue_then_fail() -> None:
    with transaction.atomic():
        followup_queue(task_name=PROBE, key="test:1", payment_id=0)
        raise RuntimeError("the change failed")


def test_a_follow_up_rolled_back_with_its_change_is_never_sent():
    with pytest.raises(RuntimeError):
        _queue_then_fail()

    assert not FollowUp.objects.exists()


def test_queueing_the_same_key_while_one_is_live_keeps_one():
    first, again = _queue(), _queue()

    assert again.pk == first.pk
    FollowUp.objects.filter(pk=first.pk).update(done_at=timezone.now())
    assert _queue().pk != first.pk  # done: a new one


def test_the_watchdog_sends_the_unsent_and_again_the_overdue_then_gives_up(settings):
    settings.JOB_MAX_REVIVALS = 1
    unsent, overdue = _queue("test:unsent"), _queue("test:overdue")
    FollowUp.objects.filter(pk=unsent.pk).update(sent_at=None, sends=0)  # the send failed
    FollowUp.objects.filter(pk=overdue.pk).update(resend_after=PAST)  # its message was lost

    assert followups_sweep() == {**NOTHING, "followups_sent": 1, "followups_resent": 1}

    FollowUp.objects.update(resend_after=PAST)
    assert followups_sweep() == {**NOTHING, "followups_resent": 1, "followups_given_up": 1}
    given_up = FollowUp.objects.get(pk=overdue.pk)
    assert given_up.done_at is not None
    assert given_up.error.startswith("Given up after 2 sends.")


def _unsettled_payment(user, *, job_status: JobStatus) -> Payment:
    order = make_order(customer=user, lines=[(make_product(), 1)], status=OrderStatus.PENDING)
    job = job_create(kind=JobKind.PAYMENT, owner=user)
    Job.objects.filter(pk=job.pk).update(status=job_status)
    return Payment.objects.create(
        order=order,
        created_by=user,
        amount=order.total_amount,
        currency=order.currency,
        method="tok_visa",
        idempotency_key="lost",
        status=PaymentStatus.PROCESSING,
        job=job,
    )


def test_a_payment_left_processing_by_an_ended_job_is_reconciled_by_the_watchdog(user):
    payment = _unsettled_payment(user, job_status=JobStatus.FAILURE)

    assert followups_sweep()["followups_queued"] == 1

    reconcile = FollowUp.objects.get()
    assert reconcile.task_name == JobTaskName.PAYMENTS_RECONCILE
    assert reconcile.task_kwargs == {"payment_id": payment.pk, "refund_if_charged": False}
    assert reconcile.sends == 1
    assert followups_sweep()["followups_queued"] == 0, "one reconciliation at a time"


def test_a_payment_whose_job_still_runs_is_left_to_its_run(user):
    _unsettled_payment(user, job_status=JobStatus.RETRY)

    assert followups_sweep() == NOTHING


def test_a_failed_checkout_still_holding_stock_is_compensated_by_the_watchdog(user):
    order = make_order(customer=user, lines=[(make_product(), 1)], status=OrderStatus.FAILED)
    job = job_create(kind=JobKind.ORDER_WORKFLOW, owner=user)
    Job.objects.filter(pk=job.pk).update(status=JobStatus.FAILURE)
    order.job = job
    order.reservation = ReservationStatus.RESERVED
    order.save()

    assert followups_sweep()["followups_queued"] == 1

    compensation = FollowUp.objects.get()
    assert compensation.task_name == JobTaskName.ORDERS_CHECKOUT_COMPENSATE
    assert compensation.task_kwargs == {"order_id": order.pk}
