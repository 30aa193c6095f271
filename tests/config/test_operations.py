"""What an operator sees: health endpoints, and a clear line when a service is missing."""

import os
import subprocess
import sys

import httpx
import pytest
from django.conf import settings

from config.embedded_redis import free_port
from testbed.stack import database_url


def test_healthz_and_readyz_answer_with_a_worker_up(live):
    base = live.server.url

    assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{base}/readyz")
    assert ready.status_code == 200
    checks = ready.json()["checks"]
    assert checks["database"] == checks["redis"] == "ok"
    assert checks["workers"] in {f"{n} answering" for n in range(1, 5)}


@pytest.mark.parametrize(
    ("variable", "url", "says"),
    [
        ("DATABASE_URL", "postgres://nobody@127.0.0.1:{port}/none", "Cannot reach the database"),
        ("REDIS_URL", "redis://127.0.0.1:{port}/0", "Cannot reach Redis"),
    ],
)
def test_an_unreachable_service_stops_start_up_with_one_line(
    django_db_setup, tmp_path, variable, url, says
):
    # The other service is the suite's own, so that only the one under test is missing; its
    # own var/, so that the stack it starts clears nothing the suite's processes write.
    env = {
        **{k: v for k, v in os.environ.items() if k != "METRICS_DIR"},
        "VAR_DIR": str(tmp_path),
        "DATABASE_URL": database_url(),
        "REDIS_URL": settings.REDIS_URL,
        variable: url.format(port=free_port()),
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "runstack", "--no-seed"],
        env=env,
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert says in lines[0]
    assert variable in lines[0]
    assert "Traceback" not in result.stdout + result.stderr
