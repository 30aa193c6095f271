"""Money is never left unknown after Redis goes away: Redis (broker, guards, progress)
SIGKILLed for 30 s while 50 payments run, then restarted; once it is back every payment
ends settled, charged once or not at all, through the outbox and the watchdog."""

import itertools
import time

import pytest
from strawberry import relay

from config.embedded_redis import free_port
from domains.jobs.models import ACTIVE_STATUSES, Job
from domains.payments.models import Payment, PaymentStatus
from domains.payments.services import UNSETTLED_STATUSES
from domains.sandbox.models import GatewayCharge
from testbed.factories import make_order, make_token
from testbed.graphql import GraphQLClient
from testbed.stack import RedisServer, Server, others_paused, start_worker
from testbed.waiting import wait_until
from tests.fixtures.commerce import COMMERCE_ENV, stocked_product

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PROCESS = """
mutation($input: PaymentProcessInput!) {
  paymentProcess(input: $input) { payment { id } job { id } errors { code message } }
}
"""
PAYMENTS = 50
OUTAGE_SECONDS = 30
# Mostly plain charges, some slow to answer, some failing once at the gateway (breaker notes).
METHODS = ["tok_visa"] * 8 + ["tok_slow", "tok_fail_1"]
WATCHDOG_ENV = {
    "JOB_WATCHDOG_INTERVAL": "2",
    "JOB_PENDING_GRACE_SECONDS": "15",
    "JOB_LEASE_SECONDS": "10",
    "JOB_MAX_REVIVALS": "10",
}


@pytest.fixture
def outage_shop(django_db_setup, transactional_db, tmp_path):
    redis_server = RedisServer(tmp_path / "redis")
    port = free_port()
    env = {
        **COMMERCE_ENV,
        **WATCHDOG_ENV,
        "REDIS_URL": redis_server.url,
        "SANDBOX_BASE_URL": f"http://127.0.0.1:{port}/sandbox",
    }
    # On RabbitMQ it shares this process's broker: the suite's worker must not take its tasks.
    with others_paused("outage-shop"):
        server = Server(port, name="outage-shop-server", **env)
        worker = start_worker("outage-shop-worker", concurrency=2, heartbeat=True, beat=True, **env)
        yield redis_server, server, worker
        server.stop()
        worker.stop()
    redis_server.kill()


def _settled() -> bool:
    return (
        not Payment.objects.filter(status__in=UNSETTLED_STATUSES).exists()
        and not Job.objects.filter(status__in=ACTIVE_STATUSES).exists()
    )


def test_redis_killed_for_30_seconds_during_50_payments_leaves_none_processing(outage_shop, user):
    redis_server, server, worker = outage_shop
    client = GraphQLClient(server.graphql_url, make_token(user))
    methods = itertools.cycle(METHODS)
    for number in range(PAYMENTS):
        order = make_order(customer=user, lines=[(stocked_product(), 1)], status="pending")
        variables = {
            "input": {
                "orderId": str(relay.GlobalID("Order", str(order.pk))),
                "method": next(methods),
                "idempotencyKey": f"outage-{number}",
            }
        }
        assert client.data(PROCESS, variables)["paymentProcess"]["errors"] == []
    wait_until(
        lambda: Payment.objects.filter(status=PaymentStatus.SUCCEEDED).count() >= 5,
        timeout=120,
        message="the first payments to go through",
    )

    redis_server.kill()
    time.sleep(OUTAGE_SECONDS)
    redis_server.restart()

    wait_until(_settled, timeout=400, message="every payment settled and every job ended")
    assert worker.alive(), worker.log_tail()
    assert not Payment.objects.filter(status=PaymentStatus.PROCESSING).exists()
    charged = list(GatewayCharge.objects.values_list("idempotency_key", flat=True))
    succeeded = [
        payment.gateway_idempotency_key
        for payment in Payment.objects.filter(status=PaymentStatus.SUCCEEDED)
    ]
    assert sorted(charged) == sorted(succeeded), "every charge made is a payment, once"
    assert Payment.objects.count() == PAYMENTS
