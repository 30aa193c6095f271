"""Keyset batches: every row once, in order, and nothing held open between batches."""

import threading

import pytest
from django.db import connections
from django.utils import timezone

from domains.catalog.models import Product
from domains.infra.keyset import keyset_batches
from domains.orders.models import OrderItem
from testbed.factories import make_order, make_product

pytestmark = pytest.mark.django_db(transaction=True)

KEY = ("order__created_at", "order_id", "id")


def _lines():
    return OrderItem.objects.order_by(*KEY).values_list("quantity")


def _commit_elsewhere(write) -> None:
    """Run `write` on another connection (another thread's), committed when it returns."""

    def run():
        try:
            write()
        finally:
            connections.close_all()  # this thread's own connection

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    assert not thread.is_alive()


def test_batches_give_every_row_once_in_order_through_ties_on_the_first_key(user):
    product = make_product()
    at = timezone.now()  # every order at once: the first key ties throughout
    for n in range(5):
        make_order(
            customer=user, lines=[(product, 10 * n + 1), (product, 10 * n + 2)], created_at=at
        )

    batches = list(keyset_batches(_lines(), key=KEY, size=4))

    assert [len(batch) for batch in batches] == [4, 4, 2]
    assert [row for batch in batches for row in batch] == list(_lines())
    assert batches[0][0] == (1,)  # the key's own columns are not in the rows


def test_between_batches_the_connection_writes_after_another_one_committed(user):
    """A cursor held open across batches would keep a snapshot that the other connection's
    commit makes stale, and on SQLite this connection's write would then be refused."""
    product = make_product(price="1.00")
    for n in range(6):
        make_order(customer=user, lines=[(product, n + 1)])
    read = []

    for batch in keyset_batches(_lines(), key=KEY, size=2):
        read += batch
        _commit_elsewhere(lambda: make_product())
        Product.objects.filter(pk=product.pk).update(price=len(read))  # this connection writes

    assert read == [(n + 1,) for n in range(6)]
    assert Product.objects.get(pk=product.pk).price == 6


def test_rows_committed_meanwhile_after_the_last_key_are_read_and_none_before(user):
    product = make_product()
    start = timezone.now()
    for n in range(4):
        make_order(customer=user, lines=[(product, n + 1)], created_at=start)
    batches = keyset_batches(_lines(), key=KEY, size=2)

    first = next(batches)
    _commit_elsewhere(
        lambda: (
            make_order(customer=user, lines=[(product, 50)], created_at=start.replace(year=2000)),
            make_order(customer=user, lines=[(product, 60)], created_at=start.replace(year=2999)),
        )
    )
    rest = [row for batch in batches for row in batch]

    assert first + rest == [(1,), (2,), (3,), (4,), (60,)]
