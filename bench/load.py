"""Load that must not lose work: a real server and worker on PostgreSQL.

CLIENTS clients each run ROUNDS x (orderCreate, then paymentProcess with a fresh
idempotency key), while REPLAYERS more clients replay the keys already sent, at once.
Reports requests/s, latency (p50, p99), HTTP 5xx, the most database connections the
run's database held at once, and how long after the load every payment was terminal.
Exits non-zero when a request answered 5xx, a payment is not terminal within a minute of
the load ending, or the gateway's ledger does not hold exactly one charge per succeeded
payment (and none for another).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/jobstream_bench \\
        .venv/bin/python bench/load.py [--clients 50] [--rounds 10] [--replayers 10]
"""

import argparse
import os
import random
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from config.embedded_redis import free_port

PORT = free_port()
os.environ.setdefault("SANDBOX_BASE_URL", f"http://127.0.0.1:{PORT}/sandbox")
# A bench of load, not of the gateway's rate limit: lift it so that it does not pace us.
os.environ.setdefault("PAYMENT_GATEWAY_RATE_PER_MINUTE", "1000000")
os.environ.setdefault("PAYMENT_GATEWAY_BURST", "1000")

import httpx  # noqa: E402
from django.db import connection  # noqa: E402

from bench import harness  # noqa: E402  (sets Django up)
from domains.catalog.models import Inventory  # noqa: E402
from domains.payments.models import Payment, PaymentStatus  # noqa: E402
from domains.sandbox.models import GatewayCharge  # noqa: E402
from schema.base import global_id  # noqa: E402
from testbed.factories import make_product, make_token, make_user  # noqa: E402
from testbed.stack import Server, start_worker  # noqa: E402

ORDER_CREATE = """
mutation($input: OrderCreateInput!) { orderCreate(input: $input) { order { id } errors { code } } }
"""
PAYMENT_PROCESS = """
mutation($input: PaymentProcessInput!) {
  paymentProcess(input: $input) { payment { id status } errors { code } }
}
"""
BENCH_ENV = {
    key: os.environ[key]
    for key in ("SANDBOX_BASE_URL", "PAYMENT_GATEWAY_RATE_PER_MINUTE", "PAYMENT_GATEWAY_BURST")
}
TERMINAL = {PaymentStatus.SUCCEEDED, PaymentStatus.FAILED}


class Tally:
    """What every client saw, shared across their threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.statuses: Counter[int] = Counter()
        self.codes: Counter[str] = Counter()
        self.sent: list[dict] = []  # paymentProcess inputs, for the replayers
        self.load_done = threading.Event()

    def post(self, client: httpx.Client, query: str, variables: dict) -> dict | None:
        started = time.perf_counter()
        try:
            response = client.post("", json={"query": query, "variables": variables})
        except httpx.HTTPError as error:
            with self.lock:
                self.codes[f"transport:{type(error).__name__}"] += 1
            return None
        elapsed = time.perf_counter() - started
        body = (
            response.json()
            if response.headers.get("content-type", "").startswith("application/json")
            else {}
        )
        with self.lock:
            self.latencies.append(elapsed)
            self.statuses[response.status_code] += 1
            for error in body.get("errors") or []:
                self.codes[(error.get("extensions") or {}).get("code", "no code")] += 1
            for payload in (body.get("data") or {}).values():
                for error in (payload or {}).get("errors") or []:
                    self.codes[error["code"]] += 1
        return body


def _client(server: Server, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=server.graphql_url,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


def shopper(server: Server, token: str, product_id: str, rounds: int, tally: Tally) -> None:
    with _client(server, token) as client:
        for _ in range(rounds):
            created = tally.post(
                client,
                ORDER_CREATE,
                {"input": {"items": [{"productId": product_id, "quantity": 1}]}},
            )
            order = ((created or {}).get("data") or {}).get("orderCreate") or {}
            if not order.get("order"):
                continue
            variables = {
                "input": {
                    "orderId": order["order"]["id"],
                    "method": "tok_visa",
                    "idempotencyKey": uuid.uuid4().hex,
                }
            }
            tally.post(client, PAYMENT_PROCESS, variables)
            with tally.lock:
                tally.sent.append({"token": token, "variables": variables})


def replayer(server: Server, tally: Tally, seed: int) -> None:
    """Sends paymentProcess again with a key already sent, by its owner, as a retrying
    client does, until the load ends."""
    chooser = random.Random(seed)
    clients: dict[str, httpx.Client] = {}
    try:
        while not tally.load_done.is_set():
            with tally.lock:
                sent = chooser.choice(tally.sent) if tally.sent else None
            if sent is None:
                time.sleep(0.01)
                continue
            client = clients.get(sent["token"])
            if client is None:
                client = clients[sent["token"]] = _client(server, sent["token"])
            tally.post(client, PAYMENT_PROCESS, sent["variables"])
    finally:
        for client in clients.values():
            client.close()


def connections_sampler(stop: threading.Event, most: list[int]) -> None:
    """The most connections to this database at once (this sampler's own excluded)."""
    with connection.cursor() as cursor:
        while not stop.is_set():
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND pid <> pg_backend_pid()"
            )
            most[0] = max(most[0], cursor.fetchone()[0])
            time.sleep(0.05)
    connection.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--replayers", type=int, default=10)
    parser.add_argument("--worker-concurrency", type=int, default=2)
    args = parser.parse_args()
    if connection.vendor != "postgresql":
        print("bench/load.py measures PostgreSQL: set DATABASE_URL to a database of its own")
        return 2

    run = uuid.uuid4().hex[:8]
    users = [make_user(email=f"load-{run}-{n}@example.com") for n in range(args.clients)]
    tokens = [make_token(user) for user in users]
    product = make_product(sku=f"LOAD-{run}", price="10.00")
    Inventory.objects.create(product=product, available=1_000_000)
    product_id = str(global_id("Product", product.pk))
    payments_before = set(Payment.objects.values_list("pk", flat=True))
    connection.close()  # the bench holds no connection while it measures

    server = Server(PORT, **BENCH_ENV)
    worker = start_worker("bench-load", concurrency=args.worker_concurrency, **BENCH_ENV)
    tally = Tally()
    stop_sampling, most_connections = threading.Event(), [0]
    sampler = threading.Thread(target=connections_sampler, args=(stop_sampling, most_connections))
    try:
        sampler.start()
        shoppers = [
            threading.Thread(target=shopper, args=(server, t, product_id, args.rounds, tally))
            for t in tokens
        ]
        replayers = [
            threading.Thread(target=replayer, args=(server, tally, n))
            for n in range(args.replayers)
        ]
        started = time.perf_counter()
        for thread in shoppers + replayers:
            thread.start()
        for thread in shoppers:
            thread.join()
        tally.load_done.set()
        for thread in replayers:
            thread.join()
        load_seconds = time.perf_counter() - started

        ours = Payment.objects.exclude(pk__in=payments_before)
        deadline = time.monotonic() + 60
        while ours.exclude(status__in=TERMINAL).exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        settled_after = time.perf_counter() - started - load_seconds
        stop_sampling.set()
        sampler.join()
        pending = Counter(ours.exclude(status__in=TERMINAL).values_list("status", flat=True))
        outcomes = Counter(ours.values_list("status", flat=True))
        keys = [(payment.gateway_idempotency_key, payment.status) for payment in ours]
    finally:
        stop_sampling.set()
        worker.stop()
        server.stop()

    charged = Counter(
        GatewayCharge.objects.filter(idempotency_key__in=[key for key, _ in keys]).values_list(
            "idempotency_key", flat=True
        )
    )
    succeeded = {key for key, status in keys if status == PaymentStatus.SUCCEEDED}
    charge_problems = {
        "keys charged twice": sum(1 for n in charged.values() if n > 1),
        "succeeded without a charge": len(succeeded - set(charged)),
        "charged without succeeding": len(set(charged) - succeeded),
    }
    requests = sum(tally.statuses.values())
    server_errors = sum(n for status, n in tally.statuses.items() if status >= 500)

    print(
        f"load: {args.clients} clients x {args.rounds} x (orderCreate + paymentProcess),"
        f" {args.replayers} replaying keys; one server process, "
        f"{args.worker_concurrency} worker processes"
    )
    print(
        f"  requests            {requests} in {load_seconds:.1f} s = {requests / load_seconds:.0f}/s"
    )
    print(
        f"  latency             p50 {harness.percentile(tally.latencies, 0.5) * 1000:.0f} ms,"
        f" p99 {harness.percentile(tally.latencies, 0.99) * 1000:.0f} ms"
    )
    print(f"  HTTP statuses       {dict(sorted(tally.statuses.items()))}")
    print(f"  error codes         {dict(tally.codes.most_common())}")
    print(f"  db connections      at most {most_connections[0]} held at once")
    print(f"  payments            {dict(outcomes)}; terminal {settled_after:.1f} s after the load")
    print(f"  gateway ledger      {len(charged)} charges; {charge_problems}")
    failed = server_errors or pending or any(charge_problems.values())
    if failed:
        print(f"FAILED: 5xx {server_errors}, not terminal {dict(pending)}, {charge_problems}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
