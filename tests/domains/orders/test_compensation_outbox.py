"""A failed checkout's compensation is a follow-up in the outbox: written with the order's
failure, it survives a broker that is down when that commits, and runs once."""

import subprocess
import sys

import pytest
from django.conf import settings

from domains.catalog.models import Inventory
from domains.jobs.attempts import job_attempt_start
from domains.jobs.models import FollowUp, Job, JobKind, JobStatus
from domains.jobs.outbox import followup_send, followups_sweep
from domains.jobs.services import job_create
from domains.jobs.tasks import JobTaskName
from domains.orders.models import Order, OrderStatus, ReservationStatus
from domains.orders.services import checkout_reserve
from domains.payments.models import Payment, PaymentStatus
from domains.payments.services import payment_charge, payment_for_checkout
from domains.sandbox.models import GatewayCharge
from testbed.factories import make_order
from testbed.stack import process_env
from testbed.waiting import wait_until
from tests.fixtures.commerce import gateway_calls, stocked_product
from tests.fixtures.redis import unreachable_redis_url

pytestmark = [pytest.mark.e2e, pytest.mark.broker]

COMPENSATE_KEY = f"{JobTaskName.ORDERS_CHECKOUT_COMPENSATE}:{{}}"


def _charged_checkout(user) -> tuple[Order, Job, Payment]:
    """A checkout that reserved its stock and charged the card, running (its worker is
    about to end it FAILURE)."""
    product = stocked_product(price="8.00", available=5)
    order = make_order(customer=user, lines=[(product, 2)], status=OrderStatus.PENDING)
    job = job_create(kind=JobKind.ORDER_WORKFLOW, owner=user, total=4)
    job_attempt_start(job_id=job.pk)[1].started()
    Order.objects.filter(pk=order.pk).update(status=OrderStatus.PROCESSING, job=job)
    order.refresh_from_db()
    checkout_reserve(order=order)
    payment = payment_charge(payment=payment_for_checkout(order=order, method="tok_visa"))
    assert payment.status == PaymentStatus.SUCCEEDED
    return order, job, payment


def _end_the_job_with_redis_down(job: Job) -> str:
    """End the job FAILURE in a process of its own whose Redis (the broker) is down: the
    order fails and its compensation is written; the send after the commit fails."""
    down = unreachable_redis_url()
    code = (
        "from domains.jobs.models import JobStatus\n"
        "from domains.jobs.ending import job_end\n"
        f"assert job_end(job_id={job.pk}, status=JobStatus.FAILURE, error='The card network is down.')\n"
    )
    ended = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        env=process_env(REDIS_URL=down, CELERY_BROKER_URL=down),
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ended.returncode == 0, ended.stderr
    return ended.stdout + ended.stderr


def _stock(order: Order) -> tuple[int, int]:
    product_id = order.items.values_list("product_id", flat=True).get()
    return (
        Inventory.objects.filter(product_id=product_id).values_list("available", "reserved").get()
    )


def test_a_compensation_whose_send_met_redis_down_is_sent_by_the_watchdog_and_refunds_once(
    gateway_here, user
):
    order, job, payment = _charged_checkout(user)
    assert _stock(order) == (3, 2)

    log = _end_the_job_with_redis_down(job)

    assert "followup.send_failed" in log
    order.refresh_from_db()
    assert (order.status, order.error_message) == (OrderStatus.FAILED, "The card network is down.")
    compensation = FollowUp.objects.get(key=COMPENSATE_KEY.format(order.pk))
    assert (compensation.sent_at, compensation.done_at) == (None, None)
    assert Payment.objects.get(pk=payment.pk).status == PaymentStatus.SUCCEEDED, "not yet"

    swept = followups_sweep()  # the watchdog's next beat, Redis back

    assert swept["followups_sent"] == 1
    wait_until(
        lambda: FollowUp.objects.filter(pk=compensation.pk, done_at__isnull=False).exists(),
        timeout=60,
        message="the compensation to run",
    )
    order.refresh_from_db()
    assert order.reservation == ReservationStatus.RELEASED
    assert _stock(order) == (5, 0)
    assert Payment.objects.get(pk=payment.pk).status == PaymentStatus.REFUNDED
    assert GatewayCharge.objects.get().refunded

    # Its done report lost, say: sent again, it does nothing twice.
    FollowUp.objects.filter(pk=compensation.pk).update(done_at=None)
    assert followup_send(followup=compensation)
    wait_until(
        lambda: FollowUp.objects.filter(pk=compensation.pk, done_at__isnull=False).exists(),
        timeout=60,
        message="the second delivery to run",
    )
    assert len(gateway_calls("/refunds")) == 1, "refunded once"
    assert _stock(order) == (5, 0)
    assert Job.objects.get(pk=job.pk).status == JobStatus.FAILURE
