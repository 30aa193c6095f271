"""Payments: taking a client's payment request (once per idempotency key, as every job
start: domains.jobs.idempotency), charging it through the gateway exactly once, refunding
it."""

import logging
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from domains.accounts.models import User
from domains.errors import CommonErrorCode
from domains.integrations.client import RequestRejected, RetryLater
from domains.jobs.ending import JobEnd
from domains.jobs.models import TERMINAL_STATUSES, Job, JobKind, JobStatus
from domains.jobs.outbox import followup_pending, followup_queue
from domains.jobs.retry import RetryOptions
from domains.jobs.services import job_create, job_dispatch
from domains.jobs.tasks import JobTaskName
from domains.payments import gateway
from domains.payments.errors import PaymentError, PaymentErrorCode
from domains.payments.models import Payment, PaymentLog, PaymentStatus
from domains.payments.payable import PayableOrder, payable_orders
from domains.payments.signals import payment_settled

logger = logging.getLogger(__name__)

# Each payment's own key at the gateway, never the client's: a client's key lives 24 hours
# (domains.jobs.idempotency), a gateway's answer to a key for ever.
PROCESS_KEY_PREFIX = "process-"  # a client's payment is keyed by its job
CHECKOUT_KEY_PREFIX = "checkout-"  # a checkout's payment is keyed by its order, per customer
RETRY_KEY_PREFIX = "retry-"  # a retried payment is keyed by its new job
NO_CHARGE_MESSAGE = "The payment could not be completed; no charge was made. Try again."
# Sent to the gateway, or about to be, with no answer recorded: only the gateway knows.
UNSETTLED_STATUSES = (PaymentStatus.PENDING, PaymentStatus.PROCESSING)


def payment_log(*, payment: Payment, event: str, **data: Any) -> None:
    PaymentLog.objects.create(payment=payment, event=event, data=data)


def _checkout_key(order: PayableOrder) -> str:
    # Per checkout job: a retried checkout charges under a key of its own, never the
    # failed attempt's (the gateway would answer it with the old charge's outcome).
    return f"{CHECKOUT_KEY_PREFIX}{order.pk}-job-{order.job_id}"


def _check_payable(order: PayableOrder, method: str) -> None:
    if not method.strip() or len(method) > 64:
        raise PaymentError(
            "Enter a payment method.", code=PaymentErrorCode.INVALID_METHOD, field="method"
        )
    refusal = payable_orders().refusal(order)
    if refusal == PaymentErrorCode.ALREADY_PAID:
        raise PaymentError(
            "The order is already paid.", code=PaymentErrorCode.ALREADY_PAID, field="orderId"
        )
    if refusal is not None:
        raise _not_payable()


def _live_payment_error(order: PayableOrder) -> PaymentError:
    """Why another payment of `order` is refused: it is paid, or a payment is in progress
    (being charged, or its outcome being settled with the gateway)."""
    if Payment.objects.filter(order=order, status=PaymentStatus.SUCCEEDED).exists():
        return PaymentError(
            "The order is already paid.", code=PaymentErrorCode.ALREADY_PAID, field="orderId"
        )
    return PaymentError(
        "The order already has a payment in progress; wait for it to settle.",
        code=PaymentErrorCode.PAYMENT_IN_PROGRESS,
        field="orderId",
    )


def _not_payable() -> PaymentError:
    # Only a pending order: one being checked out is paid by its checkout's own payment.
    return PaymentError(
        "The order cannot be paid.", code=PaymentErrorCode.ORDER_NOT_PAYABLE, field="orderId"
    )


def payment_process(*, viewer: User, order: PayableOrder, method: str) -> Payment:
    """Start paying `order`: a payment and its job. An order holds one live payment.

    A client's repeat of the request is answered by its idempotency key before this runs
    (domains.jobs.idempotency); the payment is charged under a key of its own.
    """
    _check_payable(order, method)
    try:
        with transaction.atomic(durable=True):
            # The order's row lock orders this against a checkout starting on it.
            if not payable_orders().lock(order.pk, pending_only=True):
                raise _not_payable()
            job = job_create(kind=JobKind.PAYMENT, owner=viewer)
            payment = Payment.objects.create(
                order=order,
                created_by=viewer,
                amount=order.total_amount,
                currency=order.currency,
                method=method,
                idempotency_key=f"{PROCESS_KEY_PREFIX}{job.task_id}",
                job=job,
            )
            payment_log(payment=payment, event="requested", method=method)
            job_dispatch(job=job, task_name=JobTaskName.PAYMENTS_PROCESS, payment_id=payment.pk)
    except IntegrityError:
        raise _live_payment_error(order) from None
    logger.info("payment.requested", extra={"payment_id": payment.pk, "job_id": job.pk})
    return payment


def payment_job_retry(original: Job, retry: Job, options: RetryOptions) -> None:
    """A failed payment tried again: a new payment of the same order (by the method given,
    or the same one) under a key derived from the new job, so the gateway sees a new
    request and never answers with the failed one's outcome. A payment whose outcome is
    still unknown (being reconciled) or that went through is not tried again."""
    payment = Payment.objects.select_related("order").get(job=original)
    if payment.status != PaymentStatus.FAILED:
        raise PaymentError(
            "The payment's outcome is not settled as failed; it cannot be tried again.",
            code=CommonErrorCode.NOT_RETRYABLE,
            field="id",
        )
    method = options.payment_method or payment.method
    idempotency_key = f"{RETRY_KEY_PREFIX}{retry.task_id}"
    order = payment.order
    with transaction.atomic():
        if not payable_orders().lock(order.pk, pending_only=True):
            raise _not_payable()
        order.refresh_from_db()
        _check_payable(order, method)
        try:
            with transaction.atomic():
                again = Payment.objects.create(
                    order=order,
                    created_by=payment.created_by,
                    amount=order.total_amount,
                    currency=order.currency,
                    method=method,
                    idempotency_key=idempotency_key,
                    job=retry,
                )
        except IntegrityError:
            raise _live_payment_error(order) from None
        payment_log(payment=again, event="requested", method=method, retry_of=payment.pk)
        job_dispatch(job=retry, task_name=JobTaskName.PAYMENTS_PROCESS, payment_id=again.pk)


def payment_for_checkout(*, order: PayableOrder, method: str) -> Payment:
    """The checkout's payment of `order`, made once however often the step runs."""
    payment, created = Payment.objects.get_or_create(
        created_by_id=order.customer_id,
        idempotency_key=_checkout_key(order),
        defaults={
            "order": order,
            "amount": order.total_amount,
            "currency": order.currency,
            "method": method,
        },
    )
    if created:
        payment_log(payment=payment, event="requested", method=method, checkout=True)
    return payment


def _lock_order(order_id: int) -> None:
    """Lock the order before its payment, the order every writer takes them in.

    paymentProcess holds the order's lock while it inserts a payment, and that insert waits
    on any transaction changing another live payment of the order: were that transaction
    to lock the order after its payment, the two would deadlock. (A lock only: the order's
    rows are written by the orders domain, on `payment_settled`.)
    """
    payable_orders().lock(order_id)


def _record_charge(payment: Payment, charge: gateway.Charge, *, event: str, **data: Any) -> bool:
    """Record what the gateway charged on a payment not settled yet; False if it was.

    A charge the gateway reports refunded is recorded refunded: the money is back.
    """
    status = PaymentStatus.REFUNDED if charge.status == "refunded" else PaymentStatus.SUCCEEDED
    outcome = {
        "status": status,
        "gateway_transaction_id": charge.transaction_id,
        "gateway_response": charge.raw,
        "error_message": "",
    }
    with transaction.atomic(durable=True):
        _lock_order(payment.order_id)
        if not Payment.objects.filter(pk=payment.pk, status__in=UNSETTLED_STATUSES).update(
            **outcome
        ):
            return False
        payment_log(payment=payment, event=event, **data)
        for field, value in outcome.items():
            setattr(payment, field, value)
        payment_settled.send(sender=Payment, payment=payment)
    return True


def payment_charge(*, payment: Payment) -> Payment:
    """Charge the payment through the gateway, once; safe to call again after any crash.

    The gateway sees the payment's own idempotency key, so a call repeated after a lost
    answer (a killed worker, a timeout) is answered with the first charge. Raises
    PaymentError when declined; RetryLater (the gateway's) when it should be tried later.
    """
    with transaction.atomic(durable=True):
        claimed = Payment.objects.filter(pk=payment.pk, status__in=UNSETTLED_STATUSES).update(
            status=PaymentStatus.PROCESSING
        )
        if claimed:
            payment_log(payment=payment, event="charge_sent")
    if not claimed:
        payment.refresh_from_db()
        return payment  # already ended by an earlier run
    try:
        charge = gateway.charge_create(
            amount=payment.amount,
            currency=payment.currency,
            source=payment.method,
            reference=payment.order.number,
            idempotency_key=payment.gateway_idempotency_key,
        )
    except RequestRejected as rejected:
        message = _rejection_message(rejected)
        _charge_refused(payment, message=message, response=rejected.body)
        code = PaymentErrorCode.DECLINED if rejected.status == 402 else PaymentErrorCode.REJECTED
        raise PaymentError(message, code=code, field="method") from None
    if not _record_charge(payment, charge, event="succeeded", transaction_id=charge.transaction_id):
        # Charged under this payment's key, and recorded by whichever run got there first.
        payment.refresh_from_db()
        if payment.status == PaymentStatus.FAILED:
            # Settled "no charge" by a reconciliation that ran while this charge was still
            # on its way: reconciliation must only run once no run can send any more.
            payment_log(
                payment=payment, event="charge_orphaned", transaction_id=charge.transaction_id
            )
            logger.error("payment.charge_orphaned", extra={"payment_id": payment.pk})
        return payment
    logger.info("payment.charged", extra={"payment_id": payment.pk})
    return payment


def payment_charge_status(*, payment: Payment) -> str:
    """What the gateway says of the payment's charge now: captured, refunded or flagged."""
    return gateway.charge_verify(transaction_id=payment.gateway_transaction_id).status


def _rejection_message(rejected: RequestRejected) -> str:
    body = rejected.body if isinstance(rejected.body, dict) else {}
    detail = body.get("error", {}) if isinstance(body.get("error"), dict) else {}
    return detail.get("message") or f"The gateway refused the payment (HTTP {rejected.status})."


def _settle_failed(
    payment: Payment,
    *,
    message: str,
    statuses: tuple[str, ...],
    event: str,
    logged: dict[str, Any],
) -> bool:
    """Settle a payment as not charged, by the gateway's answer (after its job ended)."""
    with transaction.atomic(durable=True):
        failed = Payment.objects.filter(pk=payment.pk, status__in=statuses).update(
            status=PaymentStatus.FAILED, error_message=message
        )
        if failed:
            payment_log(payment=payment, event=event, **logged)
    if failed:
        logger.info("payment.failed", extra={"payment_id": payment.pk, "reason": message})
    return bool(failed)


def _charge_refused(payment: Payment, *, message: str, response: Any) -> None:
    """The gateway refused the charge itself (a decline, a bad token): nothing was charged,
    so the claim is handed back and the payment is as one never sent, which its job's end
    fails with the refusal as the reason (the checkout's, with its order's compensation)."""
    with transaction.atomic(durable=True):
        if Payment.objects.filter(pk=payment.pk, status=PaymentStatus.PROCESSING).update(
            status=PaymentStatus.PENDING, gateway_response=response
        ):
            payment_log(payment=payment, event="refused", message=message)
    logger.info("payment.refused", extra={"payment_id": payment.pk, "reason": message})


def payment_reconcile(*, payment: Payment, refund_if_charged: bool = False) -> Payment:
    """Settle the payment with the gateway (`_payment_settle`); with `refund_if_charged`
    (its job was cancelled), a charge found is given back (each run does what is left)."""
    payment = _payment_settle(payment=payment)
    if refund_if_charged and payment.status == PaymentStatus.SUCCEEDED:
        payment_refund(payment=payment)
        payment.refresh_from_db()
    return payment


def _payment_settle(*, payment: Payment) -> Payment:
    """Settle a payment whose outcome is unknown by asking the gateway what it did under
    the payment's key: succeeded with the charge it made, or failed when it made none.

    For a payment whose job ended without an answer (retries or redeliveries exhausted, a
    time limit, a lost worker): only once no run of it will send again. Idempotent; a
    settled payment is returned as it is. Raises RetryLater when the gateway cannot
    answer: the payment stays unknown, never assumed charged or not.
    """
    # Never claimed for sending (or refused by the gateway), and no run can claim it once
    # failed: nothing was charged.
    if _settle_failed(
        payment,
        message=NO_CHARGE_MESSAGE,
        statuses=(PaymentStatus.PENDING,),
        event="reconciled",
        logged={"charged": False, "sent": False},
    ):
        payment.refresh_from_db()
        return payment
    payment.refresh_from_db()
    if payment.status not in UNSETTLED_STATUSES:
        return payment
    try:
        charge = gateway.charge_lookup(idempotency_key=payment.gateway_idempotency_key)
    except RetryLater:
        logger.warning("payment.reconcile_deferred", extra={"payment_id": payment.pk})
        raise
    if charge is None:
        _charge_in_flight_check(payment)
        _settle_failed(
            payment,
            message=NO_CHARGE_MESSAGE,
            statuses=UNSETTLED_STATUSES,
            event="reconciled",
            logged={"charged": False},
        )
    else:
        _record_charge(
            payment, charge, event="reconciled", charged=True, transaction_id=charge.transaction_id
        )
    payment.refresh_from_db()
    logger.info("payment.reconciled", extra={"payment_id": payment.pk, "status": payment.status})
    return payment


def _charge_in_flight_check(payment: Payment) -> None:
    """RetryLater while a charge request of the payment may still reach the gateway: the
    attempt a cancel or a time limit left behind finishes unheard, within one request's
    lifetime of its job's end (a checkout's: its order's). Until then "no such charge" only
    means "not yet"; settling it failed would keep money the payment says it never took."""
    job_id = payment.job_id or payment.order.job_id
    ended_at = Job.objects.filter(pk=job_id).values_list("finished_at", flat=True).first()
    if ended_at is None:  # not ended: the caller reconciles what no run will send again
        return
    left = (ended_at - timezone.now()).total_seconds() + gateway.request_lifetime()
    if left > 0:
        logger.info("payment.reconcile_waits_in_flight", extra={"payment_id": payment.pk})
        raise RetryLater(
            gateway.SERVICE, "a charge request may still be on its way", retry_after=left
        )


def payment_refund(*, payment: Payment) -> None:
    """Give a succeeded charge back, once (the refund carries its own idempotency key)."""
    if payment.status != PaymentStatus.SUCCEEDED:
        return
    refund = gateway.refund_create(
        transaction_id=payment.gateway_transaction_id,
        idempotency_key=f"refund-{payment.gateway_idempotency_key}",
    )
    with transaction.atomic(durable=True):
        _lock_order(payment.order_id)
        if Payment.objects.filter(pk=payment.pk, status=PaymentStatus.SUCCEEDED).update(
            status=PaymentStatus.REFUNDED
        ):
            payment_log(payment=payment, event="refunded", refund_id=refund.get("id"))
            payment.status = PaymentStatus.REFUNDED
            payment_settled.send(sender=Payment, payment=payment)
    logger.info("payment.refunded", extra={"payment_id": payment.pk})


def payment_job_ended(payment: Payment, end: JobEnd) -> None:
    """A payment whose job ended without charging: one never sent (or refused by the
    gateway) the end transition failed with the reason (the order can be paid again);
    one sent with its outcome unknown (a timeout, a lost worker, a budget run out, a
    cancel while the charge was in flight) is reconciled with the gateway by its key once
    this commits, and ends succeeded or failed by what the gateway says. A cancelled
    payment keeps no charge: one made (recorded already, or found by the reconciliation)
    is refunded, and the order says so."""
    if end.status == JobStatus.SUCCESS:
        return
    cancelled = end.status == JobStatus.CANCELLED
    if end.record_moved:
        payment_log(payment=payment, event="failed", message=payment.error_message)
    elif payment.status == PaymentStatus.PROCESSING or (
        cancelled and payment.status == PaymentStatus.SUCCEEDED
    ):
        if payment.status == PaymentStatus.PROCESSING:
            payment_log(payment=payment, event="outcome_unknown", message=end.reason)
        else:
            payment_log(payment=payment, event="cancelled", refund=True)
        # A cancelled payment that did charge is given back: money moved, so compensate.
        payment_reconcile_queue(payment=payment, refund_if_charged=cancelled)


def _reconcile_key(payment: Payment, *, refund_if_charged: bool) -> str:
    # A refunding one is its own: asked while a plain one is live, it is not dropped.
    suffix = ":refund" if refund_if_charged else ""
    return f"{JobTaskName.PAYMENTS_RECONCILE}:{payment.pk}{suffix}"


def payment_reconcile_queue(*, payment: Payment, refund_if_charged: bool) -> None:
    """Reconcile the payment with the gateway once the caller's transaction commits, through
    the outbox: a send lost to a broker outage or a dead process is sent again."""
    followup_queue(
        task_name=JobTaskName.PAYMENTS_RECONCILE,
        key=_reconcile_key(payment, refund_if_charged=refund_if_charged),
        payment_id=payment.pk,
        refund_if_charged=refund_if_charged,
    )


def payments_unsettled_sweep() -> int:
    """The watchdog's check on money: a payment still pending or processing whose job has
    ended (no run of it will settle it) and that nothing is reconciling is reconciled now.
    A checkout's payments (no job of their own) are its compensation's (orders)."""
    queued = 0
    unsettled = Payment.objects.filter(
        status__in=UNSETTLED_STATUSES, job__status__in=TERMINAL_STATUSES
    ).select_related("job")
    for payment in unsettled:
        if any(
            followup_pending(_reconcile_key(payment, refund_if_charged=refund))
            for refund in (False, True)
        ):
            continue
        logger.warning("payment.unsettled_swept", extra={"payment_id": payment.pk})
        payment_reconcile_queue(
            payment=payment, refund_if_charged=payment.job.status == JobStatus.CANCELLED
        )
        queued += 1
    return queued
