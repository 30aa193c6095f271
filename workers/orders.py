"""Celery tasks for orders: the checkout chain's steps, its compensation, the email.

The steps share the checkout's one Job: the first claims it, each names its stage and
rolls progress up, the last ends it; a step's failure ends it FAILURE (the task base),
and the chain's error handler, `orders.checkout_compensate`, undoes what was done.
"""

import logging
from typing import Any

from celery import Task, shared_task
from celery.exceptions import Ignore
from django.conf import settings

from domains.errors import DomainError
from domains.integrations.client import RetryLater
from domains.jobs.models import ACTIVE_STATUSES, Job
from domains.jobs.progress import JobCancelled, JobReporter, job_attempt_start
from domains.orders import services
from domains.orders.models import Order
from workers.base import JobTask

logger = logging.getLogger(__name__)


class CheckoutStep(JobTask):
    """A step of the checkout chain; `step` names its stage."""

    abstract = True
    step: str = ""
    max_retries = settings.PAYMENT_MAX_RETRIES

    @property
    def is_first(self) -> bool:
        return self.step == services.CHECKOUT_STEPS[0]

    @property
    def is_last(self) -> bool:
        return self.step == services.CHECKOUT_STEPS[-1]

    def before_start(self, task_id: str, args: tuple, kwargs: dict[str, Any]) -> None:
        if self.is_first:
            try:
                super().before_start(task_id, args, kwargs)
            except Ignore:
                # The job ended before the workflow began (cancelled while queued): the
                # order must not stay "processing"; the compensation fails it.
                checkout_compensate.delay(task_id, **kwargs)
                raise
        else:
            self._continue_job(kwargs)
        index = services.CHECKOUT_STEPS.index(self.step)
        self.reporter.progress(
            stage=self.step,
            current=index,
            total=len(services.CHECKOUT_STEPS),
            force=True,
        )

    def _continue_job(self, kwargs: dict[str, Any]) -> None:
        """A later step carries on the job the first one claimed. Only a redelivery (its
        worker died) counts as another attempt, so a step that kills its worker every time
        still ends; ending it here raises, so that the compensation runs."""
        job_id, order_id = kwargs["job_id"], kwargs["order_id"]
        if (self.request.delivery_info or {}).get("redelivered"):
            claimed = job_attempt_start(job_id=job_id)
            job = claimed[0] if claimed else None
        else:
            job = Job.objects.filter(pk=job_id, status__in=ACTIVE_STATUSES).first()
        if job is None:
            raise Ignore
        self.request.job_reporter = JobReporter(job)
        if job.cancel_requested:
            services.checkout_record_failure(
                order_id=order_id, reason="The checkout was cancelled."
            )
            raise JobCancelled
        if job.attempts > settings.JOB_MAX_ATTEMPTS:
            gave_up = DomainError(f"Gave up after {job.attempts - 1} attempts.", code="GAVE_UP")
            services.checkout_record_failure(order_id=order_id, reason=gave_up.message)
            raise gave_up

    def on_success(self, retval: Any, task_id: str, args: tuple, kwargs: dict[str, Any]) -> None:
        if self.is_last:
            super().on_success(retval, task_id, args, kwargs)

    def run_step(self, order_id: int, action, **arguments: Any) -> Any:
        order = Order.objects.filter(pk=order_id).first()
        if order is None:
            raise Ignore  # the order was deleted: nothing left to do or to undo
        try:
            return action(order=order, **arguments)
        except RetryLater as busy:
            if self.request.retries < self.max_retries:
                raise self.retry(exc=busy, countdown=busy.retry_after) from None
            unavailable = services.checkout_gateway_unavailable()
            services.checkout_record_failure(order_id=order.pk, reason=str(unavailable))
            raise unavailable from busy
        except Exception as error:
            services.checkout_record_failure(order_id=order.pk, reason=self.public_message(error))
            raise


@shared_task(bind=True, base=CheckoutStep, name="orders.checkout_validate", step="validate")
def checkout_validate(self: CheckoutStep, *, job_id: int, order_id: int) -> None:
    self.run_step(order_id, services.checkout_validate)


@shared_task(bind=True, base=CheckoutStep, name="orders.checkout_reserve", step="reserve")
def checkout_reserve(self: CheckoutStep, *, job_id: int, order_id: int) -> None:
    self.run_step(order_id, services.checkout_reserve)


@shared_task(bind=True, base=CheckoutStep, name="orders.checkout_charge", step="charge")
def checkout_charge(self: CheckoutStep, *, job_id: int, order_id: int, payment_method: str) -> None:
    self.run_step(order_id, services.checkout_charge, payment_method=payment_method)


@shared_task(bind=True, base=CheckoutStep, name="orders.checkout_confirm", step="confirm")
def checkout_confirm(self: CheckoutStep, *, job_id: int, order_id: int) -> dict:
    self.run_step(order_id, services.checkout_confirm)
    return {"orderId": order_id, "status": "confirmed"}


@shared_task(
    bind=True,
    name="orders.checkout_compensate",
    acks_late=True,
    # Every undo is conditional, so a run cut short by a lost worker is run again; acked
    # instead, it would leave the order "processing" and its stock reserved for good.
    reject_on_worker_lost=True,
    max_retries=None,  # a refund owed is retried until the gateway takes it
)
def checkout_compensate(self: Task, failed_task_id: str, *, order_id: int, job_id: int) -> None:
    order = Order.objects.filter(pk=order_id).first()
    if order is None:
        logger.warning("order.vanished", extra={"order_id": order_id, "job_id": job_id})
        return
    logger.info("order.compensating", extra={"order_id": order_id, "failed_task": failed_task_id})
    try:
        services.checkout_compensate(order=order)
    except RetryLater as busy:
        raise self.retry(exc=busy, countdown=busy.retry_after) from None


@shared_task(
    name="orders.send_confirmation",
    acks_late=True,
    autoretry_for=(OSError,),  # SMTP errors included
    retry_backoff=True,
    max_retries=8,
)
def send_confirmation(*, order_id: int) -> bool:
    order = Order.objects.select_related("customer").filter(pk=order_id).first()
    if order is None:
        return False
    return services.order_confirmation_send(order=order)
