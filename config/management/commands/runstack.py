"""`manage.py runstack`: the whole service as one supervised group.

Checks the configured database and Redis (one clear line if one cannot be reached),
starts the embedded Redis when REDIS_URL is not set, migrates (and with DEBUG off collects
the static files), loads the demo data once, then runs the ASGI server, a Celery worker and
beat until Ctrl-C, which stops them all.
"""

import os
import signal
import subprocess
import sys
import time

from django.conf import settings
from django.core.management import BaseCommand, CommandError, call_command
from django.db import connection

from config import embedded_redis


class Command(BaseCommand):
    help = "Run the server, worker, beat (and embedded Redis) together; Ctrl-C stops all."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", 8000)))
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument(
            "--concurrency", type=int, default=int(os.environ.get("WORKER_CONCURRENCY", 2))
        )
        parser.add_argument("--no-seed", action="store_true", help="skip the demo data")

    def handle(self, *args, **options):
        children: list[tuple[str, subprocess.Popen]] = []
        try:
            if settings.EMBEDDED_REDIS:
                self.stdout.write(
                    f"Starting embedded Redis on 127.0.0.1:{settings.EMBEDDED_REDIS_PORT}"
                )
                children.append(
                    (
                        "redis",
                        embedded_redis.start(
                            settings.EMBEDDED_REDIS_PORT, settings.VAR_DIR / "redis"
                        ),
                    )
                )
            check_services()
            call_command("migrate", interactive=False, verbosity=0)
            if not settings.DEBUG:  # development serves static files from where they live
                call_command("collectstatic", interactive=False, verbosity=0)
            if not options["no_seed"]:
                call_command("seed_demo", only_if_empty=True)
            os.environ.setdefault("SANDBOX_BASE_URL", f"http://127.0.0.1:{options['port']}/sandbox")
            python = sys.executable
            commands = {
                "server": [
                    python,
                    "-m",
                    "uvicorn",
                    "config.asgi:application",
                    "--host",
                    options["host"],
                    "--port",
                    str(options["port"]),
                    "--no-access-log",
                    "--ws-ping-interval",
                    "20",
                ],
                "worker": [
                    python,
                    "-m",
                    "celery",
                    "-A",
                    "config",
                    "worker",
                    "--loglevel",
                    "INFO",
                    "--concurrency",
                    str(options["concurrency"]),
                    "--without-gossip",
                    "--without-mingle",
                ],
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
            for name, command in commands.items():
                children.append((name, subprocess.Popen(command, env=os.environ.copy())))
            url = f"http://{options['host']}:{options['port']}/graphql/"
            self.stdout.write(self.style.SUCCESS(f"\nGraphiQL: {url}"))
            self.stdout.write(
                "Demo login: demo@example.com / demo-password (staff: admin@example.com / admin-password)"
            )
            self.stdout.write("Ctrl-C stops everything.\n")
            self._supervise(children)
        finally:
            self._stop(children)

    def _supervise(self, children):
        stop = {"now": False}

        def request_stop(signum, frame):
            stop["now"] = True

        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)
        while not stop["now"]:
            for name, process in children:
                if process.poll() is not None:
                    raise CommandError(
                        f"{name} exited with code {process.returncode}; stopping the stack."
                    )
            time.sleep(0.5)

    def _stop(self, children):
        # Beat, worker and server first, Redis last, so nothing loses its broker mid-shutdown.
        for _name, process in reversed(children):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for name, process in reversed(children):
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.stderr.write(f"{name} did not stop in time; killing it")
                process.kill()


def check_services() -> None:
    """Stop with one clear line when a configured service cannot be reached."""
    db = settings.DATABASES["default"]
    try:
        connection.ensure_connection()
    except Exception as error:  # noqa: BLE001  (any driver error means the same to the user)
        where = db.get("HOST") or db.get("NAME")
        raise CommandError(
            f"Cannot reach the database at {where} (DATABASE_URL): {str(error).strip().splitlines()[0]}"
        ) from None
    from domains.redis import sync_client

    try:
        sync_client().ping()
    except Exception as error:  # noqa: BLE001
        raise CommandError(
            f"Cannot reach Redis at {settings.REDIS_URL} (REDIS_URL): {error}"
        ) from None
