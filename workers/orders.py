"""Celery tasks for orders: the checkout workflow, its compensation, the email.

`orders.checkout` claims the checkout's Job and runs the steps validate -> reserve ->
charge -> confirm as one chain (workers.chords): each step names its stage and rolls the
progress up, the last ends the job; a failed step ends it through the chain's error
callback, and the order fails with its job (domains.orders.services.checkout_job_ended),
which queues `orders.checkout_compensate` in the outbox to undo what the steps did.
"""

import logging
from collections.abc import Callable
from typing import Any

from celery import shared_task
from django.conf import settings

from domains.jobs.tasks import JobTaskName
from domains.orders import services
from domains.orders.models import Order
from workers.base import FollowUpTask, JobPartTask, JobTask, record_load
from workers.chords import job_finish, start_chain

logger = logging.getLogger(__name__)

STEPS = services.CHECKOUT_STEPS


class CheckoutStep(JobPartTask):
    """A step of the checkout chain: runs `action` on the order under its stage's name."""

    abstract = True
    max_retries = settings.PAYMENT_MAX_RETRIES

    def run_step(self, step: str, order_id: int, action: Callable, **arguments: Any) -> Any:
        order = record_load(Order, order_id, "order")
        self.reporter.progress(stage=step, current=STEPS.index(step), total=len(STEPS), force=True)
        return action(order=order, **arguments)


@shared_task(bind=True, base=JobTask, name=JobTaskName.ORDERS_CHECKOUT)
def checkout(self: JobTask, *, job_id: int, order_id: int, payment_method: str) -> None:
    ids = {"job_id": job_id, "order_id": order_id}
    start_chain(
        job_id=job_id,
        steps=[
            checkout_validate.si(**ids),
            checkout_reserve.si(**ids),
            checkout_charge.si(**ids, payment_method=payment_method),
            checkout_confirm.si(**ids),
        ],
    )


@shared_task(bind=True, base=CheckoutStep, name="orders.checkout_validate")
def checkout_validate(self: CheckoutStep, *, job_id: int, order_id: int) -> None:
    self.run_step("validate", order_id, services.checkout_validate)


@shared_task(bind=True, base=CheckoutStep, name="orders.checkout_reserve")
def checkout_reserve(self: CheckoutStep, *, job_id: int, order_id: int) -> None:
    self.run_step("reserve", order_id, services.checkout_reserve)


@shared_task(bind=True, base=CheckoutStep, name="orders.checkout_charge")
def checkout_charge(self: CheckoutStep, *, job_id: int, order_id: int, payment_method: str) -> None:
    self.run_step("charge", order_id, services.checkout_charge, payment_method=payment_method)


@shared_task(bind=True, base=CheckoutStep, name="orders.checkout_confirm")
def checkout_confirm(self: CheckoutStep, *, job_id: int, order_id: int) -> None:
    self.run_step("confirm", order_id, services.checkout_confirm)
    job_finish(job_id, {"orderId": order_id, "status": "confirmed"}, done=len(STEPS))


@shared_task(bind=True, base=FollowUpTask, name=JobTaskName.ORDERS_CHECKOUT_COMPENSATE)
def checkout_compensate(self: FollowUpTask, *, order_id: int) -> None:
    """Every undo is conditional, so a run cut short (a lost worker) is run again; a refund
    owed is retried (the kit's RetryLater policy, without a budget) until the gateway takes it."""
    order = record_load(Order, order_id, "order")
    logger.info("order.compensating", extra={"order_id": order_id})
    services.checkout_compensate(order=order)


@shared_task(
    bind=True,
    base=FollowUpTask,
    name=JobTaskName.ORDERS_SEND_CONFIRMATION,
    max_retries=settings.ORDER_EMAIL_MAX_RETRIES,
    retry_backoff=True,
)
def send_confirmation(self: FollowUpTask, *, order_id: int) -> bool:
    """An SMTP error comes back as RetryLater, rescheduled by the kit's policy."""
    order = record_load(Order, order_id, "order", related=["customer"])
    return services.order_confirmation_send(order=order)
