"""Fair starts: issue 21's three targets, side by side in one run.

A server (the sandbox gateway), a worker per lane as `make run` starts them (interactive:
2 slots, bulk: 2 slots), one SQLite database and one embedded Redis. Each report reads
--rows sales lines at REPORT_MAX_ROWS_PER_SECOND, so that its run time is known; the
figures are in units of that run time, or as ratios, against a baseline in the same run:

1. a flooding user queues --flood reports, then another user starts one: that report's
   wait (creation -> STARTED) in report run times; baseline: the same with fairness off
   (every job admitted at once, the broker's arrival order, as before the dispatcher).
   Target: <= 1.5 run times.
2. a payment's start latency (mutation sent -> STARTED), p50 of --payments, while the
   flood waits, against the same on an idle stack. Target: ratio <= 1.5.
3. the flooder's own throughput (its reports a second, first created -> last ended) with
   fairness on against fairness off. Target: ratio >= 0.95.

    .venv/bin/python bench/fairness.py [--flood 200] [--rows 200] [--payments 10]
"""

import argparse
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

parser = argparse.ArgumentParser()
parser.add_argument("--flood", type=int, default=200, help="the flooding user's reports")
parser.add_argument("--rows", type=int, default=200, help="sales lines each report reads")
parser.add_argument("--rate", type=int, default=400, help="rows a second a report reads")
parser.add_argument("--payments", type=int, default=10)
parser.add_argument("--buffer", type=int, default=0, help="messages per lane past its slots")
args = parser.parse_args()
os.environ["REPORT_MAX_ROWS_PER_SECOND"] = str(args.rate)

import httpx  # noqa: E402
from django.conf import settings  # noqa: E402
from django.utils import timezone  # noqa: E402

from bench import harness  # noqa: E402  (sets Django up)
from config import embedded_redis  # noqa: E402
from config.celery import app  # noqa: E402
from domains.accounts.models import User  # noqa: E402
from domains.accounts.services import token_create  # noqa: E402
from domains.catalog.models import Category, Inventory, Product  # noqa: E402
from domains.jobs.models import Job  # noqa: E402
from domains.orders.models import Order, OrderItem, OrderStatus  # noqa: E402
from domains.reports.services import sales_report_generate  # noqa: E402
from schema.base import global_id, node_pk  # noqa: E402

PASSWORD = "bench-password-1234"
# The lanes' slots as the dispatcher counts them: the workers' processes (2 each), plus
# --buffer messages kept on the broker per lane so that a freed process never waits for a
# pass (each buffered message is one more job another user's may wait behind).
FAIR = {
    "JOB_MAX_RUNNING_PER_USER": "4",
    "JOB_LANE_SLOTS": f"interactive:{2 + args.buffer},bulk:{2 + args.buffer},staff:1",
}
UNFAIR = {  # everything admitted at once: the broker's FIFO decides, as before
    "JOB_MAX_RUNNING_PER_USER": "1000000",
    "JOB_LANE_SLOTS": "interactive:1000000,bulk:1000000,staff:1000000",
}
PAY = """
mutation($input: PaymentProcessInput!) {
  paymentProcess(input: $input) { job { id } errors { code message } }
}
"""


class Child:
    """A process of the stack, its output in the run's directory."""

    def __init__(self, name: str, command: list[str], env: dict[str, str]):
        self.log = (harness.RUN_DIR / f"{name}.log").open("ab")
        self.popen = subprocess.Popen(command, env=env, stdout=self.log, stderr=self.log)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
        self.log.close()


def _wait(condition, timeout: float = 300, step: float = 0.005):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(step)
    return value


class Stack:
    """A server and a worker per lane, all with `extra` in their environment."""

    def __init__(self, extra: dict[str, str], port: int):
        env = {**os.environ, **extra, "PYTHONUNBUFFERED": "1"}
        env["SANDBOX_BASE_URL"] = f"http://127.0.0.1:{port}/sandbox"
        self.url = f"http://127.0.0.1:{port}/graphql/"
        python = sys.executable
        self.children = [
            Child(
                "server",
                [python, "-m", "uvicorn", "config.asgi:application", "--port", str(port)],
                env,
            )
        ]
        names = []
        for lane, slots in (("interactive", 2), ("bulk", 2)):
            queue = settings.JOB_LANE_QUEUES[lane]
            names.append(f"{lane}@bench")
            self.children.append(
                Child(
                    f"{lane}-worker",
                    [
                        *(python, "-m", "celery", "-A", "config", "worker", "-Q", queue),
                        *("--concurrency", str(slots), "--hostname", names[-1]),
                        *("--without-gossip", "--without-mingle", "--loglevel", "WARNING"),
                    ],
                    env,
                )
            )
        _wait(lambda: len(app.control.ping(destination=names, timeout=0.5) or []) == 2, 120, 0.2)
        _wait(lambda: _answers(f"http://127.0.0.1:{port}/healthz"), 120, 0.2)
        settings.JOB_MAX_RUNNING_PER_USER = int(extra["JOB_MAX_RUNNING_PER_USER"])
        settings.JOB_LANE_SLOTS = {
            lane: int(slots)
            for lane, _, slots in (i.partition(":") for i in extra["JOB_LANE_SLOTS"].split(","))
        }

    def stop(self) -> None:
        for child in self.children:
            child.stop()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _user(email: str) -> User:
    return User.objects.create_user(email, PASSWORD)


def _sales(owner: User, rows: int) -> None:
    category = Category.objects.create(name="Bench", slug=f"bench-{owner.pk}")
    product = Product.objects.create(category=category, sku=f"B-{owner.pk}", name="B", price=5)
    orders = Order.objects.bulk_create(
        Order(
            number=f"S-{owner.pk}-{i}",
            customer=owner,
            status=OrderStatus.CONFIRMED,
            region="north",
            total_amount=5,
            created_at=timezone.now(),
        )
        for i in range(rows)
    )
    OrderItem.objects.bulk_create(
        OrderItem(order=o, product=product, quantity=1, unit_price=5) for o in orders
    )


def _report(owner: User) -> int:
    today = timezone.now().date()
    return sales_report_generate(
        viewer=owner, start_date=today - timedelta(days=1), end_date=today
    ).job_id


def _ended(job_ids: list[int], timeout: float = 3600) -> list[Job]:
    _wait(
        lambda: not Job.objects.filter(pk__in=job_ids, finished_at__isnull=True).exists(),
        timeout,
        0.1,
    )
    return list(Job.objects.filter(pk__in=job_ids).order_by("pk"))


def _payment_latencies(stack: Stack, payer: User, count: int) -> list[float]:
    """Seconds from each mutation's send to its job's STARTED, one payment at a time."""
    token, _ = token_create(email=payer.email, password=PASSWORD)
    product = Product.objects.create(sku=f"P-{time.monotonic_ns()}", name="P", price=3)
    Inventory.objects.create(product=product, available=count)
    latencies = []
    with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
        for _ in range(count):
            order = Order.objects.create(
                number=f"P-{time.monotonic_ns()}",
                customer=payer,
                status="pending",
                region="north",
                total_amount=3,
                created_at=timezone.now(),
            )
            OrderItem.objects.create(order=order, product=product, quantity=1, unit_price=3)
            variables = {
                "input": {
                    "orderId": str(global_id("Order", order.pk)),
                    "method": "tok_visa",
                    "idempotencyKey": f"bench-{order.pk}",
                }
            }
            sent = timezone.now()
            body = client.post(stack.url, json={"query": PAY, "variables": variables}).json()
            payload = body["data"]["paymentProcess"]
            assert not payload["errors"], payload
            job_id = node_pk(payload["job"]["id"], "Job")
            started = _wait(
                lambda job_id=job_id: (
                    Job.objects.filter(pk=job_id).values_list("started_at", flat=True).first()
                )
            )
            latencies.append((started - sent).total_seconds())
            _ended([job_id], 60)
    return latencies


def _flood_run(mode: dict[str, str], flooder: User, other: User, payer: User) -> dict:
    stack = Stack(mode, embedded_redis.free_port())
    try:
        idle = _payment_latencies(stack, payer, args.payments)
        flood = [_report(flooder) for _ in range(args.flood)]
        single = _report(other)
        busy = _payment_latencies(stack, payer, args.payments)
        ended = _ended([*flood, single])
    finally:
        stack.stop()
    by_pk = {job.pk: job for job in ended}
    runs = [(j.finished_at - j.started_at).total_seconds() for j in ended if j.started_at]
    first = min(by_pk[pk].created_at for pk in flood)
    last = max(by_pk[pk].finished_at for pk in flood)
    return {
        "run": harness.median(runs),
        "single_wait": (by_pk[single].started_at - by_pk[single].created_at).total_seconds(),
        "idle_p50": harness.percentile(idle, 0.5),
        "busy_p50": harness.percentile(busy, 0.5),
        "throughput": len(flood) / (last - first).total_seconds(),
        "failed": sum(job.status != "SUCCESS" for job in ended),
    }


def main() -> None:
    flooder, other, payer = _user("flood@bench"), _user("single@bench"), _user("payer@bench")
    _sales(flooder, args.rows)
    results = {}
    for name, mode in (("fair", FAIR), ("unfair", UNFAIR)):
        results[name] = _flood_run(mode, flooder, other, payer)
    fair, unfair = results["fair"], results["unfair"]
    print(
        f"fairness: {args.flood} queued reports of {args.rows} rows at {args.rate} rows/s "
        f"(a report's run {fair['run']:.2f} s), {args.payments} payments; bulk lane 2 slots, "
        f"interactive 2, buffer {args.buffer}; jobs not SUCCESS: fair {fair['failed']}, "
        f"unfair {unfair['failed']}"
    )
    print(
        harness.row(
            "single report wait (run times)",
            fair["single_wait"] / fair["run"],
            unfair["single_wait"] / unfair["run"],
            "runs",
        )
        + "   target ours <= 1.5"
    )
    print(
        harness.row(
            "payment start p50, flood queued",
            fair["busy_p50"] * 1000,
            fair["idle_p50"] * 1000,
            "ms",
        )
        + "   (baseline: idle) target ratio <= 1.5"
    )
    print(
        harness.row(
            "  same, fairness off", unfair["busy_p50"] * 1000, unfair["idle_p50"] * 1000, "ms"
        )
    )
    print(
        harness.row("flooder throughput", fair["throughput"], unfair["throughput"], "/s")
        + "   (baseline: fairness off) target ratio >= 0.95"
    )


if __name__ == "__main__":
    main()
