"""The cost of the lease renewal per progress event, against the same path without it.

The emitter is the workers' JobReporter on a claimed job, in this process. "On" is how a
task reports: inside `lease_kept` (its renewal thread, here woken every second) with each
row write renewing the lease; "off" is the same path with neither (the thread not
started, the lease column left out of the row writes). The two alternate, round after
round, in the same run, and the figure is the ratio of the medians per event, for two
paths: a worker's usual one (every event published, the row written at its bounded
rate) and the worst case (every event also writes the row, so every event renews).

    .venv/bin/python bench/lease.py [--events 2000] [--rounds 7] [--lease 3]
"""

import argparse
import contextlib
import os
import sys
import time
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

parser = argparse.ArgumentParser()
parser.add_argument("--events", type=int, default=2000)
parser.add_argument("--rounds", type=int, default=7)
parser.add_argument("--lease", type=int, default=3, help="seconds; renewal checked every third")
args = parser.parse_args()
os.environ["JOB_LEASE_SECONDS"] = str(args.lease)

from django.db.models import QuerySet  # noqa: E402

from bench import harness  # noqa: E402  (sets Django up)
from domains.jobs.attempts import job_attempt_start  # noqa: E402
from domains.jobs.models import JobKind  # noqa: E402
from domains.jobs.services import job_create  # noqa: E402
from workers.base import lease_kept  # noqa: E402

_update = QuerySet.update


def _update_without_lease(self, **fields):
    fields.pop("lease_expires_at", None)
    return _update(self, **fields)


@contextlib.contextmanager
def _lease(on: bool, job_id: int):
    if on:
        with lease_kept(job_id):
            yield
    else:
        with mock.patch.object(QuerySet, "update", _update_without_lease):
            yield


def _per_event(on: bool, force: bool) -> float:
    """Seconds per progress event, over one round of `args.events` events on a new job."""
    job = job_create(kind=JobKind.SALES_REPORT, owner=None)
    _, reporter = job_attempt_start(job_id=job.pk)
    reporter.started()
    with _lease(on, job.pk):
        began = time.perf_counter()
        for k in range(1, args.events + 1):
            # One percent a step: every event is published.
            reporter.progress(progress=k / 100, force=force)
        return (time.perf_counter() - began) / args.events


def main() -> None:
    print(
        f"lease renewal per progress event (us): on vs off, {args.events} events x "
        f"{args.rounds} rounds each, lease {args.lease}s"
    )
    for label, force in (
        ("published, row at its rate", False),
        ("every event writes the row", True),
    ):
        times: dict[bool, list[float]] = {True: [], False: []}
        _per_event(True, force)  # warm-up: connections, scripts, the first queries
        for _ in range(args.rounds):
            for on in (False, True):
                times[on].append(_per_event(on, force))
        print(
            harness.row(
                label, harness.median(times[True]) * 1e6, harness.median(times[False]) * 1e6, "us"
            )
        )


if __name__ == "__main__":
    main()
