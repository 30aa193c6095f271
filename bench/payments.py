"""paymentProcess against its floors, measured in the same run.

1. Mutation -> task start: the paymentProcess mutation over HTTP until the worker starts
   the payment task, against sending the same task bare (`send_task`) until it starts.
2. Payment job wall time (task start -> SUCCESS) against the sandbox gateway's own
   round trip for a charge, called directly with the same client, plus one database
   transaction (a conditional UPDATE of a payment row, committed), the target's floor.

    .venv/bin/python bench/payments.py [--runs 30]
"""

import argparse
import os
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from config.embedded_redis import free_port

PORT = free_port()
os.environ.setdefault("SANDBOX_BASE_URL", f"http://127.0.0.1:{PORT}/sandbox")
# A bench is not a test of the rate limit: lift it so that it does not pace the runs.
os.environ.setdefault("PAYMENT_GATEWAY_RATE_PER_MINUTE", "1000000")
os.environ.setdefault("PAYMENT_GATEWAY_BURST", "1000")

import httpx  # noqa: E402
from celery import current_app  # noqa: E402
from django.db import transaction  # noqa: E402

from bench import harness  # noqa: E402  (sets Django up)
from domains.catalog.models import Inventory  # noqa: E402
from domains.jobs.models import TERMINAL_STATUSES, Job, JobKind  # noqa: E402
from domains.jobs.services import job_create  # noqa: E402
from domains.payments import gateway  # noqa: E402
from domains.payments.models import Payment  # noqa: E402
from schema.base import global_id  # noqa: E402
from tests.fixtures.factories import make_order, make_product, make_token, make_user  # noqa: E402
from tests.fixtures.stack import Server, start_worker  # noqa: E402

PROCESS = """
mutation($input: PaymentProcessInput!) { paymentProcess(input: $input) { job { id } errors { code } } }
"""
BENCH_ENV = {
    key: os.environ[key]
    for key in ("SANDBOX_BASE_URL", "PAYMENT_GATEWAY_RATE_PER_MINUTE", "PAYMENT_GATEWAY_BURST")
}


def _finished(job_id: int, timeout: float = 30) -> Job:
    deadline = time.monotonic() + timeout
    while True:
        job = Job.objects.get(pk=job_id)
        if job.status in TERMINAL_STATUSES:
            assert job.status == "SUCCESS", (job.status, job.error)
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} is still {job.status}")
        time.sleep(0.002)


def _order(user, product):
    return make_order(customer=user, lines=[(product, 1)], status="pending")


def _through_the_mutation(client: httpx.Client, user, product) -> tuple[float, float]:
    order = _order(user, product)
    variables = {
        "input": {
            "orderId": str(global_id("Order", order.pk)),
            "method": "tok_visa",
            "idempotencyKey": uuid.uuid4().hex,
        }
    }
    sent = time.time()
    answer = client.post("", json={"query": PROCESS, "variables": variables}).json()
    answer = answer["data"]["paymentProcess"]
    job = _finished(int(global_id("Job", 0).from_id(answer["job"]["id"]).node_id))
    return job.started_at.timestamp() - sent, (job.finished_at - job.started_at).total_seconds()


def _sent_bare(user, product) -> tuple[float, float]:
    """The same task and rows, but sent directly: the floor for dispatch latency."""
    order = _order(user, product)
    with transaction.atomic():
        job = job_create(kind=JobKind.PAYMENT, owner=user)
        payment = Payment.objects.create(
            order=order,
            created_by=user,
            amount=order.total_amount,
            currency=order.currency,
            method="tok_visa",
            idempotency_key=uuid.uuid4().hex,
            job=job,
        )
    sent = time.time()
    current_app.send_task("payments.process", kwargs={"job_id": job.pk, "payment_id": payment.pk})
    job = _finished(job.pk)
    return job.started_at.timestamp() - sent, (job.finished_at - job.started_at).total_seconds()


def _one_transaction(payment_id: int) -> float:
    started = time.perf_counter()
    with transaction.atomic():
        Payment.objects.filter(pk=payment_id, status="succeeded").update(error_message="")
    return time.perf_counter() - started


def _gateway_round_trip() -> float:
    started = time.perf_counter()
    gateway.charge_create(
        amount=10,
        currency="USD",
        source="tok_visa",
        reference="bench",
        idempotency_key=uuid.uuid4().hex,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()

    user = make_user()
    client_token = make_token(user)
    product = make_product(price="10.00")
    Inventory.objects.create(product=product, available=1_000_000)
    server = Server(PORT, **BENCH_ENV)
    worker = start_worker("bench-payments", concurrency=1, **BENCH_ENV)
    # A kept-alive connection, as an app holds: a fresh one costs more than the mutation.
    client = httpx.Client(
        base_url=server.graphql_url, headers={"Authorization": f"Bearer {client_token}"}
    )
    try:
        for _ in range(3):  # warm the server, the worker and the connections
            _through_the_mutation(client, user, product)
            _sent_bare(user, product)
            _gateway_round_trip()
        mutation, bare, job_walls, floors = [], [], [], []
        for _ in range(args.runs):
            latency, wall = _through_the_mutation(client, user, product)
            mutation.append(latency)
            job_walls.append(wall)
            bare.append(_sent_bare(user, product)[0])
            floors.append(_gateway_round_trip() + _one_transaction(Payment.objects.last().pk))
    finally:
        client.close()
        worker.stop()
        server.stop()

    print(f"paymentProcess, {args.runs} runs each, one worker process (ms)")
    comparisons = (
        ("mutation -> task start, against bare send_task -> task start", mutation, bare),
        (
            "payment job wall time (start -> SUCCESS), against gateway round trip + 1 transaction",
            job_walls,
            floors,
        ),
    )
    for title, ours, baseline in comparisons:
        print(title)
        for label, fraction in (("p50", 0.5), ("p90", 0.9)):
            print(
                harness.row(
                    label,
                    harness.percentile(ours, fraction) * 1000,
                    harness.percentile(baseline, fraction) * 1000,
                    "ms",
                )
            )


if __name__ == "__main__":
    main()
