"""Redis going away is survivable: a real server and worker on a Redis of their own,
SIGKILLed and restarted on the same port (appendonly, as `make run` runs it)."""

import time
from datetime import timedelta

import httpx
import pytest
from django.conf import settings
from django.utils import timezone
from strawberry import relay

from config.embedded_redis import free_port
from domains.jobs.models import Job, JobStatus
from domains.payments.models import Payment
from domains.reports.models import Report
from testbed.factories import make_order, make_product, make_sales_lines, make_token
from testbed.graphql import GraphQLClient
from testbed.stack import RedisServer, Server, others_paused, start_worker
from testbed.waiting import job_in_status, wait_until

pytestmark = pytest.mark.e2e

GENERATE = """
mutation($input: SalesReportInput!) {
  salesReportGenerate(input: $input) { report { id } job { id } errors { code } }
}
"""
PROCESS = """
mutation($input: PaymentProcessInput!) {
  paymentProcess(input: $input) { payment { id status } job { id } errors { code } }
}
"""
# Rows a second the export may read: 8,000 rows take ~11 s, so Redis dies mid-task.
ROWS_PER_SECOND = "700"
SALES_ROWS = 8_000


class OutageStack:
    def __init__(self, redis_server: RedisServer, server: Server, worker):
        self.redis = redis_server
        self.server = server
        self.worker = worker


@pytest.fixture(scope="module")
def outage_stack(django_db_setup, django_db_blocker, tmp_path_factory):
    redis_server = RedisServer(tmp_path_factory.mktemp("outage-redis"))
    port = free_port()
    env = {
        "REDIS_URL": redis_server.url,
        "REPORT_MAX_ROWS_PER_SECOND": ROWS_PER_SECOND,
        "SANDBOX_BASE_URL": f"http://127.0.0.1:{port}/sandbox",
    }
    # On RabbitMQ it shares this process's broker: the suite's worker must not take its tasks.
    with others_paused("outage"):
        server = Server(port, **env)
        # The heartbeat on, as `make run`'s worker runs: the crash needed it.
        worker = start_worker("outage-worker", concurrency=2, heartbeat=True, **env)
        yield OutageStack(redis_server, server, worker)
        server.stop()
        worker.stop()
    redis_server.kill()


@pytest.fixture
def outage(outage_stack, transactional_db):
    """The stack with its Redis up and empty."""
    if not outage_stack.redis.alive():
        outage_stack.redis.restart()
    outage_stack.redis.client().flushdb()
    assert outage_stack.worker.alive(), outage_stack.worker.log_tail()
    return outage_stack


def _node_pk(global_id: str) -> int:
    return int(relay.GlobalID.from_id(global_id).node_id)


def _report_input() -> dict:
    today = timezone.now().date()
    return {
        "input": {
            "startDate": (today - timedelta(days=1)).isoformat(),
            "endDate": today.isoformat(),
        }
    }


@pytest.mark.skipif(
    settings.BROKER_IS_AMQP, reason="the Redis broker's unacked messages: RabbitMQ is the broker"
)
def test_a_worker_busy_with_a_task_survives_redis_killed_and_restarted_and_runs_it_once(
    outage, user
):
    make_sales_lines(customer=user, products=[make_product()], orders=SALES_ROWS)
    client = GraphQLClient(outage.server.graphql_url, make_token(user))
    started = client.data(GENERATE, _report_input())["salesReportGenerate"]
    assert started["errors"] == []
    job_id = _node_pk(started["job"]["id"])
    job_in_status(job_id, {JobStatus.PROGRESS})
    broker = outage.redis.client()
    wait_until(lambda: broker.hlen("unacked") == 1, message="the running task's unacked message")
    time.sleep(1.5)  # the append-only file is flushed every second

    outage.redis.kill()
    time.sleep(3)  # the outage: the task goes on, its progress unpublished
    outage.redis.restart()
    # The message survived the restart, unacknowledged: nothing has requeued it.
    assert broker.hlen("unacked") == 1
    assert broker.llen("celery") + broker.llen("bulk") == 0  # the job and mail lanes

    job = wait_until(
        lambda: (
            not outage.worker.alive()
            or ((job := Job.objects.get(pk=job_id)).status == JobStatus.SUCCESS and job)
        ),
        timeout=90,
        message="the job to succeed (or the worker to die)",
    )
    assert outage.worker.alive(), outage.worker.log_tail()
    assert job.attempts == 1  # claimed once: the task ran once
    assert Report.objects.get(job_id=job_id).row_count == SALES_ROWS
    # Acknowledged on its old channel after the reconnect (the ack follows the job's end,
    # and the report-ready email's task comes and goes): never handed out again.
    wait_until(
        lambda: broker.hlen("unacked") == 0 and broker.llen("celery") + broker.llen("bulk") == 0,
        timeout=30,
        message="the broker to hold no message, unacked or queued",
    )
    assert Job.objects.get(pk=job_id).attempts == 1


def test_a_mutation_during_a_redis_outage_answers_try_again_and_writes_nothing(outage, user):
    order = make_order(customer=user, lines=[(make_product(), 1)], status="pending")
    token = make_token(user)
    variables = {
        "input": {
            "orderId": str(relay.GlobalID("Order", str(order.pk))),
            "method": "tok_visa",
            "idempotencyKey": "outage-key-1",
        }
    }
    jobs_before = Job.objects.count()
    outage.redis.kill()

    # Bounded: a hang (it took 19 s) fails here rather than answering late.
    answer = httpx.post(
        outage.server.graphql_url,
        json={"query": PROCESS, "variables": variables},
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    )
    assert answer.status_code == 503, answer.text
    assert answer.headers["Retry-After"] == "1"
    errors = answer.json()["errors"]
    assert [e["extensions"]["code"] for e in errors] == ["SERVICE_UNAVAILABLE"]
    assert Payment.objects.filter(order=order).count() == 0
    assert Job.objects.count() == jobs_before

    outage.redis.restart()
    retried = GraphQLClient(outage.server.graphql_url, token).data(PROCESS, variables)
    assert retried["paymentProcess"]["errors"] == []
    assert Payment.objects.filter(order=order).count() == 1
