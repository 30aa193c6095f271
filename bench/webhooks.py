"""Webhooks on the stack: a job's end to its first attempt, and none lost.

1. Latency: jobs end one at a time (the one end transition, in this process); the figure
   is the time from just before the end's commit to the request reaching a receiver on
   loopback (through the `webhooks` queue and a real worker), against the floor of a bare
   POST to the same receiver from this process. Target: p50 <= 1 s.
2. Reliability: `--jobs` job ends (1,000 for the target; small by default, the machine is
   shared) with a receiver that refuses every message's first attempt. A third of the way
   in the whole worker (main process and pool) is SIGKILLed and another started; two
   thirds in the Redis server (broker and all) is SIGKILLed and started again on its data.
   Every message must be taken, each by its webhook-id, none lost (the sweep on beat sends
   what the broker lost). Printed: messages taken, repeats of a taken message (which a
   receiver drops by its webhook-id), and the time until the last was taken.

    .venv/bin/python bench/webhooks.py [--runs 30] [--jobs 60]
"""

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

parser = argparse.ArgumentParser()
parser.add_argument("--runs", type=int, default=30, help="job ends timed one at a time")
parser.add_argument("--jobs", type=int, default=60, help="job ends of the reliability run")
parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for all")
args = parser.parse_args()
# Retries and the sweep on a bench's time scale: a retry 2 s after a refusal, a sweep every
# 2 s, a lost message sent again 10 s after it was due, a dead attempt's claim lapsing after
# 20 s (its 3 s timeouts are long past by then).
ENV = {
    "WEBHOOK_RETRY_DELAYS": "2,2,2,2,2,2,2,2",
    "WEBHOOK_SWEEP_INTERVAL": "2",
    "WEBHOOK_SEND_GRACE_SECONDS": "10",
    "WEBHOOK_TIMEOUT": "3",
    "WEBHOOK_CLAIM_SECONDS": "20",
    "JOB_WATCHDOG_INTERVAL": "3600",  # nothing here for the watchdog to do
}
os.environ.update(ENV)

import urllib3  # noqa: E402

from bench import harness  # noqa: E402  (sets Django up)
from config import embedded_redis  # noqa: E402
from domains.jobs.ending import job_end  # noqa: E402
from domains.jobs.models import Job, JobKind, JobStatus  # noqa: E402
from domains.jobs.services import job_create  # noqa: E402
from domains.webhooks.models import WebhookDelivery  # noqa: E402
from domains.webhooks.services import job_global_id, webhook_endpoint_create  # noqa: E402
from testbed.factories import make_user  # noqa: E402
from testbed.stack import Process, process_env, start_worker  # noqa: E402
from testbed.webhooks import Receiver, refusing_first  # noqa: E402


def _wait(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.01)
    return value


def _end_a_job(owner) -> tuple[int, float]:
    job = job_create(kind=JobKind.PRODUCT_SYNC, owner=owner)
    Job.objects.filter(pk=job.pk).update(status=JobStatus.STARTED)
    before = time.time()
    job_end(job_id=job.pk, status=JobStatus.SUCCESS, result={"bench": True})
    return job.pk, before


def _first_arrival(receiver: Receiver, job_id: int) -> float:
    wanted = job_global_id(job_id)
    for arrival in list(receiver.arrivals):
        if json.loads(arrival.body)["data"]["job"]["id"] == wanted:
            return arrival.at
    return 0.0


def _kill_whole(process: Process) -> None:
    main = psutil.Process(process.pid)
    for child in [*main.children(recursive=True), main]:
        child.send_signal(signal.SIGKILL)
    process.popen.wait()


def latency(owner) -> None:
    receiver = Receiver()
    webhook_endpoint_create(viewer=owner, url=receiver.url, events=["JOB_SUCCEEDED"])
    try:
        ours = []
        for _ in range(3 + args.runs):  # the first three warm the worker up
            job_id, before = _end_a_job(owner)
            arrived = _wait(lambda j=job_id: _first_arrival(receiver, j), 60, "a delivery")
            ours.append(arrived - before)
        ours = ours[3:]
        http = urllib3.PoolManager(retries=False)
        floor = []
        for _ in range(args.runs):
            before = time.time()
            http.request("POST", receiver.url, body=b"{}", headers={"webhook-id": "floor"})
            floor.append(time.time() - before)
    finally:
        receiver.close()
        WebhookDelivery.objects.all().delete()
        owner.webhook_endpoints.all().delete()
    print(f"webhooks: a job's end to its first attempt, {args.runs} ends one at a time")
    print(harness.row("end -> first attempt p50", harness.median(ours), harness.median(floor), "s"))
    print(
        harness.row(
            "end -> first attempt p95",
            harness.percentile(ours, 0.95),
            harness.percentile(floor, 0.95),
            "s",
        )
    )
    print(f"  target p50 <= 1 s: {'met' if harness.median(ours) <= 1 else 'NOT met'}")


def reliability(owner, worker: Process) -> Process:
    receiver = Receiver(answer=refusing_first(1))
    webhook_endpoint_create(viewer=owner, url=receiver.url, events=["JOB_SUCCEEDED"])
    redis_port = int(os.environ["REDIS_URL"].rsplit(":", 1)[1].split("/")[0])
    can_restart_redis = harness.__dict__.get("_redis") is not None
    started = time.monotonic()
    try:
        for n in range(args.jobs):
            if n == args.jobs // 3:
                _kill_whole(worker)
                worker = start_worker("bench-webhooks-2", **ENV)
                print(f"  after {n} ends: the worker SIGKILLed, another started")
            if n == 2 * args.jobs // 3 and can_restart_redis:
                harness._redis.kill()
                harness._redis.wait()
                harness._redis = embedded_redis.start(redis_port, harness.RUN_DIR / "redis")
                print(f"  after {n} ends: Redis SIGKILLed and started again on its data")
            _end_a_job(owner)
        if not can_restart_redis:
            print("  (REDIS_URL was given: Redis was not restarted)")
        expected = set(WebhookDelivery.objects.values_list("webhook_id", flat=True))
        assert len(expected) == args.jobs, (len(expected), args.jobs)
        _wait(lambda: expected <= set(receiver.taken), args.timeout, "every message taken")
        elapsed = time.monotonic() - started
        time.sleep(5)  # repeats still in flight arrive
        repeats = sum(count - 1 for count in receiver.taken.values())
        statuses = set(WebhookDelivery.objects.values_list("status", flat=True))
    finally:
        receiver.close()
    print(
        f"webhooks: {args.jobs} job ends, every first attempt refused, a worker SIGKILL and a Redis restart"
    )
    print(
        f"  messages taken {len(expected & set(receiver.taken))} of {args.jobs}, "
        f"lost {len(expected - set(receiver.taken))}, deliveries {sorted(statuses)}"
    )
    print(f"  repeats of a taken message (dropped by webhook-id): {repeats}")
    print(f"  requests in all {len(receiver.arrivals)}; the last taken after {elapsed:.1f} s")
    return worker


def main() -> None:
    owner = make_user()
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
    worker = start_worker("bench-webhooks-1", **ENV)
    try:
        latency(owner)
        worker = reliability(owner, worker)
    finally:
        worker.stop()
        beat.stop()


if __name__ == "__main__":
    main()
