"""How long an orphaned job waits for the watchdog, against its floor, in the same run.

A report runs on a real worker; the whole worker (main process and pool) is SIGKILLed
mid-report, so its message stays unacknowledged in Redis (the broker would hand it out
again only after the visibility timeout, over half an hour) and nothing renews the job's
lease. A new worker and beat are started; the figure is the time from the kill until the
watchdog has sent the job again (a new attempt starts) and until the job ends. The floor
is the lease itself: nothing may be revived while its lease holds.

    .venv/bin/python bench/watchdog.py [--runs 5] [--lease 6] [--interval 2]
"""

import argparse
import os
import signal
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

parser = argparse.ArgumentParser()
parser.add_argument("--runs", type=int, default=5)
parser.add_argument("--lease", type=int, default=6)
parser.add_argument("--interval", type=float, default=2)
args = parser.parse_args()
os.environ["JOB_LEASE_SECONDS"] = str(args.lease)
os.environ["JOB_WATCHDOG_INTERVAL"] = str(args.interval)
os.environ["REPORT_MAX_ROWS_PER_SECOND"] = "1000"

from django.utils import timezone  # noqa: E402

from bench import harness  # noqa: E402  (sets Django up)
from domains.jobs.models import TERMINAL_STATUSES, Job, JobStatus  # noqa: E402
from domains.reports.services import sales_report_generate  # noqa: E402
from testbed.factories import (  # noqa: E402
    make_category,
    make_product,
    make_sales_lines,
    make_user,
)
from testbed.stack import Process, process_env, start_worker  # noqa: E402

ENV = {k: os.environ[k] for k in ("JOB_LEASE_SECONDS", "JOB_WATCHDOG_INTERVAL")}
ENV["REPORT_MAX_ROWS_PER_SECOND"] = os.environ["REPORT_MAX_ROWS_PER_SECOND"]


def _wait(condition, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        time.sleep(0.02)
    return value


def _kill_whole_worker(worker: Process) -> None:
    main = psutil.Process(worker.pid)
    for process in [*main.children(recursive=True), main]:
        process.send_signal(signal.SIGKILL)
    worker.popen.wait()


def _orphan_and_recover(job_id: int, worker: Process, name: str) -> tuple[Process, tuple]:
    """Kill the worker mid-job, start another; seconds from the kill to revived, ended."""
    _wait(lambda: Job.objects.get(pk=job_id).status == JobStatus.PROGRESS)
    _kill_whole_worker(worker)
    killed = time.monotonic()
    worker = start_worker(name, **ENV)
    _wait(lambda: Job.objects.get(pk=job_id).attempts >= 2)
    revived = time.monotonic() - killed
    job = _wait(lambda: (j := Job.objects.get(pk=job_id)).status in TERMINAL_STATUSES and j)
    assert job.status == JobStatus.SUCCESS, (job.status, job.error)
    return worker, (revived, time.monotonic() - killed)


def main() -> None:
    user = make_user()
    make_sales_lines(customer=user, products=[make_product(category=make_category())], orders=8000)
    today = timezone.now().date()
    beat = Process(
        "bench-beat",
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "beat",
            "--schedule",
            str(harness.RUN_DIR / "beat-schedule"),
        ],
        process_env(**ENV),
    )
    revived, ended = [], []
    worker = start_worker("bench-worker-0", **ENV)
    try:
        for run in range(args.runs):
            job_id = sales_report_generate(viewer=user, start_date=today, end_date=today).job_id
            worker, times = _orphan_and_recover(job_id, worker, f"bench-worker-{run + 1}")
            revived.append(times[0])
            ended.append(times[1])
    finally:
        worker.stop()
        beat.stop()
    print(
        f"watchdog: {args.runs} orphaned reports, lease {args.lease} s, sweep every "
        f"{args.interval} s"
    )
    for label, values in (("kill -> revived", revived), ("kill -> ended", ended)):
        print(harness.row(f"{label} p50", harness.median(values), args.lease, "s"))
        print(harness.row(f"{label} max", max(values), args.lease + args.interval, "s"))


if __name__ == "__main__":
    main()
