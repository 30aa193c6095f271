"""`make run`'s supervisor: a child that exits is started again; Ctrl-C stops them all,
and the embedded Redis keeps what it held."""

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from itertools import pairwise

import httpx
import psutil
import pytest
from django.conf import settings
from django.utils import timezone

from config import embedded_redis
from config.management.commands.runstack import RESTART_DELAY_MAX, Child
from domains.jobs.models import Job, JobStatus
from testbed.factories import (
    make_category,
    make_product,
    make_sales_lines,
    make_token,
    make_user,
)
from testbed.graphql import JOB_PROGRESS, GraphQLClient, Subscription
from testbed.stack import database_url
from testbed.waiting import job_finished, job_in_status, wait_until


def test_a_child_that_keeps_exiting_is_restarted_later_each_time_up_to_the_cap():
    child = Child.started("flaky", lambda: subprocess.Popen(["true"]))
    delays = []
    for _ in range(7):
        child.process.wait()
        delays.append(child.exited())
        child.restart()
    child.process.wait()

    assert delays == [1, 2, 4, 8, 16, RESTART_DELAY_MAX, RESTART_DELAY_MAX]
    assert child.restarts == 7


def _children(supervisor: psutil.Process) -> dict[str, list[psutil.Process]]:
    """The supervisor's live server, worker (each job lane's, webhooks') and beat processes,
    by kind."""
    found: dict[str, list[psutil.Process]] = {}
    for process in supervisor.children():
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                continue  # exited, not yet reaped by the supervisor
            words = process.cmdline()
        except psutil.NoSuchProcess:
            continue
        for word, name in (("uvicorn", "server"), ("worker", "worker"), ("beat", "beat")):
            if word in words:
                if name == "worker" and (queue := words[words.index("--queues") + 1]) != "celery":
                    name = f"{queue}-worker"  # webhooks-, bulk-, staff-worker
                found.setdefault(name, []).append(process)
    return found


def _server_processes(supervisor: psutil.Process) -> list[psutil.Process]:
    """Every process serving the port: the server children and whatever they started."""
    servers = _children(supervisor).get("server", [])
    return servers + [p for s in servers for p in s.children(recursive=True)]


def _runstack(tmp_path, port: int, redis_port: int, **extra: str):
    """`make run`'s command on the test database, in its own process group (as a
    terminal's foreground job), with its own embedded Redis; returns (process, log)."""
    # Its own Redis and metrics: runstack empties its metrics folder at start.
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "METRICS_DIR")}
    # Its Redis is its broker too, on every pass: on the suite's RabbitMQ vhost the suite's
    # worker would take its tasks, and a vhost of its own costs RabbitMQ some 30 quorum
    # queues made and dropped per test.
    env.pop("CELERY_BROKER_URL", None)
    env.update(
        DATABASE_URL=database_url(),
        VAR_DIR=str(tmp_path),
        EMBEDDED_REDIS_PORT=str(redis_port),
        PYTHONUNBUFFERED="1",
        **extra,
    )
    log = (tmp_path / "runstack.log").open("a+b")
    stack = subprocess.Popen(
        [sys.executable, "manage.py", "runstack", "--no-seed", "--port", str(port)],
        env=env,
        cwd=settings.BASE_DIR,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return stack, log


@pytest.mark.e2e
def test_the_stack_restarts_a_child_that_died_and_ctrl_c_stops_everything(
    django_db_setup, tmp_path
):
    port, redis_port = embedded_redis.free_port(), embedded_redis.free_port()
    stack, log = _runstack(
        tmp_path, port, redis_port, WEB_CONCURRENCY="2", CELERY_WORKER_CONCURRENCY="3"
    )
    supervisor = psutil.Process(stack.pid)
    expected = {
        "server": 2,
        "worker": 1,
        "bulk-worker": 1,
        "staff-worker": 1,
        "webhooks-worker": 1,
        "beat": 1,
    }
    sizes = lambda: {k: len(v) for k, v in _children(supervisor).items()}  # noqa: E731
    try:
        wait_until(
            lambda: _healthy(port) and sizes() == expected,
            timeout=90,
            message="the stack to serve",
        )
        assert _children(supervisor)["worker"][0].cmdline()[-4:-2] == ["--concurrency", "3"]
        # WEB_CONCURRENCY=2 is two server processes, not two uvicorn supervisors of two each.
        assert len(_server_processes(supervisor)) == 2
        for name in ("worker", "server"):
            died = _children(supervisor)[name][0]
            died.kill()
            if name == "server":  # the other server process keeps the port answering
                assert _healthy(port)
            wait_until(
                # One look at the children: a child can exit between two looks.
                lambda name=name, died=died: (
                    len(children := _children(supervisor).get(name, [])) == expected[name]
                    and died.pid not in {c.pid for c in children}
                ),
                timeout=30,
                message=f"a new {name}",
            )
        wait_until(lambda: _healthy(port), timeout=60, message="the restarted server")
        said = (tmp_path / "runstack.log").read_text(errors="replace")
        assert "worker exited with code -9; restarting it in 1s" in said
        assert re.search(r"server-[12] exited with code -9; restarting it in 1s", said)

        redis = _redis(redis_port)
        redis.set("queued-before-ctrl-c", "1")
        processes = [supervisor, *supervisor.children(recursive=True)]
        redis_process = next(p for p in processes if "redis-server" in p.name())
        os.killpg(stack.pid, signal.SIGINT)  # what Ctrl-C in the terminal does

        assert stack.wait(timeout=40) == 0
        gone, alive = psutil.wait_procs(processes, timeout=10)
        assert alive == []
        assert redis_process in gone
    finally:
        if stack.poll() is None:
            os.killpg(stack.pid, signal.SIGKILL)
        log.close()

    # The embedded Redis started again from its directory still has what it held.
    restarted_port = embedded_redis.free_port()
    restarted = embedded_redis.start(restarted_port, tmp_path / "redis")
    try:
        assert _redis(restarted_port).get("queued-before-ctrl-c") == "1"
    finally:
        restarted.kill()


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _redis(port: int):
    import redis

    return redis.Redis(port=port, decode_responses=True)


GENERATE = """mutation($input: SalesReportInput!) {
  salesReportGenerate(input: $input) { job { id } errors { code message } }
}"""
# Short enough that the test sees the watchdog act; the report slow enough to stop mid-way.
QUICK_WATCHDOG = {
    "JOB_LEASE_SECONDS": "3",
    "JOB_WATCHDOG_INTERVAL": "1",
    "JOB_PENDING_GRACE_SECONDS": "5",
    "REPORT_MAX_ROWS_PER_SECOND": "500",
}


@pytest.mark.e2e
def test_ctrl_c_mid_job_then_make_run_again_ends_the_job_and_its_subscriber_completes(
    transactional_db, tmp_path
):
    user = make_user()
    make_sales_lines(customer=user, products=[make_product(category=make_category())], orders=8000)
    port, redis_port = embedded_redis.free_port(), embedded_redis.free_port()
    client = GraphQLClient(f"http://127.0.0.1:{port}/graphql/", make_token(user))
    stack, log = _runstack(tmp_path, port, redis_port, **QUICK_WATCHDOG)
    try:
        wait_until(lambda: _healthy(port), timeout=90, message="the stack to serve")
        today = timezone.now().date().isoformat()
        started = client.data(GENERATE, {"input": {"startDate": today, "endDate": today}})
        assert started["salesReportGenerate"]["errors"] == []
        job_id = started["salesReportGenerate"]["job"]["id"]
        job_pk = Job.objects.latest("pk").pk
        job_in_status(job_pk, {JobStatus.PROGRESS}, timeout=60)
        seen_before = Job.objects.get(pk=job_pk).seq

        os.killpg(stack.pid, signal.SIGINT)  # Ctrl-C, mid-report
        assert stack.wait(timeout=40) == 0

        stack, log = _runstack(tmp_path, port, redis_port, **QUICK_WATCHDOG)
        wait_until(lambda: _healthy(port), timeout=90, message="the stack to serve again")

        async def follow():
            async with Subscription(
                f"ws://127.0.0.1:{port}/graphql/",
                JOB_PROGRESS,
                {"id": job_id, "afterSeq": seen_before},
                token=client.token,
            ) as subscription:
                return await subscription.collect(timeout=120), subscription.completed

        events, completed = asyncio.run(follow())
        job = job_finished(job_pk, timeout=30)
    finally:
        if stack.poll() is None:
            os.killpg(stack.pid, signal.SIGINT)
            stack.wait(timeout=40)
        log.close()

    assert completed
    assert job.status in (JobStatus.SUCCESS, JobStatus.FAILURE)
    if job.status == JobStatus.FAILURE:
        assert job.error  # a reason a user understands
    assert events[-1]["jobProgress"]["status"] == job.status
    seqs = [e["jobProgress"]["seq"] for e in events]
    assert seqs == sorted(set(seqs))
    assert seqs[0] > seen_before


LOG_KEYS = ["time", "level", "logger", "message"]
# A worker per job lane, and the webhooks' own.
WORKER_QUEUES = sorted([*settings.JOB_LANE_QUEUES.values(), settings.WEBHOOK_QUEUE])


@pytest.mark.e2e
def test_with_log_format_json_every_line_of_the_stack_is_a_json_object(transactional_db, tmp_path):
    user = make_user()
    make_sales_lines(customer=user, products=[make_product(category=make_category())], orders=20)
    port, redis_port = embedded_redis.free_port(), embedded_redis.free_port()
    client = GraphQLClient(f"http://127.0.0.1:{port}/graphql/", make_token(user))
    stack, log = _runstack(
        tmp_path,
        port,
        redis_port,
        LOG_FORMAT="json",
        WEB_CONCURRENCY="1",
        CELERY_WORKER_CONCURRENCY="1",
        WEBHOOK_WORKER_CONCURRENCY="1",
    )
    lines = lambda: (tmp_path / "runstack.log").read_text(errors="replace").splitlines()  # noqa: E731
    today = timezone.now().date().isoformat()
    jobs = []
    try:
        wait_until(lambda: _healthy(port), timeout=90, message="the stack to serve")
        wait_until(
            lambda: sum(" ready." in line for line in lines()) == len(WORKER_QUEUES),
            timeout=120,
            message="every worker ready",
        )
        # Reports, one after the other, until the stack has written 100 lines and more.
        while len(lines()) < 100 and len(jobs) < 30:
            started = client.data(GENERATE, {"input": {"startDate": today, "endDate": today}})
            assert started["salesReportGenerate"]["errors"] == []
            jobs.append(job_finished(Job.objects.latest("pk").pk, timeout=120))
        last = jobs[-1].pk
        wait_until(
            lambda: any(f'"job_id": {last}' in line and "job.ended" in line for line in lines()),
            timeout=90,
            message="the last report's end in the log",
        )
        written = lines()
    finally:
        if stack.poll() is None:
            os.killpg(stack.pid, signal.SIGINT)
            stack.wait(timeout=40)
        log.close()

    assert len(written) >= 100
    records = []
    for number, line in enumerate(written, 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            pytest.fail(f"line {number} is not JSON: {line!r}")
        assert isinstance(record, dict), line
        assert list(record)[:4] == LOG_KEYS, line
        records.append(record)
    assert {job.status for job in jobs} == {JobStatus.SUCCESS}
    messages = [record["message"] for record in records]
    loggers = {record["logger"] for record in records}
    # runstack's own lines, the servers', both workers' and beat's banners, as records
    assert f"GraphiQL: http://127.0.0.1:{port}/graphql/" in messages
    assert "uvicorn.error" in loggers
    starting = [r for r in records if r["message"] == "celery.worker.starting"]
    assert sorted(r["queues"][0] for r in starting) == WORKER_QUEUES
    assert "celery.beat.starting" in messages
    # a job's lines carry its id, from the worker that ran it
    ran = [r for r in records if r.get("job_id") == last and r["logger"].startswith("workers.")]
    assert ran, [r for r in records if r.get("job_id") == last]


@pytest.mark.e2e
def test_ctrl_c_with_jobs_waiting_then_make_run_again_runs_them_within_the_cap(
    transactional_db, tmp_path
):
    user = make_user()
    make_sales_lines(customer=user, products=[make_product(category=make_category())], orders=1500)
    port, redis_port = embedded_redis.free_port(), embedded_redis.free_port()
    client = GraphQLClient(f"http://127.0.0.1:{port}/graphql/", make_token(user))
    env = {**QUICK_WATCHDOG, "REPORT_MAX_ROWS_PER_SECOND": "1000", "JOB_MAX_RUNNING_PER_USER": "1"}
    stack, log = _runstack(tmp_path, port, redis_port, **env)
    try:
        wait_until(lambda: _healthy(port), timeout=90, message="the stack to serve")
        today = timezone.now().date().isoformat()
        for _ in range(4):
            started = client.data(GENERATE, {"input": {"startDate": today, "endDate": today}})
            assert started["salesReportGenerate"]["errors"] == []
        jobs = list(Job.objects.filter(owner=user).order_by("pk"))
        job_in_status(jobs[0].pk, {JobStatus.PROGRESS}, timeout=120)
        waiting = Job.objects.filter(owner=user, admitted_at__isnull=True).count()

        os.killpg(stack.pid, signal.SIGINT)  # Ctrl-C, with jobs waiting for a slot
        assert stack.wait(timeout=40) == 0
        left = Job.objects.filter(owner=user, finished_at__isnull=True).count()

        stack, log = _runstack(tmp_path, port, redis_port, **env)
        ended = [job_finished(job.pk, timeout=120) for job in jobs]
    finally:
        if stack.poll() is None:
            os.killpg(stack.pid, signal.SIGINT)
            stack.wait(timeout=40)
        log.close()

    assert waiting == 3
    assert left >= 3  # what waited at Ctrl-C ran after the restart
    assert [job.status for job in ended] == [JobStatus.SUCCESS] * 4
    # One at a time (JOB_MAX_RUNNING_PER_USER=1), before and after the restart.
    spans = sorted((job.started_at, job.finished_at) for job in ended)
    assert all(later[0] >= earlier[1] for earlier, later in pairwise(spans))
