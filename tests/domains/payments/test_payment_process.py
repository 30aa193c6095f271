"""paymentProcess end to end: idempotent under concurrency, and each gateway outcome."""

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from django.conf import settings

from domains.infra.redis import sync_client
from domains.integrations.guards import Breaker, BreakerState
from domains.jobs.events import decode, log_key
from domains.jobs.models import IdempotencyKey, Job, JobStatus
from domains.orders.models import PaymentStatus as OrderPaymentStatus
from domains.payments.models import Payment, PaymentLog, PaymentStatus
from domains.payments.services import NO_CHARGE_MESSAGE
from domains.sandbox.models import GatewayCharge
from schema.base import global_id
from testbed.factories import make_order
from testbed.waiting import job_finished, wait_until
from tests.fixtures.commerce import (
    COMMERCE_ENV,
    gateway_calls,
    gateway_down,
    pid_running,
    stocked_product,
)
from workers.base import INTERNAL_ERROR

pytestmark = pytest.mark.e2e
BREAKER_RESET = float(COMMERCE_ENV["PAYMENT_BREAKER_RESET_SECONDS"])

PROCESS = """
mutation($input: PaymentProcessInput!) {
  paymentProcess(input: $input) {
    payment { id status amount } job { id } errors { field code message }
  }
}
"""


def _pay(client, order, method="tok_visa", key="key-1") -> dict:
    variables = {
        "input": {
            "orderId": str(global_id("Order", order.pk)),
            "method": method,
            "idempotencyKey": key,
        }
    }
    return client.data(PROCESS, variables)["paymentProcess"]


def _pending_order(user, price="25.00"):
    return make_order(customer=user, lines=[(stocked_product(price=price), 2)], status="pending")


def test_twenty_concurrent_requests_with_one_key_charge_once(shop, user):
    order = _pending_order(user)
    client = shop.client(user)

    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(lambda _: _pay(client, order, key="same-key"), range(20)))

    assert all(a["errors"] == [] for a in answers), answers
    assert len({a["payment"]["id"] for a in answers}) == 1
    assert len({a["job"]["id"] for a in answers}) == 1
    job = job_finished(Job.objects.get().pk)
    assert job.status == JobStatus.SUCCESS
    assert Payment.objects.count() == 1
    assert Payment.objects.get().status == PaymentStatus.SUCCEEDED
    assert GatewayCharge.objects.count() == 1
    order.refresh_from_db()
    assert order.payment_status == OrderPaymentStatus.PAID


def test_twenty_concurrent_requests_with_twenty_keys_pay_an_order_once(shop, user):
    order = _pending_order(user)
    client = shop.client(user)

    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(lambda n: _pay(client, order, key=f"key-{n}"), range(20)))

    accepted = [a for a in answers if a["errors"] == []]
    refused = [a["errors"][0]["code"] for a in answers if a["errors"]]
    assert len(accepted) == 1
    # Refused while the first is being charged, or once it has paid the order.
    assert len(refused) == 19
    assert set(refused) <= {"PAYMENT_IN_PROGRESS", "ALREADY_PAID"}
    assert job_finished(Job.objects.get().pk).status == JobStatus.SUCCESS
    assert GatewayCharge.objects.count() == 1


def test_the_same_key_for_another_amount_is_refused_without_a_charge(shop, user):
    first, other = _pending_order(user, price="25.00"), _pending_order(user, price="30.00")
    client = shop.client(user)
    accepted = _pay(client, first, key="k")
    job_finished(Job.objects.get().pk)

    refused = _pay(client, other, key="k")

    assert accepted["errors"] == []
    assert refused["payment"] is None
    assert refused["errors"] == [
        {
            "field": "idempotencyKey",
            "code": "IDEMPOTENCY_KEY_REUSED",
            "message": "This idempotency key was already used for a different payment.",
        }
    ]
    assert Payment.objects.count() == 1
    assert GatewayCharge.objects.count() == 1
    other.refresh_from_db()
    assert other.payment_status == OrderPaymentStatus.UNPAID


def test_the_same_key_after_success_returns_the_same_payment_and_job(shop, user):
    order = _pending_order(user)
    client = shop.client(user)
    first = _pay(client, order, key="again")
    job_finished(Job.objects.get().pk)

    second = _pay(client, order, key="again")

    assert second["errors"] == []
    assert (second["payment"]["id"], second["job"]["id"]) == (
        first["payment"]["id"],
        first["job"]["id"],
    )
    assert second["payment"]["status"] == "succeeded"
    assert GatewayCharge.objects.count() == 1


def test_a_declined_card_fails_the_payment_and_the_job(shop, user):
    order = _pending_order(user)

    _pay(shop.client(user), order, method="tok_decline")

    job = job_finished(Job.objects.get().pk)
    payment = Payment.objects.get()
    assert (job.status, job.error) == (JobStatus.FAILURE, "The card was declined.")
    assert (payment.status, payment.error_message) == (
        PaymentStatus.FAILED,
        "The card was declined.",
    )
    assert GatewayCharge.objects.count() == 0
    assert len(gateway_calls()) == 1, "a decline is not retried"


def test_a_gateway_that_times_out_fails_the_payment_after_its_retries(shop, user):
    order = _pending_order(user)

    _pay(shop.client(user), order, method="tok_timeout")

    job = job_finished(Job.objects.get().pk, timeout=90)
    payment = Payment.objects.get()
    assert job.status == JobStatus.FAILURE
    assert "unavailable" in job.error
    # The gateway took the charge requests and never answered: only it knows what it did.
    wait_until(
        lambda: Payment.objects.filter(pk=payment.pk, status=PaymentStatus.FAILED).exists(),
        message="the reconciliation",
    )
    payment.refresh_from_db()
    assert payment.error_message == NO_CHARGE_MESSAGE
    # Two attempts in run 1; run 2's first opens the breaker (threshold 3); run 3 is the
    # half-open probe, which times out too.
    assert len(gateway_calls()) == 4
    assert job.attempts == 1, "retries are not attempts"
    assert GatewayCharge.objects.count() == 0


def _events(job_id: int) -> list[dict]:
    return [decode(fields["e"]) for _, fields in sync_client().xrange(log_key(job_id))]


def test_a_gateway_timeout_is_retried_with_the_gateways_own_reason(shop, user):
    order = _pending_order(user)

    _pay(shop.client(user), order, method="tok_timeout")

    job = job_finished(Job.objects.get().pk, timeout=90)
    retries = [event["error"] for event in _events(job.pk) if event["status"] == "RETRY"]
    # Run 1's two timeouts, then run 2 finds the breaker they opened: the gateway's words.
    assert retries == ["gateway: timed out (after 2 attempts)", "gateway: circuit breaker is open"]
    assert job.status == JobStatus.FAILURE
    assert job.error.startswith("The gateway service is unavailable: it still failed after 3")
    assert INTERNAL_ERROR not in job.error


def test_a_429_is_retried_after_retry_after_and_charges_once(shop, user):
    order = _pending_order(user)

    _pay(shop.client(user), order, method="tok_rate_limited")

    job = job_finished(Job.objects.get().pk)
    calls = gateway_calls()
    assert job.status == JobStatus.SUCCESS
    assert job.attempts == 1, "rescheduled through the broker: a retry, not another attempt"
    assert len(calls) == 2
    assert calls[1]["at"] - calls[0]["at"] >= 1.0, "Retry-After: 1 honoured"
    assert Payment.objects.get().status == PaymentStatus.SUCCEEDED
    assert GatewayCharge.objects.count() == 1


def test_a_500_then_success_is_retried_within_the_call(shop, user):
    order = _pending_order(user)

    _pay(shop.client(user), order, method="tok_fail_1")

    job = job_finished(Job.objects.get().pk)
    assert job.status == JobStatus.SUCCESS
    assert job.attempts == 1
    assert len(gateway_calls()) == 2
    assert Payment.objects.get().status == PaymentStatus.SUCCEEDED
    assert GatewayCharge.objects.count() == 1


def test_a_worker_killed_after_the_charge_finishes_on_redelivery_with_one_charge(shop, user):
    order = _pending_order(user)
    _pay(shop.client(user), order, method="tok_slow")
    payment = Payment.objects.get()

    # The gateway charged and committed; its answer takes 2.5 s to come back.
    wait_until(lambda: GatewayCharge.objects.exists(), message="the charge")
    assert Payment.objects.get().status == PaymentStatus.PROCESSING
    os.kill(pid_running("payments.process"), signal.SIGKILL)

    job = job_finished(payment.job_id, timeout=60)
    payment.refresh_from_db()
    assert job.status == JobStatus.SUCCESS
    assert job.attempts == 2, "redelivered after the kill"
    assert payment.status == PaymentStatus.SUCCEEDED
    assert GatewayCharge.objects.count() == 1
    assert payment.gateway_transaction_id == GatewayCharge.objects.get().transaction_id
    assert len(gateway_calls()) == 2, "the redelivered task asked again, with the same key"
    events = list(PaymentLog.objects.filter(payment=payment).values_list("event", flat=True))
    assert events == ["requested", "charge_sent", "charge_sent", "succeeded"]


def test_a_gateway_outage_opens_the_breaker_then_one_probe_closes_it(shop, user):
    client = shop.client(user)
    control = shop.server.url + "/sandbox/gateway/control"
    headers = {"Authorization": f"Bearer {settings.SANDBOX_GATEWAY_API_KEY}"}
    httpx.post(control, json={"down": True}, headers=headers)
    _pay(client, _pending_order(user), key="during-outage")

    failed = job_finished(Job.objects.get().pk, timeout=60)
    calls = gateway_calls()
    # Run 1: two attempts fail; run 2: the third failure opens the breaker (threshold 3)
    # and its second attempt is refused without a call; run 3, rescheduled for when the
    # breaker half-opens, sends one probe, which fails and opens it again.
    assert len(calls) == 4
    assert calls[3]["at"] - calls[2]["at"] >= BREAKER_RESET - 0.1, "no call while open"
    assert failed.status == JobStatus.FAILURE
    assert Payment.objects.get().status == PaymentStatus.PROCESSING, "unknown until reconciled"
    assert Breaker().state("gateway") == BreakerState.OPEN

    httpx.post(control, json={"down": False}, headers=headers)
    time.sleep(BREAKER_RESET + 0.2)
    _pay(client, _pending_order(user), key="after-outage")

    job = job_finished(IdempotencyKey.objects.get(key="after-outage").job_id)
    assert job.status == JobStatus.SUCCESS
    assert len(gateway_calls()) == 5, "one probe, which closed the breaker"
    assert Breaker().state("gateway") == BreakerState.CLOSED
    assert GatewayCharge.objects.count() == 1


def test_a_gateway_outage_beyond_the_retry_budget_fails_the_payment_once_reconciled(shop, user):
    order = _pending_order(user)
    client = shop.client(user)
    gateway_down(shop)
    _pay(client, order, key="during-outage")

    job = job_finished(Job.objects.get().pk, timeout=60)
    payment = Payment.objects.get()
    assert job.status == JobStatus.FAILURE
    assert payment.status == PaymentStatus.PROCESSING, "the outcome is unknown, not assumed"
    blocked = _pay(client, order, key="while-unknown")
    assert [e["code"] for e in blocked["errors"]] == ["PAYMENT_IN_PROGRESS"]

    gateway_down(shop, down=False)
    wait_until(
        lambda: Payment.objects.filter(pk=payment.pk, status=PaymentStatus.FAILED).exists(),
        message="the reconciliation",
    )
    payment.refresh_from_db()
    assert payment.error_message == NO_CHARGE_MESSAGE
    assert "reconciled" in PaymentLog.objects.filter(payment=payment).values_list(
        "event", flat=True
    )

    again = _pay(client, order, key="after-outage")

    assert again["errors"] == []
    paid = job_finished(IdempotencyKey.objects.get(key="after-outage").job_id)
    order.refresh_from_db()
    assert paid.status == JobStatus.SUCCESS
    assert order.payment_status == OrderPaymentStatus.PAID
    keys = list(GatewayCharge.objects.values_list("idempotency_key", flat=True))
    assert keys == [
        IdempotencyKey.objects.get(key="after-outage").job.payment.gateway_idempotency_key
    ]
