"""payment_reconcile against the real sandbox gateway over HTTP: a payment whose outcome
is unknown is settled by asking the gateway what it did under the payment's key."""

from datetime import timedelta

import pytest
from django.utils import timezone

from domains.integrations.client import RetryLater
from domains.jobs.ending import job_end
from domains.jobs.models import Job, JobKind, JobStatus
from domains.jobs.services import job_create
from domains.orders.models import Order, OrderStatus
from domains.orders.models import PaymentStatus as OrderPaymentStatus
from domains.payments import gateway
from domains.payments.models import Payment, PaymentLog, PaymentStatus
from domains.payments.services import NO_CHARGE_MESSAGE, payment_reconcile
from domains.sandbox.models import GatewayCharge
from testbed.factories import make_order
from testbed.waiting import wait_until
from tests.fixtures.commerce import gateway_calls, gateway_down, stocked_product

pytestmark = pytest.mark.e2e


def _unknown_payment(user, status=PaymentStatus.PROCESSING, job=None) -> Payment:
    """A payment sent to the gateway whose answer was never recorded (a lost worker)."""
    order = make_order(customer=user, lines=[(stocked_product(price="7.00"), 3)], status="pending")
    return Payment.objects.create(
        order=order,
        created_by=user,
        amount=order.total_amount,
        currency=order.currency,
        method="tok_visa",
        idempotency_key="lost-answer",
        status=status,
        job=job,
    )


def _charge_at_the_gateway(payment: Payment) -> gateway.Charge:
    return gateway.charge_create(
        amount=payment.amount,
        currency=payment.currency,
        source=payment.method,
        reference=payment.order.number,
        idempotency_key=payment.gateway_idempotency_key,
    )


def _events(payment: Payment) -> list[str]:
    return list(PaymentLog.objects.filter(payment=payment).values_list("event", flat=True))


def test_a_charge_the_gateway_made_settles_the_payment_succeeded(gateway_here, user):
    payment = _unknown_payment(user)
    charge = _charge_at_the_gateway(payment)

    settled = payment_reconcile(payment=payment)

    payment.refresh_from_db()
    assert (settled.status, payment.status) == (PaymentStatus.SUCCEEDED,) * 2
    assert payment.gateway_transaction_id == charge.transaction_id
    assert Order.objects.get(pk=payment.order_id).payment_status == "paid"
    assert _events(payment) == ["reconciled"]
    assert PaymentLog.objects.get(payment=payment).data == {
        "charged": True,
        "transaction_id": charge.transaction_id,
    }
    assert GatewayCharge.objects.count() == 1, "a lookup charges nothing"


def test_no_charge_under_the_key_settles_the_payment_failed(gateway_here, user):
    payment = _unknown_payment(user)

    settled = payment_reconcile(payment=payment)

    payment.refresh_from_db()
    assert (settled.status, payment.status) == (PaymentStatus.FAILED,) * 2
    assert payment.error_message == NO_CHARGE_MESSAGE
    assert _events(payment) == ["reconciled"]
    assert PaymentLog.objects.get(payment=payment).data == {"charged": False}
    order = Order.objects.get(pk=payment.order_id)
    assert (order.status, order.payment_status) == (OrderStatus.PENDING, OrderPaymentStatus.UNPAID)
    assert len(gateway_calls(method="GET")) == 1


def test_no_charge_while_one_may_still_be_on_its_way_is_not_yet_no_charge(gateway_here, user):
    # Before: settled FAILED at once; the charge a cancel had left in flight then landed
    # at the gateway, and the payment said "not charged" over money taken.
    job = job_create(kind=JobKind.PAYMENT, owner=user)
    Job.objects.filter(pk=job.pk).update(status=JobStatus.CANCELLED, finished_at=timezone.now())
    payment = _unknown_payment(user, job=job)

    with pytest.raises(RetryLater) as waits:
        payment_reconcile(payment=payment)

    assert 0 < waits.value.retry_after <= gateway.request_lifetime()
    payment.refresh_from_db()
    assert payment.status == PaymentStatus.PROCESSING
    assert _events(payment) == []
    # The request left in flight arrives; once no request can be on its way, it is found.
    charge = _charge_at_the_gateway(payment)
    past_any_request = timezone.now() - timedelta(seconds=gateway.request_lifetime())
    Job.objects.filter(pk=job.pk).update(finished_at=past_any_request)
    settled = payment_reconcile(payment=payment)
    assert (settled.status, settled.gateway_transaction_id) == (
        PaymentStatus.SUCCEEDED,
        charge.transaction_id,
    )


def test_no_charge_once_no_request_can_be_on_its_way_settles_failed(gateway_here, user):
    job = job_create(kind=JobKind.PAYMENT, owner=user)
    past_any_request = timezone.now() - timedelta(seconds=gateway.request_lifetime() + 1)
    Job.objects.filter(pk=job.pk).update(status=JobStatus.FAILURE, finished_at=past_any_request)

    settled = payment_reconcile(payment=_unknown_payment(user, job=job))

    assert settled.status == PaymentStatus.FAILED


def test_a_gateway_that_cannot_answer_leaves_the_payment_unknown(gateway_here, user):
    payment = _unknown_payment(user)
    gateway_down(gateway_here)

    with pytest.raises(RetryLater):
        payment_reconcile(payment=payment)

    payment.refresh_from_db()
    assert payment.status == PaymentStatus.PROCESSING, "never assumed either way"
    assert _events(payment) == []

    gateway_down(gateway_here, down=False)
    assert payment_reconcile(payment=payment).status == PaymentStatus.FAILED


def test_reconciling_twice_settles_once(gateway_here, user):
    payment = _unknown_payment(user)
    _charge_at_the_gateway(payment)

    first = payment_reconcile(payment=payment)
    again = payment_reconcile(payment=payment)

    assert (first.status, again.status) == (PaymentStatus.SUCCEEDED,) * 2
    assert again.gateway_transaction_id == first.gateway_transaction_id
    assert _events(payment) == ["reconciled"]
    assert len(gateway_calls(method="GET")) == 1, "a settled payment is not looked up"


def test_a_payment_never_sent_fails_without_asking_the_gateway(gateway_here, user):
    payment = _unknown_payment(user, status=PaymentStatus.PENDING)
    gateway_down(gateway_here)

    settled = payment_reconcile(payment=payment)

    assert settled.status == PaymentStatus.FAILED
    assert settled.error_message == NO_CHARGE_MESSAGE
    assert gateway_calls(method="GET") == []


@pytest.mark.parametrize("status", [JobStatus.FAILURE, JobStatus.TIMEOUT])
def test_a_payment_job_ended_without_an_answer_is_reconciled_by_the_worker(
    gateway_here, user, status
):
    """Whatever ends a payment's job (a budget run out, a time limit) leaves a
    charge sent without an answer unknown, and the worker asks until the gateway says."""
    payment = _unknown_payment(user, job=job_create(kind=JobKind.PAYMENT, owner=user))
    charge = _charge_at_the_gateway(payment)
    gateway_down(gateway_here)

    job_end(job_id=payment.job_id, status=status)

    payment.refresh_from_db()
    assert payment.status == PaymentStatus.PROCESSING
    gateway_down(gateway_here, down=False)
    wait_until(
        lambda: Payment.objects.filter(pk=payment.pk, status=PaymentStatus.SUCCEEDED).exists(),
        message="the reconciliation",
    )
    payment.refresh_from_db()
    assert payment.gateway_transaction_id == charge.transaction_id
    assert _events(payment) == ["outcome_unknown", "reconciled"]


def test_a_cancelled_payment_that_did_charge_is_found_and_given_back(gateway_here, user):
    """Money moved under a job that was cancelled: the compensation refunds it, once."""
    payment = _unknown_payment(user, job=job_create(kind=JobKind.PAYMENT, owner=user))
    charge = _charge_at_the_gateway(payment)

    job_end(job_id=payment.job_id, status=JobStatus.CANCELLED)

    wait_until(
        lambda: Payment.objects.filter(pk=payment.pk, status=PaymentStatus.REFUNDED).exists(),
        message="the refund",
    )
    payment.refresh_from_db()
    assert payment.gateway_transaction_id == charge.transaction_id
    assert _events(payment) == ["outcome_unknown", "reconciled", "refunded"]
    assert Order.objects.get(pk=payment.order_id).payment_status == OrderPaymentStatus.REFUNDED
