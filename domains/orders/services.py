"""Orders: creating one, and the checkout workflow validate -> reserve -> charge -> confirm.

Each step is safe to run twice: stock moves only through conditional UPDATEs guarded by
the order's `reservation` state, so a redelivered step changes nothing a second time.
"""

import logging
import secrets
from collections import Counter
from collections.abc import Iterable

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from domains.accounts.models import User
from domains.catalog.models import Inventory, Product
from domains.integrations.client import RetryLater
from domains.jobs.ending import JobEnd
from domains.jobs.models import TERMINAL_STATUSES, Job, JobKind
from domains.jobs.outbox import followup_pending, followup_queue
from domains.jobs.retry import RetryOptions
from domains.jobs.services import job_create, job_dispatch, job_point_of_no_return
from domains.jobs.tasks import JobTaskName
from domains.orders.errors import OrderError, OrderErrorCode
from domains.orders.models import Order, OrderItem, OrderStatus, ReservationStatus
from domains.orders.models import PaymentStatus as OrderPaymentStatus
from domains.payments.errors import PaymentErrorCode
from domains.payments.models import LIVE_STATUSES, Payment, PaymentStatus
from domains.payments.services import (
    UNSETTLED_STATUSES,
    payment_charge,
    payment_charge_status,
    payment_for_checkout,
    payment_reconcile,
    payment_refund,
)

logger = logging.getLogger(__name__)

MAX_LINES = 50
MAX_QUANTITY = 1_000
CHECKOUT_STEPS = ("validate", "reserve", "charge", "confirm")
# A failed checkout can run again once its stock is not held: never reserved, or released.
RETRYABLE_RESERVATIONS = (ReservationStatus.NONE, ReservationStatus.RELEASED)


def order_create(*, viewer: User, lines: Iterable[tuple[int, int]]) -> Order:
    """A pending order of (product id, quantity) lines at today's prices."""
    quantities: Counter[int] = Counter()
    for product_id, quantity in lines:
        if not 1 <= quantity <= MAX_QUANTITY:
            raise OrderError(
                f"Enter a quantity of 1 to {MAX_QUANTITY}.",
                code=OrderErrorCode.INVALID_QUANTITY,
                field="items",
            )
        quantities[product_id] += quantity
    if not quantities or len(quantities) > MAX_LINES:
        raise OrderError(
            f"An order has 1 to {MAX_LINES} products.",
            code=OrderErrorCode.EMPTY_ORDER,
            field="items",
        )
    products = Product.objects.in_bulk(quantities.keys())
    if len(products) != len(quantities):
        raise OrderError("No such product.", code=OrderErrorCode.PRODUCT_NOT_FOUND, field="items")
    with transaction.atomic(durable=True):
        order = Order.objects.create(
            number=f"SO-{secrets.token_hex(5).upper()}",
            customer=viewer,
            created_at=timezone.now(),
            total_amount=sum(products[pk].price * q for pk, q in quantities.items()),
        )
        OrderItem.objects.bulk_create(
            [
                OrderItem(
                    order=order, product=products[pk], quantity=q, unit_price=products[pk].price
                )
                for pk, q in sorted(quantities.items())
            ]
        )
    logger.info("order.created", extra={"order_id": order.pk})
    return order


def order_checkout(*, viewer: User, order: Order, payment_method: str) -> Order:
    """Start the checkout workflow: one Job whose task runs the steps as a chain; the
    order fails with its job, and compensation undoes what the steps did."""
    if not payment_method.strip() or len(payment_method) > 64:
        raise OrderError(
            "Enter a payment method.", code=PaymentErrorCode.INVALID_METHOD, field="paymentMethod"
        )
    if order.payment_status != OrderPaymentStatus.UNPAID:
        raise OrderError("The order is already paid.", code=PaymentErrorCode.ALREADY_PAID)
    with transaction.atomic(durable=True):
        job = job_create(kind=JobKind.ORDER_WORKFLOW, owner=viewer, total=len(CHECKOUT_STEPS))
        if not Order.objects.filter(pk=order.pk, status=OrderStatus.PENDING).update(
            status=OrderStatus.PROCESSING, job=job, error_message=""
        ):
            raise OrderError(
                "Only a pending order can be checked out.", code=OrderErrorCode.NOT_PENDING
            )
        # Checked under the row lock the update above took, which paymentProcess takes too:
        # a payment made outside the checkout would collide with the checkout's own.
        if Payment.objects.filter(order=order, status__in=LIVE_STATUSES).exists():
            raise OrderError(
                "The order has a payment in progress.",
                code=PaymentErrorCode.PAYMENT_IN_PROGRESS,
            )
        job_dispatch(
            job=job,
            task_name=JobTaskName.ORDERS_CHECKOUT,
            order_id=order.pk,
            payment_method=payment_method,
        )
    order.refresh_from_db()
    logger.info("order.checkout_started", extra={"order_id": order.pk, "job_id": job.pk})
    return order


def _require_processing(order: Order) -> None:
    if not Order.objects.filter(pk=order.pk, status=OrderStatus.PROCESSING).exists():
        raise OrderError(
            "The order is no longer being checked out.", code=OrderErrorCode.NOT_PENDING
        )


def checkout_validate(*, order: Order) -> None:
    _require_processing(order)
    items = list(order.items.select_related("product"))
    if not items:
        raise OrderError("The order has no items.", code=OrderErrorCode.EMPTY_ORDER)
    for item in items:
        if item.unit_price != item.product.price:
            raise OrderError(
                f"The price of {item.product.sku} changed since the order was placed.",
                code=OrderErrorCode.PRICE_CHANGED,
            )


def _quantities(order: Order) -> list[tuple[int, int]]:
    """(product id, quantity) in product order, so that concurrent checkouts lock rows
    in the same order and cannot deadlock."""
    counts: Counter[int] = Counter()
    for product_id, quantity in order.items.values_list("product_id", "quantity"):
        counts[product_id] += quantity
    return sorted(counts.items())


def checkout_reserve(*, order: Order) -> None:
    """Hold every line's stock, or none of it (one transaction, conditional UPDATEs)."""
    _require_processing(order)
    with transaction.atomic(durable=True):
        if not Order.objects.filter(pk=order.pk, reservation=ReservationStatus.NONE).update(
            reservation=ReservationStatus.RESERVED
        ):
            return  # reserved by an earlier run of this step
        for product_id, quantity in _quantities(order):
            if not Inventory.objects.filter(product_id=product_id, available__gte=quantity).update(
                available=F("available") - quantity, reserved=F("reserved") + quantity
            ):
                sku = Product.objects.filter(pk=product_id).values_list("sku", flat=True).first()
                raise OrderError(f"Not enough stock of {sku}.", code=OrderErrorCode.OUT_OF_STOCK)


def checkout_charge(*, order: Order, payment_method: str) -> Payment:
    _require_processing(order)
    return payment_charge(payment=payment_for_checkout(order=order, method=payment_method))


def checkout_confirm(*, order: Order) -> None:
    """Confirm the order once the gateway vouches for its charge; the stock is sold."""
    payment = Payment.objects.get(order=order, status=PaymentStatus.SUCCEEDED)
    verified = payment_charge_status(payment=payment)
    if verified != "captured":
        raise OrderError(
            f"The gateway reports the charge as {verified}.",
            code=OrderErrorCode.PAYMENT_NOT_VERIFIED,
        )
    with transaction.atomic(durable=True):
        # Confirmed, the order is sold and its customer mailed: a cancel accepted before
        # this stops the checkout here (and it is undone); from here on one is refused.
        job_point_of_no_return(
            job_id=order.job_id, reason="the order is confirmed and its customer notified."
        )
        if not Order.objects.filter(pk=order.pk, status=OrderStatus.PROCESSING).update(
            status=OrderStatus.CONFIRMED
        ):
            return  # confirmed by an earlier run of this step
        if Order.objects.filter(pk=order.pk, reservation=ReservationStatus.RESERVED).update(
            reservation=ReservationStatus.COMMITTED
        ):
            for product_id, quantity in _quantities(order):
                Inventory.objects.filter(product_id=product_id).update(
                    reserved=F("reserved") - quantity
                )
        followup_queue(
            task_name=JobTaskName.ORDERS_SEND_CONFIRMATION,
            key=f"{JobTaskName.ORDERS_SEND_CONFIRMATION}:{order.pk}",
            order_id=order.pk,
        )
    logger.info("order.confirmed", extra={"order_id": order.pk})


def checkout_compensate(*, order: Order) -> None:
    """Undo a failed checkout: release the stock, refund the charge.

    A charge whose outcome is unknown (its answer lost with a worker, the gateway down) is
    first settled with the gateway by its key; until the gateway answers (RetryLater) the
    undo is retried. A charge found is refunded like any other: a failed checkout keeps
    no money, and a failed order never keeps a charge.

    The order failed with its job (checkout_job_ended); each undo is conditional, so
    running this twice (or after a partial run) is safe; an order that is not failed is
    left alone.
    """
    if not Order.objects.filter(pk=order.pk, status=OrderStatus.FAILED).exists():
        return
    with transaction.atomic(durable=True):
        if Order.objects.filter(pk=order.pk, reservation=ReservationStatus.RESERVED).update(
            reservation=ReservationStatus.RELEASED
        ):
            for product_id, quantity in _quantities(order):
                Inventory.objects.filter(product_id=product_id).update(
                    available=F("available") + quantity, reserved=F("reserved") - quantity
                )
    for payment in Payment.objects.filter(order=order, status__in=UNSETTLED_STATUSES):
        payment_reconcile(payment=payment)
    for payment in Payment.objects.filter(order=order, status=PaymentStatus.SUCCEEDED):
        payment_refund(payment=payment)
    logger.info("order.checkout_compensated", extra={"order_id": order.pk})


def checkout_job_ended(order: Order, end: JobEnd) -> None:
    """The order's end, with its checkout job's: confirmed orders stay confirmed (the last
    step confirmed it); one the end failed (the end transition, with the reason) is undone
    (release the stock, refund a charge) once this commits."""
    if end.record_moved:
        checkout_compensate_queue(order=order)


def _compensate_key(order: Order) -> str:
    return f"{JobTaskName.ORDERS_CHECKOUT_COMPENSATE}:{order.pk}"


def checkout_compensate_queue(*, order: Order) -> None:
    """Undo the failed checkout once the caller's transaction commits, through the outbox:
    a send lost to a broker outage or a dead process is sent again, and the undo, being
    conditional, does nothing twice."""
    followup_queue(
        task_name=JobTaskName.ORDERS_CHECKOUT_COMPENSATE,
        key=_compensate_key(order),
        order_id=order.pk,
    )


def checkouts_undone_sweep() -> int:
    """The watchdog's check on failed checkouts: an order whose checkout job ended, failed,
    with stock still held or money not settled (a charge kept or unknown), and that nothing
    is undoing, is compensated now."""
    queued = 0
    failed = Order.objects.filter(status=OrderStatus.FAILED, job__status__in=TERMINAL_STATUSES)
    holding = failed.filter(reservation=ReservationStatus.RESERVED) | failed.filter(
        payments__status__in=LIVE_STATUSES
    )
    for order in holding.distinct():
        if followup_pending(_compensate_key(order)):
            continue
        logger.warning("order.undone_checkout_swept", extra={"order_id": order.pk})
        checkout_compensate_queue(order=order)
        queued += 1
    return queued


def checkout_job_retry(original: Job, retry: Job, options: RetryOptions) -> None:
    """A failed checkout run again: once its compensation is done (the stock released, no
    charge kept or still unknown), the order is checked out again by a new job, with the
    payment method given or the same one; its charge has a key of its own."""
    payment_method = options.payment_method or original.task_kwargs.get("payment_method", "")
    if not payment_method.strip() or len(payment_method) > 64:
        raise OrderError(
            "Enter a payment method.", code=PaymentErrorCode.INVALID_METHOD, field="paymentMethod"
        )
    order = Order.objects.filter(job=original).first()
    if order is None or order.payment_status == OrderPaymentStatus.PAID:
        raise OrderError("The order is already paid.", code=PaymentErrorCode.ALREADY_PAID)
    if Payment.objects.filter(order=order, status__in=LIVE_STATUSES).exists():
        raise OrderError(
            "The failed checkout is still being undone; try again in a moment.",
            code=PaymentErrorCode.PAYMENT_IN_PROGRESS,
        )
    if not Order.objects.filter(
        pk=order.pk, status=OrderStatus.FAILED, reservation__in=RETRYABLE_RESERVATIONS
    ).update(
        status=OrderStatus.PROCESSING,
        payment_status=OrderPaymentStatus.UNPAID,
        reservation=ReservationStatus.NONE,
        job=retry,
        error_message="",
    ):
        raise OrderError(
            "The failed checkout is still being undone; try again in a moment.",
            code=PaymentErrorCode.PAYMENT_IN_PROGRESS,
        )
    job_dispatch(
        job=retry,
        task_name=JobTaskName.ORDERS_CHECKOUT,
        order_id=order.pk,
        payment_method=payment_method,
    )


def order_lock(order_id: int, *, pending_only: bool = False) -> bool:
    """Payments' lock on an order (domains/payments/payable.py), taken before its payments'
    rows: with `pending_only`, only an order still pending; whether it was locked."""
    orders = Order.objects.select_for_update().filter(pk=order_id)
    if pending_only:
        orders = orders.filter(status=OrderStatus.PENDING)
    return bool(list(orders.values_list("pk", flat=True)))


def order_payment_refusal(order: Order) -> str | None:
    """Why payments may not take a payment of the order now (None: it may)."""
    if order.payment_status == OrderPaymentStatus.PAID:
        return PaymentErrorCode.ALREADY_PAID
    if order.status != OrderStatus.PENDING or order.total_amount <= 0:
        return PaymentErrorCode.ORDER_NOT_PAYABLE
    return None


def order_payment_settled(sender: type, *, payment: Payment, **_: object) -> None:
    """Payments' `payment_settled` receiver: the order's payment status follows its money."""
    status = {
        PaymentStatus.SUCCEEDED: OrderPaymentStatus.PAID,
        PaymentStatus.REFUNDED: OrderPaymentStatus.REFUNDED,
    }.get(payment.status)
    if status is not None:
        Order.objects.filter(pk=payment.order_id).update(payment_status=status)


def order_confirmation_send(*, order: Order) -> bool:
    """Email the customer once: the row is claimed before sending, released if it fails."""
    if not Order.objects.filter(pk=order.pk, confirmation_emailed_at=None).update(
        confirmation_emailed_at=timezone.now()
    ):
        return False
    try:
        send_mail(
            f"Order {order.number} confirmed",
            f"Thank you. Your order {order.number} of {order.total_amount} {order.currency} "
            "is confirmed.",
            settings.ORDER_EMAIL_FROM,
            [order.customer.email],
        )
    except OSError as error:  # SMTP errors included: the kit retries it
        Order.objects.filter(pk=order.pk).update(confirmation_emailed_at=None)
        raise RetryLater("smtp", repr(error), retry_after=0) from error
    return True
