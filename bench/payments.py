"""paymentProcess against its floors, measured in the same run.

1. Mutation -> task start: the paymentProcess mutation over HTTP until the worker starts
   the payment task, against sending the same task bare (`send_task`) until it starts.
2. Payment job wall time (task start -> SUCCESS) against the sandbox gateway's own
   round trip for a charge, called directly with the same client, plus one database
   transaction (a conditional UPDATE of a payment row, committed), the target's floor.
3. What metrics and tracing cost per job: the whole job (mutation sent -> SUCCESS) on a
   stack with metrics on (the default), and on one with metrics and tracing on (OTLP over
   http/protobuf to a collector stand-in in this process, which counts the spans), against
   a stack with both off (METRICS_ENABLED=0, no endpoint). Each stack has its own server,
   worker and Redis database; their jobs alternate, one at a time.

    .venv/bin/python bench/payments.py [--runs 30]
"""

import argparse
import os
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from config.embedded_redis import free_port

PORT = free_port()
os.environ.setdefault("SANDBOX_BASE_URL", f"http://127.0.0.1:{PORT}/sandbox")
# A bench is not a test of the rate limit: lift it so that it does not pace the runs.
os.environ.setdefault("PAYMENT_GATEWAY_RATE_PER_MINUTE", "1000000")
os.environ.setdefault("PAYMENT_GATEWAY_BURST", "1000")

import httpx  # noqa: E402
import psutil  # noqa: E402
from celery import current_app  # noqa: E402
from django.db import transaction  # noqa: E402

from bench import harness  # noqa: E402  (sets Django up)
from domains.catalog.models import Inventory  # noqa: E402
from domains.jobs.models import TERMINAL_STATUSES, Job, JobKind  # noqa: E402
from domains.jobs.services import job_create  # noqa: E402
from domains.payments import gateway  # noqa: E402
from domains.payments.models import Payment  # noqa: E402
from schema.base import global_id  # noqa: E402
from testbed.factories import make_order, make_product, make_token, make_user  # noqa: E402
from testbed.stack import Server, start_worker  # noqa: E402

PROCESS = """
mutation($input: PaymentProcessInput!) { paymentProcess(input: $input) { job { id } errors { code } } }
"""
WARM_UP = 3
# The traced stack's batch export interval (OpenTelemetry's default is 5 s): short, so that
# every span is counted before the processes stop.
EXPORT_EVERY_MS = 500
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


class _Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP collector stand-in: takes each export, counts its spans, answers 200."""

    spans = 0

    def do_POST(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest.FromString(body)
        _Collector.spans += sum(
            len(scope.spans)
            for resource in request.resource_spans
            for scope in resource.scope_spans
        )
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def _collector() -> ThreadingHTTPServer:
    collector = ThreadingHTTPServer(("127.0.0.1", free_port()), _Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    return collector


def _redis_database(offset: int) -> str:
    """This run's Redis, another database of it: a stack of its own queue and state."""
    base, db = os.environ["REDIS_URL"].rsplit("/", 1)
    return f"{base}/{int(db or 0) + offset}"


class _BenchStack:
    """A server and one worker process on the bench's database, with `env`."""

    def __init__(self, name: str, client_token: str, port: int = 0, **env: str):
        port = port or free_port()
        env = {**BENCH_ENV, "SANDBOX_BASE_URL": f"http://127.0.0.1:{port}/sandbox", **env}
        self.server = Server(port, name=f"{name}-server", **env)
        self.worker = start_worker(name, concurrency=1, **env)
        # A kept-alive connection, as an app holds: a fresh one costs more than the mutation.
        self.client = httpx.Client(
            base_url=self.server.graphql_url, headers={"Authorization": f"Bearer {client_token}"}
        )

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the server and the worker (its pool included) used."""
        total = 0.0
        for pid in (self.server.pid, self.worker.pid):
            process = psutil.Process(pid)
            for each in (process, *process.children(recursive=True)):
                times = each.cpu_times()
                total += times.user + times.system
        return total

    def stop(self) -> None:
        self.client.close()
        self.worker.stop()
        self.server.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()

    user = make_user()
    client_token = make_token(user)
    product = make_product(price="10.00")
    Inventory.objects.create(product=product, available=1_000_000)
    collector = _collector()
    stacks: dict[str, _BenchStack] = {}
    try:
        # The floors' stack on this run's Redis, where the bare send_task sends; the three
        # compared run nothing but their own jobs, each on a Redis database of its own.
        stacks["default"] = _BenchStack("bench-payments", client_token, PORT)
        stacks["off"] = _BenchStack(
            "bench-payments-off", client_token, METRICS_ENABLED="0", REDIS_URL=_redis_database(1)
        )
        stacks["metrics"] = _BenchStack(
            "bench-payments-metrics", client_token, REDIS_URL=_redis_database(2)
        )
        stacks["traced"] = _BenchStack(
            "bench-payments-traced",
            client_token,
            REDIS_URL=_redis_database(3),
            OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{collector.server_port}",
            OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
            OTEL_BSP_SCHEDULE_DELAY=str(EXPORT_EVERY_MS),
        )
        compared = ("off", "metrics", "traced")
        client = stacks["default"].client
        for _ in range(WARM_UP):  # warm the servers, the workers and the connections
            for stack in stacks.values():
                _through_the_mutation(stack.client, user, product)
            _sent_bare(user, product)
            _gateway_round_trip()
        mutation, bare, job_walls, floors = [], [], [], []
        whole: dict[str, list[float]] = {name: [] for name in compared}
        cpu = {name: -stacks[name].cpu_seconds() for name in compared}
        for _ in range(args.runs):
            latency, wall = _through_the_mutation(client, user, product)
            mutation.append(latency)
            job_walls.append(wall)
            bare.append(_sent_bare(user, product)[0])
            floors.append(_gateway_round_trip() + _one_transaction(Payment.objects.last().pk))
            for name in compared:
                whole[name].append(sum(_through_the_mutation(stacks[name].client, user, product)))
        for name in compared:
            cpu[name] = (cpu[name] + stacks[name].cpu_seconds()) / args.runs
        time.sleep(3 * EXPORT_EVERY_MS / 1000)  # the last spans' export, before the count
    finally:
        for stack in stacks.values():
            stack.stop()
        collector.shutdown()

    print(f"paymentProcess, {args.runs} runs each, one worker process (ms)")
    comparisons = (
        ("mutation -> task start, against bare send_task -> task start", mutation, bare),
        (
            "payment job wall time (start -> SUCCESS), against gateway round trip + 1 transaction",
            job_walls,
            floors,
        ),
        (
            "whole job (mutation sent -> SUCCESS), metrics on (the default), against both off",
            whole["metrics"],
            whole["off"],
        ),
        (
            "whole job, metrics and tracing on (OTLP http/protobuf), against both off",
            whole["traced"],
            whole["off"],
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

    print("CPU per job (server + worker processes, user + system; ratio against both off)")
    for name, label in (("metrics", "metrics on"), ("traced", "metrics and tracing on")):
        print(harness.row(label, cpu[name] * 1000, cpu["off"] * 1000, "ms"))
    print(
        f"spans exported per traced job: {_Collector.spans / (WARM_UP + args.runs):.0f} "
        "(server and worker; the collector stand-in counted them)"
    )


if __name__ == "__main__":
    main()
