"""config.celery.ResultBackend: a task sent subscribes to no result channel; whoever waits
for a result subscribes then, and gets it."""

import threading

import psutil
import pytest
from celery import current_app
from celery.result import AsyncResult

from domains.infra.redis import sync_client
from domains.jobs.models import Job, JobStatus
from testbed.waiting import job_finished
from tests.e2e.test_job_progress import _sales, _start_report

UNCONSUMED = "tests-unconsumed"  # no worker reads it: the message only waits there


def _redis_sockets() -> int:
    """This process's open connections to the Redis that Celery's backend uses."""
    port = current_app.backend.client.connection_pool.connection_kwargs["port"]
    return sum(
        1 for c in psutil.Process().net_connections("tcp") if c.raddr and c.raddr.port == port
    )


def test_a_task_sent_from_a_fresh_thread_opens_no_result_subscription():
    """As a request sends its job's task: Django runs each ASGI request's sync code on a
    thread of its own, where Celery builds a backend of its own. Celery's Redis backend
    subscribed that backend to the task's result channel (a pub/sub connection of its own,
    opened for the one send) and let go of it as the unread result was dropped."""
    current_app.send_task("jobs.not_run", queue=UNCONSUMED)  # the producer's connection
    counts: list[int] = []

    def send() -> None:
        before = _redis_sockets()
        current_app.send_task("jobs.not_run", queue=UNCONSUMED)
        counts.append(_redis_sockets() - before)  # while this thread's backend lives

    thread = threading.Thread(target=send)
    thread.start()
    thread.join()
    sync_client().delete(UNCONSUMED)

    assert counts == [0]


@pytest.mark.e2e
def test_whoever_waits_for_a_jobs_result_still_gets_it(live, user):
    _sales(user, 10)
    _, job_pk = _start_report(live.client(user))
    result = AsyncResult(str(Job.objects.get(pk=job_pk).task_id))

    result.get(timeout=60)  # waits (subscribed now) for the worker to store it

    assert result.state == "SUCCESS"
    assert job_finished(job_pk).status == JobStatus.SUCCESS
