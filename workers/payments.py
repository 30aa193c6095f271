"""Celery tasks for payments."""

import logging

from celery import shared_task
from django.conf import settings

from domains.jobs.tasks import JobTaskName
from domains.payments.models import Payment
from domains.payments.services import payment_charge
from workers.base import JobTask, RecordVanished

logger = logging.getLogger(__name__)


@shared_task(
    bind=True,
    base=JobTask,
    name=JobTaskName.PAYMENTS_PROCESS,
    max_retries=settings.PAYMENT_MAX_RETRIES,
)
def process_payment(self: JobTask, *, job_id: int, payment_id: int) -> dict:
    payment = Payment.objects.select_related("order").filter(pk=payment_id).first()
    if payment is None:
        raise RecordVanished("payment")
    self.reporter.progress(message="Charging through the gateway.", progress=0.5)
    payment = payment_charge(payment=payment)
    return {
        "paymentId": payment.pk,
        "status": payment.status,
        "transactionId": payment.gateway_transaction_id,
    }
