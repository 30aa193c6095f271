import time

import pytest
from django.conf import settings
from django.db import OperationalError
from django.db.backends.base.operations import BaseDatabaseOperations

from config.embedded_redis import free_port
from domains.infra.redis import sync_client
from testbed.factories import make_user
from testbed.stack import Server, Stack, start_worker


def _flush_retrying_deadlocks(flush):
    """A test's rows are flushed while its real servers and workers still run: on
    PostgreSQL a query of theirs can deadlock with the TRUNCATE, which the database then
    aborts. The flush is tried again; the other side has finished by then."""

    def execute_sql_flush(self, sql_list):
        for attempt in range(5):
            try:
                return flush(self, sql_list)
            except OperationalError as error:
                if "deadlock detected" not in str(error) or attempt == 4:
                    raise
                time.sleep(0.2)

    return execute_sql_flush


BaseDatabaseOperations.execute_sql_flush = _flush_retrying_deadlocks(
    BaseDatabaseOperations.execute_sql_flush
)


def pytest_collection_modifyitems(items):
    """Every test that runs a real worker touches the broker: CI runs these on RabbitMQ too."""
    for item in items:
        if {"stack", "live"} & set(item.fixturenames) or item.get_closest_marker("e2e"):
            item.add_marker(pytest.mark.broker)


@pytest.fixture(scope="session", autouse=True)
def _clean_redis():
    """The suite's Redis starts empty (its own embedded server, or CI's chosen database)."""
    sync_client().flushdb()


@pytest.fixture(autouse=True)
def _fresh_throttles():
    """Every test starts with full login and sign-up budgets (they all come from 127.0.0.1)."""
    client = sync_client()
    stale = list(client.scan_iter("ratelimit:throttle:*", count=1000))
    if stale:
        client.delete(*stale)


@pytest.fixture(scope="session")
def stack(django_db_setup, django_db_blocker):
    """A real ASGI server and a real Celery worker on the test database and Redis.

    Exports are held to a few thousand rows a second so that a test can act mid-report.
    """
    port = free_port()
    env = {
        "REPORT_MAX_ROWS_PER_SECOND": "4000",
        "WEBHOOK_RETRY_DELAYS": "1,1,1",  # a webhook refused twice is taken within seconds
        "SANDBOX_BASE_URL": f"http://127.0.0.1:{port}/sandbox",
    }
    worker = start_worker(**env)
    server = Server(port, **env)
    yield Stack(server, worker)
    server.stop()
    worker.stop()


def _forget_job_streams() -> None:
    for key in sync_client().scan_iter("job:*", count=1000):
        sync_client().delete(key)


@pytest.fixture(autouse=True)
def _fresh_job_streams():
    """Job ids are reused once a test's rows are rolled back or flushed; their snapshots
    and logs in Redis must not be: each test starts with none."""
    _forget_job_streams()


@pytest.fixture
def live(stack, transactional_db):
    """The stack, with committed rows the worker and server can see."""
    _forget_job_streams()
    assert stack.worker.alive(), stack.worker.log_tail()
    return stack


@pytest.fixture
def user(transactional_db):
    return make_user()


@pytest.fixture
def other_user(transactional_db):
    return make_user()


@pytest.fixture
def staff_user(transactional_db):
    return make_user(is_staff=True)


@pytest.fixture
def media_root():
    return settings.MEDIA_ROOT
