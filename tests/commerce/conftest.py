"""A commerce stack: a real server (with the sandbox gateway and catalog) and a real
worker, configured with short timeouts and a small breaker so failures show in seconds."""

import json
import os
import time

import pytest
from celery import current_app
from django.test import Client

from config.embedded_redis import free_port
from domains.catalog.models import Inventory, Product
from domains.jobs.models import TERMINAL_STATUSES, Job
from domains.redis import sync_client
from domains.sandbox.standin import recorded_calls
from tests.conftest import Stack
from tests.fixtures.factories import make_product, make_token
from tests.fixtures.stack import Server, start_worker

COMMERCE_ENV = {
    "PAYMENT_GATEWAY_READ_TIMEOUT": "3",
    "PAYMENT_GATEWAY_ATTEMPTS": "2",
    "PAYMENT_MAX_RETRIES": "2",
    "PAYMENT_BREAKER_THRESHOLD": "3",
    "PAYMENT_BREAKER_RESET_SECONDS": "3",
    "SANDBOX_GATEWAY_HANG_SECONDS": "5",  # past the read timeout
    "SANDBOX_GATEWAY_SLOW_SECONDS": "2.5",  # within it
    # Every worker process must agree on the catalog's limit: 4 a second, 2 at once.
    "CATALOG_RATE_PER_MINUTE": "240",
    "CATALOG_RATE_BURST": "2",
    "SANDBOX_CATALOG_SIZE": "30",
}
SANDBOX_KEYS = ("sandbox:*", "breaker:*", "ratelimit:*", "catalog:sync:*", "job:*")


def clear_sandbox_state() -> None:
    for pattern in SANDBOX_KEYS:
        for key in sync_client().scan_iter(pattern, count=1000):
            sync_client().delete(key)


def commerce_env(port: int) -> dict[str, str]:
    return {"SANDBOX_BASE_URL": f"http://127.0.0.1:{port}/sandbox", **COMMERCE_ENV}


def _other_workers() -> list[str]:
    replies = current_app.control.ping(timeout=0.5) or []
    return [name for reply in replies for name in reply if not name.startswith("commerce-")]


@pytest.fixture(scope="package")
def commerce_stack(django_db_setup, django_db_blocker):
    """Lives for this package only, and holds the queue alone meanwhile: the suite's shared
    worker (other settings) is paused, so that neither takes the other's tasks."""
    paused = _other_workers()
    if paused:
        current_app.control.cancel_consumer("celery", destination=paused, reply=True)
    port = free_port()
    server = Server(port, **commerce_env(port))
    worker = start_worker("commerce-worker", concurrency=2, **commerce_env(port))
    yield Stack(server, worker)
    server.stop()
    worker.stop()
    if paused:
        current_app.control.add_consumer("celery", destination=paused, reply=True)


@pytest.fixture
def shop(commerce_stack, transactional_db):
    """The commerce stack with a clean sandbox (ledger, call log, breaker, rate limits)."""
    clear_sandbox_state()
    assert commerce_stack.worker.alive(), commerce_stack.worker.log_tail()
    return commerce_stack


def stocked_product(*, price: str = "10.00", available: int = 10, **fields) -> Product:
    product = make_product(price=price, **fields)
    Inventory.objects.create(product=product, available=available)
    return product


def wait_for_job(job_id: int, timeout: float = 60) -> Job:
    deadline = time.monotonic() + timeout
    while True:
        job = Job.objects.get(pk=job_id)
        if job.status in TERMINAL_STATUSES:
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job.status}"
        time.sleep(0.05)


def wait_until(condition, timeout: float = 30, message: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {message}"
        time.sleep(0.05)


def pid_running(task_name: str) -> int:
    """The pid of the worker process running `task_name`, as the worker itself reports."""
    worker = f"commerce-worker@{os.uname().nodename}"
    active = current_app.control.inspect([worker], timeout=2, limit=1).active() or {}
    pids = [t["worker_pid"] for tasks in active.values() for t in tasks if t["name"] == task_name]
    assert len(pids) == 1, active
    return pids[0]


def gateway_calls(path_suffix: str = "/charges") -> list[dict]:
    return [c for c in recorded_calls("gateway") if c["path"].endswith(path_suffix)]


class InProcessGraphQL:
    """GraphQL through Django's test client, in this process (for query counting)."""

    def __init__(self, user):
        self.client = Client()
        self.headers = {"HTTP_AUTHORIZATION": f"Bearer {make_token(user)}"}

    def data(self, query: str, variables: dict | None = None) -> dict:
        response = self.client.post(
            "/graphql/",
            json.dumps({"query": query, "variables": variables or {}}),
            content_type="application/json",
            **self.headers,
        )
        body = response.json()
        assert "errors" not in body, body["errors"]
        return body["data"]
