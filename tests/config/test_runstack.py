"""`make run`'s supervisor: a child that exits is started again; Ctrl-C stops them all,
and the embedded Redis keeps what it held."""

import os
import signal
import subprocess
import sys

import httpx
import psutil
import pytest
from django.conf import settings

from config import embedded_redis
from config.management.commands.runstack import RESTART_DELAY_MAX, Child
from tests.fixtures.stack import database_url
from tests.fixtures.waiting import wait_until


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


def _children(supervisor: psutil.Process) -> dict[str, psutil.Process]:
    """The supervisor's live server, worker and beat processes, by name."""
    found = {}
    for process in supervisor.children():
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                continue  # exited, not yet reaped by the supervisor
            words = process.cmdline()
        except psutil.NoSuchProcess:
            continue
        for word, name in (("uvicorn", "server"), ("worker", "worker"), ("beat", "beat")):
            if word in words:
                found[name] = process
    return found


@pytest.mark.e2e
def test_the_stack_restarts_a_child_that_died_and_ctrl_c_stops_everything(
    django_db_setup, tmp_path
):
    port, redis_port = embedded_redis.free_port(), embedded_redis.free_port()
    env = {key: value for key, value in os.environ.items() if key != "REDIS_URL"}
    env.update(
        DATABASE_URL=database_url(),
        VAR_DIR=str(tmp_path),
        EMBEDDED_REDIS_PORT=str(redis_port),
        PYTHONUNBUFFERED="1",
    )
    log = (tmp_path / "runstack.log").open("w+b")
    stack = subprocess.Popen(
        [sys.executable, "manage.py", "runstack", "--no-seed", "--port", str(port)],
        env=env,
        cwd=settings.BASE_DIR,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    supervisor = psutil.Process(stack.pid)
    try:
        wait_until(
            lambda: _healthy(port) and len(_children(supervisor)) == 3,
            timeout=90,
            message="the stack to serve",
        )
        for name in ("worker", "server"):
            died = _children(supervisor)[name]
            died.kill()
            wait_until(
                lambda name=name, died=died: (
                    name in _children(supervisor) and _children(supervisor)[name].pid != died.pid
                ),
                timeout=30,
                message=f"a new {name}",
            )
        wait_until(lambda: _healthy(port), timeout=60, message="the restarted server")
        said = (tmp_path / "runstack.log").read_text(errors="replace")
        assert "worker exited with code -9; restarting it in 1s" in said
        assert "server exited with code -9; restarting it in 1s" in said

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
