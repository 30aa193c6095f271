"""products, orders and payments as Relay connections: filters, ordering, the viewer's
scope, and a query count that does not grow with the rows (the optimizer's joins)."""

import pytest

from domains.jobs.models import JobKind
from domains.jobs.services import job_create
from domains.payments.models import Payment, PaymentStatus
from schema.base import global_id
from testbed.factories import make_category, make_order, make_user
from tests.fixtures.commerce import InProcessGraphQL, stocked_product

PRODUCTS = """
query($filters: ProductFilter, $ordering: [ProductOrder!]) {
  products(filters: $filters, ordering: $ordering) {
    totalCount edges { node { sku price available category { name } } }
  }
}
"""
ORDERS = """
query($ordering: [OrderOrder!], $filters: OrderFilter) {
  orders(ordering: $ordering, filters: $filters) {
    totalCount
    edges { node { number status totalAmount
      items { quantity unitPrice product { sku available } }
      payments { status amount gatewayTransactionId } } }
  }
}
"""
PAYMENTS = """
query($filters: PaymentFilter) {
  payments(filters: $filters, ordering: [{createdAt: DESC}]) {
    totalCount edges { node { id amount status order { number } } }
  }
}
"""


def _orders_with_payments(customer, count: int) -> None:
    books = make_category()
    products = [stocked_product(price="5.00", available=3, category=books) for _ in range(3)]
    for i in range(count):
        order = make_order(customer=customer, lines=[(products[0], 1), (products[i % 3], 2)])
        Payment.objects.create(
            order=order,
            created_by=customer,
            amount=order.total_amount,
            currency="USD",
            method="tok_visa",
            idempotency_key=f"k{i}",
            status=PaymentStatus.SUCCEEDED,
            gateway_transaction_id=f"ch_{i}",
        )


@pytest.mark.parametrize("orders", [2, 12])
def test_orders_cost_the_same_queries_for_2_or_12_orders(
    db, user, orders, django_assert_num_queries
):
    _orders_with_payments(user, orders)
    client = InProcessGraphQL(user)

    # the token and its last use; orders with their count; then one prefetch each for
    # items, their products (with stock joined) and payments, whatever the number of rows
    with django_assert_num_queries(6):
        data = client.data(ORDERS, {"ordering": [{"createdAt": "DESC"}]})

    assert data["orders"]["totalCount"] == orders
    node = data["orders"]["edges"][0]["node"]
    assert len(node["items"]) == 2
    assert node["payments"][0]["status"] == "succeeded"


def test_products_filter_and_order_with_stock(db, user, django_assert_num_queries):
    garden = make_category("Garden")
    stocked_product(sku="G-2", price="20.00", available=4, category=garden)
    stocked_product(sku="G-1", price="30.00", available=0, category=garden)
    stocked_product(sku="X-1", price="25.00", available=9)
    client = InProcessGraphQL(user)

    with django_assert_num_queries(3):
        data = client.data(
            PRODUCTS,
            {"filters": {"sku": {"startsWith": "G-"}}, "ordering": [{"price": "DESC"}]},
        )

    assert data["products"]["totalCount"] == 2
    assert [e["node"] for e in data["products"]["edges"]] == [
        {"sku": "G-1", "price": "30.00", "available": 0, "category": {"name": "Garden"}},
        {"sku": "G-2", "price": "20.00", "available": 4, "category": {"name": "Garden"}},
    ]


def test_another_users_orders_payments_and_jobs_are_invisible(db, user):
    _orders_with_payments(user, 2)
    stranger = InProcessGraphQL(make_user())
    order = user.orders.first()
    payment = Payment.objects.filter(order=order).get()
    payment.job = job_create(kind=JobKind.PAYMENT, owner=user)
    payment.save()
    ids = {
        "o": str(global_id("Order", order.pk)),
        "p": str(global_id("Payment", payment.pk)),
        "j": str(global_id("Job", payment.job_id)),
    }

    seen = stranger.data(
        "query($o: ID!, $p: ID!, $j: ID!) { order(id: $o) { id } payment(id: $p) { id } job(id: $j) { id } }",
        ids,
    )

    assert seen == {"order": None, "payment": None, "job": None}
    assert stranger.data(ORDERS)["orders"]["totalCount"] == 0
    assert stranger.data(PAYMENTS)["payments"]["totalCount"] == 0
    assert InProcessGraphQL(user).data(PAYMENTS)["payments"]["totalCount"] == 2


def test_another_users_order_cannot_be_paid_or_checked_out(db, user):
    order = make_order(customer=user, lines=[(stocked_product(), 1)], status="pending")
    stranger = InProcessGraphQL(make_user())
    order_id = str(global_id("Order", order.pk))

    refused = stranger.data(
        """mutation($o: ID!, $input: PaymentProcessInput!) {
          paymentProcess(input: $input) { payment { id } errors { field code } }
          orderCheckout(id: $o, paymentMethod: "tok_visa") { order { id } errors { field code } }
        }""",
        {
            "o": order_id,
            "input": {"orderId": order_id, "method": "tok_visa", "idempotencyKey": "x"},
        },
    )

    assert refused == {
        "paymentProcess": {"payment": None, "errors": [{"field": "orderId", "code": "NOT_FOUND"}]},
        "orderCheckout": {"order": None, "errors": [{"field": "id", "code": "NOT_FOUND"}]},
    }
    order.refresh_from_db()
    assert (order.status, order.job_id) == ("pending", None)
    assert not Payment.objects.exists()


def test_staff_see_every_order(db, user, staff_user):
    _orders_with_payments(user, 3)

    data = InProcessGraphQL(staff_user).data(
        ORDERS, {"filters": {"status": {"exact": "confirmed"}}}
    )

    assert data["orders"]["totalCount"] == 3
