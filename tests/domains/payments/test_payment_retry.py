"""jobRetry of a failed payment, end to end: declined, then paid through the retry's own
method under a gateway key of the new attempt."""

import pytest

from domains.jobs.models import Job, JobStatus
from domains.orders.models import PaymentStatus as OrderPaymentStatus
from domains.payments.models import Payment, PaymentStatus
from domains.sandbox.models import GatewayCharge
from schema.base import global_id
from testbed.factories import make_order
from testbed.waiting import job_finished
from tests.fixtures.commerce import stocked_product

pytestmark = pytest.mark.e2e

PROCESS = """
mutation($input: PaymentProcessInput!) {
  paymentProcess(input: $input) { job { id } errors { code } }
}
"""
RETRY = """
mutation($id: ID!, $method: String) {
  jobRetry(id: $id, paymentMethod: $method) {
    job { id status retryOf { id status } } errors { field code message }
  }
}
"""


def test_a_declined_payment_is_retried_with_another_method_and_paid(shop, user):
    order = make_order(customer=user, lines=[(stocked_product(), 2)], status="pending")
    client = shop.client(user)
    variables = {
        "input": {
            "orderId": str(global_id("Order", order.pk)),
            "method": "tok_decline",
            "idempotencyKey": "pay-1",
        }
    }
    first = client.data(PROCESS, variables)["paymentProcess"]
    assert first["errors"] == []
    declined = Payment.objects.get()
    assert job_finished(declined.job_id).status == JobStatus.FAILURE

    answer = client.data(RETRY, {"id": first["job"]["id"], "method": "tok_visa"})["jobRetry"]

    assert answer["errors"] == []
    assert answer["job"]["retryOf"] == {"id": first["job"]["id"], "status": "FAILURE"}
    retry = Job.objects.get(retry_of_id=declined.job_id)
    assert job_finished(retry.pk).status == JobStatus.SUCCESS
    paid = Payment.objects.get(job=retry)
    assert (paid.status, paid.method) == (PaymentStatus.SUCCEEDED, "tok_visa")
    assert Payment.objects.get(pk=declined.pk).status == PaymentStatus.FAILED
    order.refresh_from_db()
    assert order.payment_status == OrderPaymentStatus.PAID
    # The gateway saw the retry under its own key, not the declined attempt's.
    assert GatewayCharge.objects.filter(idempotency_key=paid.gateway_idempotency_key).exists()
    assert paid.gateway_idempotency_key != declined.gateway_idempotency_key

    again = client.data(RETRY, {"id": first["job"]["id"]})["jobRetry"]
    assert again["job"] is None
    assert again["errors"][0]["code"] == "NOT_RETRYABLE"
