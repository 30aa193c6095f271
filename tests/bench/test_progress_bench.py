"""bench/progress.py end to end at its smallest: one subscriber, a few events, and the table
a closing note pastes (the figures themselves are the bench's to judge, not a test's)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COLUMNS = [
    "subscribers",
    "target",
    "p50 ms",
    "p99 ms",
    "CPU/delivery us",
    "p50 vs relay",
    "p99 vs relay",
    "CPU vs relay",
    "received",
    "RSS/subscriber KB",
    "idle CPU ms/s per 1,000",
    "Redis conns/process",
    "busiest client process",
]
# The bench makes its own database, Redis and folders (bench/harness.py), none of this run's.
THIS_RUNS = (
    "REDIS_URL",
    "REDIS_CLUSTER_URL",
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "VAR_DIR",
    "MEDIA_ROOT",
    "REPORT_TMP_DIR",
    "METRICS_DIR",
    "DB_POOL_DISABLED",
)


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def run_bench(script: str, *args: str) -> subprocess.CompletedProcess:
    """A bench script run as a user runs it, on its own database and Redis."""
    env = {name: value for name, value in os.environ.items() if name not in THIS_RUNS}
    return subprocess.run(
        [sys.executable, script, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.mark.slow
def test_smallest_run_prints_the_table_for_a_closing_note():
    done = run_bench(
        "bench/progress.py", *("--counts", "1", "--processes", "1"), *("--seconds", "0.5")
    )

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert _cells(next(line for line in lines if line.startswith("| subscribers |"))) == COLUMNS
    rows = [_cells(line) for line in lines if line.startswith("| 1 over 1 job")]
    assert [row[1] for row in rows] == ["relay", "1 process"]
    relay, ours = rows
    assert relay[8] == ours[8] == "all"  # every event reached the subscriber
    assert relay[5:8] == ["", "", ""]  # the relay is the baseline
    assert all(ratio.endswith("x") for ratio in ours[5:8])
    assert ours[9] == ours[10] == ""  # memory and idle CPU are measured from 1,000 subscribers
    assert ours[11] in ("1", "2")  # Redis connections of the one server process
    assert "of a core, waited" in ours[12]  # the client's own CPU, and its wait for one
    assert ", 1 process" in ours[12]
