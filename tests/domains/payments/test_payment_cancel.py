"""jobCancel on a payment end to end: accepted and the charge given back, or refused;
never accepted and then charged; and it shows at once, even while the gateway is silent."""

import asyncio
import time

import pytest

from domains.jobs.attempts import job_attempt_start
from domains.jobs.models import Job, JobKind, JobStatus
from domains.jobs.services import job_cancel, job_create
from domains.orders.models import Order
from domains.orders.models import PaymentStatus as OrderPaymentStatus
from domains.payments.models import Payment, PaymentLog, PaymentStatus
from domains.payments.services import NO_CHARGE_MESSAGE, payment_charge
from domains.sandbox.models import GatewayCharge
from schema.base import global_id
from testbed.factories import make_order
from testbed.graphql import Subscription
from testbed.waiting import job_finished, wait_until
from tests.fixtures.commerce import gateway_calls, stocked_product

pytestmark = pytest.mark.e2e

PROCESS = """
mutation($input: PaymentProcessInput!) {
  paymentProcess(input: $input) { payment { id } job { id } errors { code message } }
}
"""
CANCEL = """
mutation($id: ID!) {
  jobCancel(id: $id) { job { id status cancelRequestedAt } errors { code message } }
}
"""
JOB = "query($id: ID!) { job(id: $id) { status cancelRequestedAt } }"
PROGRESS = """
subscription($id: ID!) { jobProgress(id: $id) { seq status cancelRequestedAt } }
"""


def _pay(client, user, method: str) -> str:
    order = make_order(customer=user, lines=[(stocked_product(price="25.00"), 2)], status="pending")
    variables = {
        "input": {
            "orderId": str(global_id("Order", order.pk)),
            "method": method,
            "idempotencyKey": "cancel-me",
        }
    }
    answer = client.data(PROCESS, variables)["paymentProcess"]
    assert answer["errors"] == []
    return answer["job"]["id"]


def _settled(payment: Payment) -> Payment | None:
    payment.refresh_from_db()
    return payment if payment.status in (PaymentStatus.REFUNDED, PaymentStatus.FAILED) else None


@pytest.mark.parametrize("after", [0, 0.5, 1.5])
def test_a_slow_charge_cancelled_keeps_no_money_and_never_ends_success(shop, user, after):
    client = shop.client(user)
    job_id = _pay(client, user, method="tok_slow")  # charged at once, answered 2.5 s later

    time.sleep(after)  # the scenario: cancelled this long after paymentProcess answered
    answer = client.data(CANCEL, {"id": job_id})["jobCancel"]

    job = job_finished(Job.objects.get().pk)
    payment = wait_until(lambda: _settled(Payment.objects.get()), message="the payment settled")
    order = Order.objects.get()
    charges = list(GatewayCharge.objects.all())
    # Accepted: the payment is in no state where the cancel would be refused.
    assert answer["errors"] == []
    assert answer["job"]["cancelRequestedAt"] is not None
    assert job.status == JobStatus.CANCELLED
    # Whatever the gateway had charged when the cancel came is given back, once.
    assert len(charges) <= 1
    assert all(charge.refunded for charge in charges)
    assert len(gateway_calls("/refunds")) == len(charges)
    expected = (
        (PaymentStatus.REFUNDED, OrderPaymentStatus.REFUNDED)
        if charges
        else (PaymentStatus.FAILED, OrderPaymentStatus.UNPAID)
    )
    assert (payment.status, order.payment_status) == expected
    events = set(PaymentLog.objects.filter(payment=payment).values_list("event", flat=True))
    assert ("refunded" in events) == bool(charges)


def test_a_charge_waiting_on_a_silent_gateway_stops_at_once_when_cancelled(shop, user):
    client = shop.client(user)
    job_id = _pay(client, user, method="tok_timeout")  # the gateway never answers in time
    wait_until(lambda: gateway_calls(), message="the charge sent")  # its first attempt waits

    async def cancel_while_subscribed() -> tuple[dict, list[dict]]:
        async with Subscription(
            shop.server.ws_url, PROGRESS, {"id": job_id}, token=client.token
        ) as subscription:
            current = await subscription.next()  # subscribed
            answer = await asyncio.to_thread(client.data, CANCEL, {"id": job_id})
            told = await subscription.next()
            return answer["jobCancel"], [current["jobProgress"], told["jobProgress"]]

    answer, (current, told) = asyncio.run(cancel_while_subscribed())
    read = client.data(JOB, {"id": job_id})["job"]

    assert answer["errors"] == []
    assert answer["job"]["cancelRequestedAt"] is not None
    assert read["cancelRequestedAt"] == answer["job"]["cancelRequestedAt"]
    # The stream says so with its next event, before the job ends.
    assert current["cancelRequestedAt"] is None
    assert told["cancelRequestedAt"] == answer["job"]["cancelRequestedAt"]
    assert told["status"] == current["status"]
    job = job_finished(Job.objects.get().pk, timeout=10)
    assert job.status == JobStatus.CANCELLED
    assert len(gateway_calls()) == 1, "no attempt after the cancel"
    payment = wait_until(lambda: _settled(Payment.objects.get()), message="the payment settled")
    assert (payment.status, payment.error_message) == (PaymentStatus.FAILED, NO_CHARGE_MESSAGE)
    assert GatewayCharge.objects.count() == 0


def test_a_payment_cancelled_after_its_charge_was_recorded_ends_cancelled_and_refunded(
    gateway_here, user
):
    """The narrowest window: charged and recorded, the job not ended yet. The cancel wins
    over the success, and the charge goes back through the cancelled payment's own path."""
    order = make_order(customer=user, lines=[(stocked_product(price="25.00"), 2)], status="pending")
    job = job_create(kind=JobKind.PAYMENT, owner=user)
    payment = Payment.objects.create(
        order=order,
        created_by=user,
        amount=order.total_amount,
        currency=order.currency,
        method="tok_visa",
        idempotency_key="charged-then-cancelled",
        job=job,
    )
    _, reporter = job_attempt_start(job_id=job.pk)
    reporter.started()
    payment_charge(payment=payment)  # the task's work, done: the order is paid

    job_cancel(job=job)
    reporter.succeeded({"paymentId": payment.pk})

    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED
    payment = wait_until(lambda: _settled(payment), message="the refund")
    order.refresh_from_db()
    assert (payment.status, order.payment_status) == (
        PaymentStatus.REFUNDED,
        OrderPaymentStatus.REFUNDED,
    )
    assert GatewayCharge.objects.get().refunded
    assert len(gateway_calls("/refunds")) == 1
