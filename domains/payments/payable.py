"""The order a payment charges, as payments sees it.

Orders depends on payments (its checkout charges, verifies and refunds through it) and
never the reverse: what payments needs of an order (its figures, its row lock, whether it
can take a payment) the orders domain provides here, in its AppConfig.ready, as it
listens to `payment_settled` (domains/payments/signals.py) for what payments tells it.
"""

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol


class PayableOrder(Protocol):
    """What payments reads of an order (a `Payment.order`)."""

    pk: int
    number: str
    total_amount: Decimal
    currency: str
    customer_id: int
    job_id: int | None


@dataclass(frozen=True)
class PayableOrders:
    # Lock the order's row (every writer locks the order before its payments); with
    # `pending_only`, only an order still pending: whether it was locked.
    lock: Callable[..., bool]
    # Why the order cannot take a payment: "ALREADY_PAID" or "ORDER_NOT_PAYABLE"; None if it can.
    refusal: Callable[[PayableOrder], str | None]


_orders: list[PayableOrders] = []


def payable_orders_register(orders: PayableOrders) -> None:
    _orders[:] = [orders]


def payable_orders() -> PayableOrders:
    if not _orders:
        raise RuntimeError("no domain provides the orders payments charge")
    return _orders[0]
