"""The commerce rules, called directly (no GraphQL, no worker)."""

import json
from decimal import Decimal

import pytest
from celery import current_app
from django.conf import settings
from django.test import Client

from domains.catalog.models import Inventory
from domains.errors import DomainError
from domains.jobs.ending import job_end
from domains.jobs.idempotency import (
    IdempotencyError,
    IdempotentRequest,
    idempotency_digest,
    idempotent_start,
)
from domains.jobs.models import Job, JobStatus
from domains.orders.errors import OrderError
from domains.orders.models import Order, OrderStatus, ReservationStatus
from domains.orders.services import (
    checkout_compensate,
    checkout_reserve,
    order_checkout,
    order_confirmation_send,
    order_create,
)
from domains.payments.errors import PaymentError
from domains.payments.models import Payment
from domains.payments.services import payment_process
from domains.sandbox.models import GatewayCharge
from testbed.factories import make_order
from tests.fixtures.commerce import stocked_product
from workers.orders import checkout_compensate as compensate_task


@pytest.fixture
def no_stray_tasks(transactional_db):
    """Services send their tasks on commit; these tests run none of them: end their jobs
    (a worker that receives one drops it) and take them off the queue."""
    yield
    Job.objects.update(status=JobStatus.CANCELLED)
    current_app.control.purge()


def _pay(user, order: Order, method: str, *, key: str) -> Payment:
    """paymentProcess as the schema runs it: the payment, once per key."""
    request = IdempotentRequest(
        owner=user,
        operation="paymentProcess",
        key=key,
        digest=idempotency_digest({"orderId": order.pk, "method": method}),
        what="payment",
    )
    return idempotent_start(
        request,
        start=lambda: payment_process(viewer=user, order=order, method=method),
        replay=lambda job: job.payment,
    )


def _pending(user, *lines) -> Order:
    return make_order(customer=user, lines=list(lines), status=OrderStatus.PENDING)


def test_same_key_same_parameters_is_the_same_payment(no_stray_tasks, user):
    order = _pending(user, (stocked_product(price="4.00"), 3))

    first = _pay(user, order, "tok_visa", key="a")
    again = _pay(user, order, "tok_visa", key="a")

    assert (again.pk, again.job_id) == (first.pk, first.job_id)
    assert first.amount == Decimal("12.00")
    assert Payment.objects.count() == 1


def test_same_key_other_method_is_refused(no_stray_tasks, user):
    order = _pending(user, (stocked_product(), 1))
    _pay(user, order, "tok_visa", key="a")

    with pytest.raises(IdempotencyError) as refused:
        _pay(user, order, "tok_decline", key="a")

    assert refused.value.code == "IDEMPOTENCY_KEY_REUSED"
    assert Payment.objects.count() == 1


def test_an_order_has_one_live_payment_whatever_the_keys(no_stray_tasks, user):
    order = _pending(user, (stocked_product(), 1))
    _pay(user, order, "tok_visa", key="a")

    with pytest.raises(PaymentError) as refused:
        _pay(user, order, "tok_visa", key="b")

    assert refused.value.code == "PAYMENT_IN_PROGRESS"  # the first is not paid yet
    assert Payment.objects.count() == 1


def test_an_order_with_a_payment_in_flight_is_not_checked_out(no_stray_tasks, user):
    order = _pending(user, (stocked_product(price="4.00"), 1))
    _pay(user, order, "tok_visa", key="direct")

    with pytest.raises(OrderError) as refused:
        order_checkout(viewer=user, order=order, payment_method="tok_visa")

    assert refused.value.code == "PAYMENT_IN_PROGRESS"
    order.refresh_from_db()
    assert (order.status, order.job_id) == (OrderStatus.PENDING, None)
    assert Job.objects.count() == 1  # the payment's only


def test_an_order_being_checked_out_takes_no_other_payment(no_stray_tasks, user):
    order = _pending(user, (stocked_product(price="4.00"), 1))
    order_checkout(viewer=user, order=order, payment_method="tok_visa")

    with pytest.raises(PaymentError) as refused:
        _pay(user, order, "tok_visa", key="direct")

    assert (refused.value.code, refused.value.field) == ("ORDER_NOT_PAYABLE", "orderId")
    assert Payment.objects.count() == 0


def test_after_a_failed_payment_the_order_can_be_paid_again(no_stray_tasks, user):
    order = _pending(user, (stocked_product(price="4.00"), 1))
    first = _pay(user, order, "tok_visa", key="a")
    job_end(job_id=first.job_id, status=JobStatus.FAILURE, error="The card was declined.")

    again = _pay(user, order, "tok_visa", key="b")
    job_end(job_id=again.job_id, status=JobStatus.FAILURE, error="The card was declined.")
    order.refresh_from_db()
    checked_out = order_checkout(viewer=user, order=order, payment_method="tok_visa")

    assert again.pk != first.pk
    assert checked_out.status == OrderStatus.PROCESSING


def test_keys_are_scoped_to_their_client(no_stray_tasks, user, other_user):
    mine = _pending(user, (stocked_product(), 1))
    theirs = _pending(other_user, (stocked_product(), 1))

    _pay(user, mine, "tok_visa", key="k")
    _pay(other_user, theirs, "tok_visa", key="k")

    assert Payment.objects.count() == 2


@pytest.mark.parametrize(
    ("lines", "code"),
    [([], "EMPTY_ORDER"), ([(1, 0)], "INVALID_QUANTITY"), ([(999_999, 1)], "PRODUCT_NOT_FOUND")],
)
def test_an_order_needs_real_products_and_quantities(db, user, lines, code):
    with pytest.raises(OrderError) as refused:
        order_create(viewer=user, lines=lines)

    assert refused.value.code == code
    assert not Order.objects.exists()


def _stock(product) -> tuple[int, int]:
    return Inventory.objects.filter(product=product).values_list("available", "reserved").get()


def test_a_reservation_is_all_or_nothing(transactional_db, user):
    plenty, scarce = stocked_product(available=5), stocked_product(available=1)
    order = _pending(user, (plenty, 2), (scarce, 2))
    Order.objects.filter(pk=order.pk).update(status=OrderStatus.PROCESSING)

    with pytest.raises(OrderError) as refused:
        checkout_reserve(order=order)

    assert refused.value.code == "OUT_OF_STOCK"
    assert (_stock(plenty), _stock(scarce)) == ((5, 0), (1, 0))
    assert Order.objects.get().reservation == ReservationStatus.NONE


def test_reserving_twice_and_compensating_twice_move_stock_once(transactional_db, user):
    lamp = stocked_product(available=5)
    order = _pending(user, (lamp, 2))
    Order.objects.filter(pk=order.pk).update(status=OrderStatus.PROCESSING)

    checkout_reserve(order=order)
    checkout_reserve(order=order)
    assert _stock(lamp) == (3, 2)
    Order.objects.filter(pk=order.pk).update(status=OrderStatus.FAILED)  # its job ended
    checkout_compensate(order=order)
    checkout_compensate(order=order)

    assert _stock(lamp) == (5, 0)
    order.refresh_from_db()
    assert (order.status, order.reservation) == (OrderStatus.FAILED, ReservationStatus.RELEASED)


def _charge(client: Client, key: str, **body) -> tuple[int, dict]:
    payload = {"amount": "5.00", "currency": "USD", "source": "tok_visa", **body}
    response = client.post(
        "/sandbox/gateway/charges",
        json.dumps(payload),
        content_type="application/json",
        headers={
            "Authorization": f"Bearer {settings.SANDBOX_GATEWAY_API_KEY}",
            "Idempotency-Key": key,
        },
    )
    return response.status_code, response.json()


def test_the_sandbox_gateway_honours_idempotency_keys(transactional_db):
    client = Client(HTTP_HOST="127.0.0.1")

    first = _charge(client, "key-1")
    repeat = _charge(client, "key-1")
    other_body = _charge(client, "key-1", amount="6.00")

    assert first[0] == repeat[0] == 201
    assert repeat[1]["id"] == first[1]["id"]
    assert other_body[0] == 422
    assert other_body[1]["error"]["code"] == "idempotency_key_reused"
    assert GatewayCharge.objects.count() == 1


def test_the_sandbox_gateway_looks_a_charge_up_by_its_key(transactional_db):
    client = Client(HTTP_HOST="127.0.0.1")
    _status, charge = _charge(client, "key-1")

    def lookup(key: str):
        return client.get(
            "/sandbox/gateway/charges",
            {"idempotency_key": key},
            headers={"Authorization": f"Bearer {settings.SANDBOX_GATEWAY_API_KEY}"},
        )

    found, missing = lookup("key-1"), lookup("key-2")

    assert (found.status_code, found.json()["id"]) == (200, charge["id"])
    assert found.json()["status"] == "captured"
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "no_such_charge")
    assert GatewayCharge.objects.count() == 1


def test_the_sandbox_gateway_checks_its_key(transactional_db):
    response = Client(HTTP_HOST="127.0.0.1").post(
        "/sandbox/gateway/charges",
        "{}",
        content_type="application/json",
        headers={"Authorization": "Bearer wrong", "Idempotency-Key": "k"},
    )

    assert response.status_code == 401
    assert not GatewayCharge.objects.exists()


def test_the_confirmation_email_is_sent_once(transactional_db, user, mailoutbox):
    order = make_order(customer=user, lines=[(stocked_product(), 1)])

    sent = [order_confirmation_send(order=order), order_confirmation_send(order=order)]

    assert sent == [True, False]
    assert len(mailoutbox) == 1
    assert mailoutbox[0].to == [user.email]
    assert mailoutbox[0].subject == f"Order {order.number} confirmed"


@pytest.mark.parametrize("model", ["product", "inventory", "order", "payment"])
def test_staff_can_browse_commerce_in_the_admin(db, admin_client, user, model):
    order = make_order(customer=user, lines=[(stocked_product(), 1)])
    payment = Payment.objects.create(
        order=order,
        created_by=user,
        amount=1,
        currency="USD",
        method="tok_visa",
        idempotency_key="admin",
    )
    app = {"product": "catalog", "inventory": "catalog", "order": "orders", "payment": "payments"}
    pk = {
        "product": order.items.get().product_id,
        "inventory": Inventory.objects.get().pk,
        "order": order.pk,
        "payment": payment.pk,
    }

    listing = admin_client.get(f"/admin/{app[model]}/{model}/", HTTP_HOST="127.0.0.1")
    detail = admin_client.get(
        f"/admin/{app[model]}/{model}/{pk[model]}/change/", HTTP_HOST="127.0.0.1"
    )

    assert (listing.status_code, detail.status_code) == (200, 200)


@pytest.mark.parametrize(
    ("method", "key", "code"),
    [
        ("tok_visa", "", "INVALID_IDEMPOTENCY_KEY"),
        ("tok_visa", "k" * 256, "INVALID_IDEMPOTENCY_KEY"),
        ("  ", "k", "INVALID_METHOD"),
        ("t" * 65, "k", "INVALID_METHOD"),
    ],
)
def test_a_payment_needs_a_key_and_a_method(no_stray_tasks, user, method, key, code):
    order = _pending(user, (stocked_product(), 1))

    with pytest.raises(DomainError) as refused:
        _pay(user, order, method, key=key)

    assert refused.value.code == code
    assert not Payment.objects.exists()


def test_a_client_key_never_names_a_payment_at_the_gateway(no_stray_tasks, user):
    cheap, dear = (
        _pending(user, (stocked_product(price="1.00"), 1)),
        _pending(user, (stocked_product(price="900.00"), 1)),
    )

    payment = _pay(user, cheap, "tok_visa", key=f"checkout-{dear.pk}")

    # Its own key, from its job: a client's key expires, the gateway's memory does not.
    assert payment.idempotency_key == f"process-{payment.job.task_id}"
    assert payment.gateway_idempotency_key == f"user-{user.pk}:process-{payment.job.task_id}"


@pytest.mark.parametrize("amount", ["NaN", "-1", "0", "1e400", "0.001", "ten", None])
def test_the_sandbox_gateway_refuses_hostile_amounts(transactional_db, amount):
    status, body = _charge(Client(HTTP_HOST="127.0.0.1"), f"key-{amount}", amount=amount)

    assert (status, body["error"]["code"]) == (400, "invalid_request")
    assert not GatewayCharge.objects.exists()


def test_a_compensation_cut_short_by_a_lost_worker_is_delivered_again():
    """Nothing else ever undoes a failed checkout: a compensation whose worker dies must be
    requeued (Celery acks an acks_late task whose worker is lost unless told otherwise)."""
    assert (compensate_task.acks_late, compensate_task.reject_on_worker_lost) == (True, True)
