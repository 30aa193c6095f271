"""Celery tasks for payments."""

import logging

from celery import shared_task
from django.conf import settings

from domains.jobs.tasks import JobTaskName
from domains.payments.models import Payment
from domains.payments.services import payment_charge, payment_reconcile
from workers.base import FollowUpTask, JobTask, record_load

logger = logging.getLogger(__name__)


@shared_task(
    bind=True,
    base=JobTask,
    name=JobTaskName.PAYMENTS_PROCESS,
    max_retries=settings.PAYMENT_MAX_RETRIES,
)
def process_payment(self: JobTask, *, job_id: int, payment_id: int) -> dict:
    payment = record_load(Payment, payment_id, "payment", related=["order"])
    self.reporter.progress(message="Charging through the gateway.", progress=0.5)
    payment = payment_charge(payment=payment)
    return {
        "paymentId": payment.pk,
        "status": payment.status,
        "transactionId": payment.gateway_transaction_id,
    }


@shared_task(bind=True, base=FollowUpTask, name=JobTaskName.PAYMENTS_RECONCILE)
def reconcile_payment(
    self: FollowUpTask, *, payment_id: int, refund_if_charged: bool = False
) -> str:
    """Asked until the gateway answers (the kit retries RetryLater without a budget): money
    is never left unknown."""
    payment = record_load(Payment, payment_id, "payment", related=["order"])
    return payment_reconcile(payment=payment, refund_if_charged=refund_if_charged).status
