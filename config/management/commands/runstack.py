"""`manage.py runstack`: the whole service as one supervised group.

Checks the configured database and Redis (one clear line if one cannot be reached),
starts the embedded Redis when REDIS_URL is not set, migrates (and with DEBUG off collects
the static files), loads the demo data once, then runs WEB_CONCURRENCY ASGI server
processes, a Celery worker per job lane (interactive, bulk, staff), a worker for webhook
deliveries and beat until Ctrl-C, which stops them all. A child that exits
on its own (a crash, an OOM kill) is started again, after a delay that grows while it keeps
exiting.

The server processes share one listening socket, which this supervisor opens and hands
each of them (uvicorn --fd): the kernel spreads connections over them, each runs its own
event loop with its own pub/sub connection, and one that dies is started again on the
same socket while the others keep serving.
"""

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from django.conf import settings
from django.core.management import BaseCommand, CommandError, call_command
from django.core.management.base import OutputWrapper
from django.core.management.color import no_style
from django.db import connection

from config import embedded_redis
from config.logging import LogStream, json_logs

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Run the server, worker, beat (and embedded Redis) together; Ctrl-C stops all."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", 8000)))
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument(
            "--concurrency", type=int, default=settings.JOB_LANE_SLOTS["interactive"]
        )
        parser.add_argument("--web-concurrency", type=int, default=settings.WEB_CONCURRENCY)
        parser.add_argument("--no-seed", action="store_true", help="skip the demo data")

    def handle(self, *args, **options):
        if json_logs():  # this command's lines, and those of the commands it calls, as records
            self.stdout = self.stderr = OutputWrapper(LogStream(logger))
            self.style = no_style()
        children: list[Child] = []
        # The figures of an earlier run's processes (their pids may be reused) are not this
        # run's: /metrics starts from zero.
        shutil.rmtree(settings.PROMETHEUS_MULTIPROC_DIR, ignore_errors=True)
        settings.PROMETHEUS_MULTIPROC_DIR.mkdir(parents=True)
        try:
            if settings.EMBEDDED_REDIS:
                self.stdout.write(
                    f"Starting embedded Redis on 127.0.0.1:{settings.EMBEDDED_REDIS_PORT}"
                )
                redis_dir = settings.VAR_DIR / "redis"
                children.append(
                    Child.started(
                        "redis",
                        partial(embedded_redis.start, settings.EMBEDDED_REDIS_PORT, redis_dir),
                    )
                )
            check_services()
            call_command("migrate", interactive=False, verbosity=0)
            if not settings.DEBUG:  # development serves static files from where they live
                call_command("collectstatic", interactive=False, verbosity=0)
            if not options["no_seed"]:
                call_command(
                    "seed_demo", only_if_empty=True, stdout=self.stdout, stderr=self.stderr
                )
            os.environ.setdefault("SANDBOX_BASE_URL", f"http://127.0.0.1:{options['port']}/sandbox")
            listener = _listening_socket(options["host"], options["port"])
            for name, command in self._commands(options, listener.fileno()).items():
                start = partial(
                    subprocess.Popen, command, env=os.environ.copy(), pass_fds=(listener.fileno(),)
                )
                children.append(Child.started(name, start))
            url = f"http://{options['host']}:{options['port']}/graphql/"
            self.stdout.write(self.style.SUCCESS(f"\nGraphiQL: {url}"))
            self.stdout.write(
                "Demo login: demo@example.com / demo-password (staff: admin@example.com / admin-password)"
            )
            self.stdout.write("Ctrl-C stops everything.\n")
            self._supervise(children)
        finally:
            self._stop(children)

    def _commands(self, options, listener_fd: int) -> dict[str, list[str]]:
        python = sys.executable
        server = [
            python,
            "-m",
            "uvicorn",
            "config.asgi:application",
            "--fd",
            str(listener_fd),
            # One process each: uvicorn would read WEB_CONCURRENCY from the environment
            # as its own worker count, and start N x N.
            "--workers",
            "1",
            "--no-access-log",
            "--ws-ping-interval",
            "20",
            # A progress frame is ~100 bytes: compressing each one, for every subscriber,
            # cost the server a tenth of its time and every socket ~40 KB of zlib state.
            "--ws-per-message-deflate",
            "false",
        ]
        servers = max(1, options["web_concurrency"])

        def celery_worker(*, queue: str, concurrency: int, hostname: str | None = None):
            named = ["--hostname", hostname] if hostname else []
            return [
                *(python, "-m", "celery", "-A", "config", "worker", "--loglevel", "INFO"),
                *("--queues", queue, *named, "--concurrency", str(concurrency)),
                *("--without-gossip", "--without-mingle"),
            ]

        return {
            **{f"server-{n}": server for n in range(1, servers + 1)},
            # A worker per job lane (settings.JOB_LANE_QUEUES): a lane's backlog never
            # takes another lane's slots, so a payment never waits behind reports.
            "worker": celery_worker(
                queue=settings.JOB_LANE_QUEUES["interactive"], concurrency=options["concurrency"]
            ),
            **{
                f"{lane}-worker": celery_worker(
                    queue=queue,
                    concurrency=settings.JOB_LANE_SLOTS[lane],
                    hostname=f"{lane}@%h",
                )
                for lane, queue in settings.JOB_LANE_QUEUES.items()
                if lane != "interactive"
            },
            # Webhook deliveries wait on other people's servers: a worker of their own, so
            # that a slow receiver holds no job's worker.
            "webhooks-worker": celery_worker(
                queue=settings.WEBHOOK_QUEUE,
                concurrency=settings.WEBHOOK_WORKER_CONCURRENCY,
                hostname="webhooks@%h",
            ),
            "beat": [
                python,
                "-m",
                "celery",
                "-A",
                "config",
                "beat",
                "--loglevel",
                "INFO",
                "--schedule",
                str(settings.VAR_DIR / "celerybeat-schedule"),
            ],
        }

    def _supervise(self, children: list["Child"]) -> None:
        """Until SIGINT or SIGTERM: restart any child that exits, after a growing delay."""
        stop = {"now": False}

        def request_stop(signum, frame):
            stop["now"] = True

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)
        while not stop["now"]:
            for child in children:
                if stop["now"]:
                    break
                if child.process is not None and child.process.poll() is None:
                    continue
                if child.restart_at is None:
                    delay = child.exited()
                    logger.warning(
                        "runstack.child_exited",
                        extra={
                            "child": child.name,
                            "code": child.returncode,
                            "restart_in": delay,
                            "restarts": child.restarts,
                        },
                    )
                    self.stderr.write(
                        f"{child.name} exited with code {child.returncode}; "
                        f"restarting it in {delay:.0f}s"
                    )
                elif time.monotonic() >= child.restart_at:
                    try:
                        child.restart()
                    except (OSError, RuntimeError) as error:
                        self.stderr.write(f"{child.name} did not start again: {error}")
                    else:
                        logger.info(
                            "runstack.child_restarted",
                            extra={"child": child.name, "restarts": child.restarts},
                        )
            time.sleep(0.5)

    def _stop(self, children: list["Child"]) -> None:
        # Beat, worker and server first, Redis last, so nothing loses its broker mid-shutdown.
        deadline = time.monotonic() + 15
        for child in reversed(children):
            process = child.process
            if process is None:
                continue
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.stderr.write(f"{child.name} did not stop in time; killing it")
                process.kill()


def _listening_socket(host: str, port: int) -> socket.socket:
    """The port every server process accepts on, held open by the supervisor for its life."""
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as error:
        listener.close()
        raise CommandError(f"Cannot listen on {host}:{port} (PORT): {error}") from None
    listener.listen(2048)
    listener.set_inheritable(True)
    return listener


@dataclass
class Child:
    """A supervised process: how to start it, and its restarts so far.

    The delay before a restart doubles with each quick exit (1 s up to RESTART_DELAY_MAX),
    and starts over once the child has run for RESTART_STABLE_AFTER seconds.
    """

    name: str
    start: Callable[[], subprocess.Popen]
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    restarts: int = 0
    restart_at: float | None = None
    returncode: int | None = None

    @classmethod
    def started(cls, name: str, start: Callable[[], subprocess.Popen]) -> "Child":
        return cls(name, start, process=start(), started_at=time.monotonic())

    def exited(self) -> float:
        """Note the exit and schedule the restart; returns its delay in seconds."""
        self.returncode = self.process.returncode if self.process is not None else None
        self.process = None
        if time.monotonic() - self.started_at >= RESTART_STABLE_AFTER:
            self.restarts = 0
        delay = min(RESTART_DELAY_MAX, 2.0**self.restarts)
        self.restart_at = time.monotonic() + delay
        return delay

    def restart(self) -> None:
        self.restarts += 1
        self.restart_at = None
        self.started_at = time.monotonic()
        self.process = self.start()


RESTART_DELAY_MAX = 30.0
RESTART_STABLE_AFTER = 60.0


def check_services() -> None:
    """Stop with one clear line when a configured service cannot be reached."""
    db = settings.DATABASES["default"]
    try:
        if connection.vendor == "postgresql":
            # One direct connection: the pool would retry in the background for its
            # whole timeout, logging each refusal, before giving up.
            import psycopg

            psycopg.connect(**connection.get_connection_params(), connect_timeout=5).close()
        else:
            connection.ensure_connection()
    except Exception as error:  # noqa: BLE001  (any driver error means the same to the user)
        where = db.get("HOST") or db.get("NAME")
        raise CommandError(
            f"Cannot reach the database at {where} (DATABASE_URL): {str(error).strip().splitlines()[0]}"
        ) from None
    from domains.infra.redis import sync_client

    try:
        sync_client().ping()
    except Exception as error:  # noqa: BLE001
        raise CommandError(
            f"Cannot reach Redis at {settings.REDIS_URL} (REDIS_URL): {error}"
        ) from None
