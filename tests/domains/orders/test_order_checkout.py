"""The checkout workflow end to end: validate -> reserve -> charge -> confirm as a chain,
and whatever step fails, the compensation leaves stock and money as they were."""

import asyncio
import os
import signal
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest

from domains.catalog.models import Inventory
from domains.jobs.models import Job, JobStatus
from domains.orders.models import Order, OrderStatus, ReservationStatus
from domains.payments.models import LIVE_STATUSES, Payment, PaymentStatus
from domains.sandbox.models import GatewayCharge
from schema.base import global_id
from testbed.factories import make_user
from testbed.graphql import JOB_PROGRESS, Subscription
from testbed.waiting import job_finished, wait_until
from tests.fixtures.commerce import gateway_down, pid_running, stocked_product

pytestmark = pytest.mark.e2e

CREATE = """
mutation($input: OrderCreateInput!) {
  orderCreate(input: $input) { order { id number status totalAmount items { quantity unitPrice product { sku } } } errors { field code } }
}
"""
CHECKOUT = """
mutation($id: ID!, $method: String!) {
  orderCheckout(id: $id, paymentMethod: $method) { order { id status } job { id kind status } errors { code message } }
}
"""
CANCEL = "mutation($id: ID!) { jobCancel(id: $id) { job { id } errors { code } } }"


def _create(client, lines) -> dict:
    items = [{"productId": str(global_id("Product", p.pk)), "quantity": q} for p, q in lines]
    created = client.data(CREATE, {"input": {"items": items}})["orderCreate"]
    assert created["errors"] == []
    return created["order"]


def _checkout(client, order: dict, method: str = "tok_visa") -> dict:
    started = client.data(CHECKOUT, {"id": order["id"], "method": method})["orderCheckout"]
    assert started["errors"] == []
    return started


def _compensated(order: Order) -> bool:
    """The order failed and its compensation done: no stock held, no charge kept or unknown."""
    return (
        Order.objects.filter(pk=order.pk, status=OrderStatus.FAILED)
        .exclude(reservation=ReservationStatus.RESERVED)
        .exists()
        and not Payment.objects.filter(order=order, status__in=LIVE_STATUSES).exists()
    )


def _failed(order: dict) -> tuple[Order, Job]:
    """The order and its job once the job ended and the compensation undid the checkout."""
    saved = Order.objects.get(number=order["number"])
    job = job_finished(saved.job_id)
    wait_until(lambda: _compensated(saved), message="the compensation")
    saved.refresh_from_db()
    return saved, job


def _stock(*products) -> list[tuple[int, int]]:
    return [
        tuple(Inventory.objects.filter(product=p).values_list("available", "reserved").get())
        for p in products
    ]


def test_a_checkout_reserves_charges_and_confirms(shop, user):
    lamp, desk = stocked_product(price="12.50", available=5), stocked_product(available=2)
    client = shop.client(user)
    order = _create(client, [(lamp, 2), (desk, 1)])
    assert Decimal(order["totalAmount"]) == Decimal("35.00")

    started = _checkout(client, order)

    assert started["job"]["kind"] == "ORDER_WORKFLOW"
    saved = Order.objects.get(number=order["number"])
    job = job_finished(saved.job_id)
    saved.refresh_from_db()
    assert (job.status, job.stage, job.progress) == (JobStatus.SUCCESS, "confirm", 1.0)
    assert job.attempts == 1
    assert (saved.status, saved.payment_status) == (OrderStatus.CONFIRMED, "paid")
    assert saved.reservation == ReservationStatus.COMMITTED
    assert _stock(lamp, desk) == [(3, 0), (1, 0)]
    charge = GatewayCharge.objects.get()
    assert (charge.amount, charge.refunded) == (Decimal("35.00"), False)
    assert Payment.objects.get().status == PaymentStatus.SUCCEEDED


def _price_changes(order, products):
    products[0].price = Decimal("99.00")
    products[0].save()


def _stock_runs_out(order, products):
    Inventory.objects.filter(product=products[1]).update(available=0)


FAILURES = {
    # step: (how to make it fail, card token, job error)
    "validate": (_price_changes, "tok_visa", "changed since the order was placed"),
    "reserve": (_stock_runs_out, "tok_visa", "Not enough stock of"),
    "charge": (None, "tok_decline", "The card was declined."),
    "confirm": (None, "tok_flagged", "The gateway reports the charge as flagged."),
}


@pytest.mark.parametrize("step", FAILURES)
def test_a_failure_at_any_step_leaves_no_reservation_and_no_charge(shop, user, step):
    break_it, token, reason = FAILURES[step]
    products = [stocked_product(available=5), stocked_product(available=5)]
    client = shop.client(user)
    order = _create(client, [(products[0], 2), (products[1], 1)])
    if break_it:
        break_it(order, products)
    stock_before = _stock(*products)

    _checkout(client, order, method=token)

    saved, job = _failed(order)
    assert job.status == JobStatus.FAILURE
    assert job.stage == step
    assert reason in job.error
    assert reason in saved.error_message
    assert saved.reservation in (ReservationStatus.NONE, ReservationStatus.RELEASED)
    assert _stock(*products) == stock_before
    assert not GatewayCharge.objects.filter(refunded=False).exists(), "no charge kept"
    if step == "confirm":
        assert GatewayCharge.objects.get().refunded
        assert Payment.objects.get().status == PaymentStatus.REFUNDED
        assert saved.payment_status == "refunded"


def test_two_checkouts_racing_for_the_last_unit_one_wins_one_fails_cleanly(shop, user):
    last = stocked_product(available=1)
    buyers = [shop.client(user), shop.client(make_user())]
    orders = [_create(client, [(last, 1)]) for client in buyers]

    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(_checkout, buyers, orders))

    saved = [Order.objects.get(number=o["number"]) for o in orders]
    jobs = [job_finished(o.job_id) for o in saved]
    wait_until(
        lambda: not Order.objects.filter(status=OrderStatus.PROCESSING).exists(),
        message="both orders to end",
    )
    statuses = sorted(
        Order.objects.filter(pk__in=[o.pk for o in saved]).values_list("status", flat=True)
    )
    assert statuses == [OrderStatus.CONFIRMED, OrderStatus.FAILED]
    assert sorted(j.status for j in jobs) == [JobStatus.FAILURE, JobStatus.SUCCESS]
    loser = Order.objects.get(status=OrderStatus.FAILED)
    assert loser.error_message == f"Not enough stock of {last.sku}."
    assert _stock(last) == [(0, 0)]
    assert GatewayCharge.objects.count() == 1


def test_a_checkout_cancelled_mid_charge_is_refunded_and_fails(shop, user):
    lamp = stocked_product(available=3)
    client = shop.client(user)
    order = _create(client, [(lamp, 1)])
    started = _checkout(client, order, method="tok_slow")  # the gateway answers in 2.5 s

    wait_until(lambda: GatewayCharge.objects.exists(), message="the charge")
    cancelled = client.data(CANCEL, {"id": started["job"]["id"]})["jobCancel"]

    saved, job = _failed(order)
    assert cancelled["errors"] == []
    assert job.status == JobStatus.CANCELLED
    assert saved.error_message == "The checkout was cancelled."
    assert _stock(lamp) == [(3, 0)]
    assert GatewayCharge.objects.get().refunded
    assert Payment.objects.get().status == PaymentStatus.REFUNDED


def test_the_job_names_each_step_and_rolls_up_its_progress(shop, user):
    client = shop.client(user)
    order = _create(client, [(stocked_product(), 1)])
    started = _checkout(client, order)
    job_finished(Order.objects.get(number=order["number"]).job_id)

    async def replay():
        async with Subscription(
            shop.server.ws_url,
            JOB_PROGRESS,
            {"id": started["job"]["id"], "afterSeq": 0},
            token=client.token,
        ) as sub:
            return [e["jobProgress"] for e in await sub.collect()]

    events = asyncio.run(replay())

    stages = [e["stage"] for e in events if e["status"] == "PROGRESS"]
    assert stages == ["validate", "reserve", "charge", "confirm"]
    progress = [e["progress"] for e in events if e["progress"] is not None]
    assert progress == sorted(progress)
    assert [e["current"] for e in events if e["status"] == "PROGRESS"] == [0, 1, 2, 3]
    assert (events[-1]["status"], events[-1]["progress"]) == ("SUCCESS", 1.0)


def test_a_worker_killed_mid_charge_finishes_the_checkout_with_one_charge(shop, user):
    lamp = stocked_product(available=3)
    client = shop.client(user)
    order = _create(client, [(lamp, 1)])
    _checkout(client, order, method="tok_slow")  # the gateway answers in 2.5 s

    wait_until(lambda: GatewayCharge.objects.exists(), message="the charge")
    os.kill(pid_running("orders.checkout_charge"), signal.SIGKILL)

    saved = Order.objects.get(number=order["number"])
    job = job_finished(saved.job_id)
    saved.refresh_from_db()
    assert job.status == JobStatus.SUCCESS
    assert saved.status == OrderStatus.CONFIRMED
    assert _stock(lamp) == [(2, 0)]
    assert GatewayCharge.objects.count() == 1
    assert (
        Payment.objects.get().gateway_transaction_id == GatewayCharge.objects.get().transaction_id
    )


def test_a_charge_lost_with_its_worker_while_the_gateway_is_down_is_found_and_refunded(shop, user):
    lamp = stocked_product(available=3)
    client = shop.client(user)
    order = _create(client, [(lamp, 1)])
    _checkout(client, order, method="tok_slow")  # the gateway answers in 2.5 s

    wait_until(lambda: GatewayCharge.objects.exists(), message="the charge")
    gateway_down(shop)
    os.kill(pid_running("orders.checkout_charge"), signal.SIGKILL)

    saved = Order.objects.get(number=order["number"])
    assert job_finished(saved.job_id).status == JobStatus.FAILURE
    # The compensation gave the stock back, but cannot know yet whether money moved.
    wait_until(lambda: _stock(lamp) == [(3, 0)], message="the stock released")
    saved.refresh_from_db()
    assert saved.status == OrderStatus.FAILED
    assert "unavailable" in saved.error_message
    assert Payment.objects.get().status == PaymentStatus.PROCESSING, "unknown, not assumed"
    assert not GatewayCharge.objects.get().refunded

    gateway_down(shop, down=False)

    wait_until(
        lambda: GatewayCharge.objects.filter(refunded=True).exists(),
        message="the charge found and refunded",
    )
    payment = Payment.objects.get()
    wait_until(
        lambda: Payment.objects.filter(pk=payment.pk, status=PaymentStatus.REFUNDED).exists(),
        message="the refund recorded",
    )
    payment.refresh_from_db()
    saved.refresh_from_db()
    assert payment.gateway_transaction_id == GatewayCharge.objects.get().transaction_id
    assert (saved.status, saved.payment_status) == (OrderStatus.FAILED, "refunded")
