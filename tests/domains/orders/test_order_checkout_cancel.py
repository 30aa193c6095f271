"""jobCancel on a checkout waiting in its charge step: told at once, stopped at once, and
undone by the same compensation as a failure."""

import pytest

from domains.catalog.models import Inventory
from domains.jobs.models import JobStatus
from domains.orders.models import Order, OrderStatus, ReservationStatus
from domains.payments.models import Payment, PaymentStatus
from domains.payments.services import NO_CHARGE_MESSAGE
from domains.sandbox.models import GatewayCharge
from schema.base import global_id
from testbed.factories import make_order
from testbed.waiting import job_finished, wait_until
from tests.fixtures.commerce import gateway_calls, stocked_product

pytestmark = pytest.mark.e2e

CHECKOUT = """
mutation($id: ID!, $method: String!) {
  orderCheckout(id: $id, paymentMethod: $method) { job { id } errors { code message } }
}
"""
CANCEL = """
mutation($id: ID!) {
  jobCancel(id: $id) { job { status stage cancelRequestedAt } errors { code message } }
}
"""
JOB = "query($id: ID!) { job(id: $id) { cancelRequestedAt } }"


def test_a_checkout_waiting_on_a_silent_gateway_stops_at_once_and_is_undone(shop, user):
    lamp = stocked_product(available=3)
    order = make_order(customer=user, lines=[(lamp, 1)], status="pending")
    client = shop.client(user)
    started = client.data(
        CHECKOUT, {"id": str(global_id("Order", order.pk)), "method": "tok_timeout"}
    )["orderCheckout"]
    job_id = started["job"]["id"]
    wait_until(lambda: gateway_calls(), message="the charge sent")  # its first attempt waits

    answer = client.data(CANCEL, {"id": job_id})["jobCancel"]
    read = client.data(JOB, {"id": job_id})["job"]

    assert answer["errors"] == []
    assert answer["job"]["stage"] == "charge"
    assert answer["job"]["cancelRequestedAt"] is not None
    assert read["cancelRequestedAt"] == answer["job"]["cancelRequestedAt"]
    order.refresh_from_db()
    job = job_finished(order.job_id, timeout=10)
    assert job.status == JobStatus.CANCELLED
    assert len(gateway_calls()) == 1, "no attempt after the cancel"
    # The failure's compensation: the stock released, the charge looked up (none made).
    wait_until(
        lambda: (
            Order.objects.filter(pk=order.pk, reservation=ReservationStatus.RELEASED).exists()
            and Payment.objects.filter(order=order, status=PaymentStatus.FAILED).exists()
        ),
        message="the compensation",
    )
    order.refresh_from_db()
    assert (order.status, order.error_message) == (
        OrderStatus.FAILED,
        "The checkout was cancelled.",
    )
    assert Inventory.objects.filter(product=lamp).values_list("available", "reserved").get() == (
        3,
        0,
    )
    assert Payment.objects.get(order=order).error_message == NO_CHARGE_MESSAGE
    assert GatewayCharge.objects.count() == 0
