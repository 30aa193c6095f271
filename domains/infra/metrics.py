"""The service's Prometheus metrics, shared by every process (prometheus-client's
multiprocess mode: each process writes its own files under PROMETHEUS_MULTIPROC_DIR, set
by the settings before this is imported, and /metrics adds them up).

Jobs are counted where they start and end (job_attempt_start, job_end), so every path
(a task, a chord, a cancel, the watchdog) is counted once. What lives in Redis (queue
depth, breaker state) is read at scrape time by config.metrics.
"""

import asyncio
import atexit
import bisect
import os
from collections import Counter as Tally

from prometheus_client import Counter, Gauge, Histogram, multiprocess

JOB_DURATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, float("inf"))
DELIVERY_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

jobs_started = Counter(
    "jobstream_jobs_started", "Jobs whose first delivery a worker claimed.", ["kind"]
)
jobs_finished = Counter(
    "jobstream_jobs_finished", "Jobs that ended, by terminal status.", ["kind", "status"]
)
job_duration = Histogram(
    "jobstream_job_duration_seconds",
    "From a job's start (its creation, if it never started) to its end.",
    ["kind"],
    buckets=JOB_DURATION_BUCKETS,
)
job_wait = Histogram(
    "jobstream_job_wait_seconds",
    "From a job's creation to its admission by the dispatcher (its time waiting for a slot"
    " of its owner and its lane), by kind and lane.",
    ["kind", "lane"],
    buckets=JOB_DURATION_BUCKETS,
)
watchdog_actions = Counter(
    "jobstream_watchdog_actions", "What the watchdog did to stuck jobs.", ["action"]
)
webhook_deliveries = Counter(
    "jobstream_webhook_deliveries",
    "Webhook deliveries by status: created (with their job's end), then succeeded, or failed"
    " once its retries ran out.",
    ["status"],
)
webhook_attempts = Counter(
    "jobstream_webhook_attempts",
    "Webhook delivery attempts by outcome: success (2xx), http_error, network_error, refused"
    " (the target failed its check; nothing was sent).",
    ["outcome"],
)
purged_rows = Counter(
    "jobstream_purged_rows",
    "What the retention purge removed (domains/jobs/retention.py), by kind: jobs, event "
    "logs, reports, report files, thumbnails, image files, webhook deliveries, api tokens.",
    ["kind"],
)
open_sockets = Gauge(
    "jobstream_open_websockets",
    "Acknowledged GraphQL websockets, per server process.",
    multiprocess_mode="liveall",
)
open_subscriptions = Gauge(
    "jobstream_open_subscriptions",
    "Job event streams (websocket or SSE subscriptions), per server process.",
    multiprocess_mode="liveall",
)
subscription_frames = Counter(
    "jobstream_subscription_frames",
    "Subscription results worked out for an event its subscribers share (schema/frames.py):"
    " `executed` once per event and document, `framed` once per such result and the HTTP"
    " message it is sent as (an SSE event, a multipart part), however many subscribers;"
    " `written` once per subscriber the hub wrote a frame to itself (no task woken).",
    ["step"],
)


class LoopBatchedHistogram:
    """A histogram observed many times a moment on an event loop, written in batches.

    In multiprocess mode every observe takes a lock, a getpid system call and two writes to
    the process's mmap'd file; a delivery's lag is observed once per subscriber per event
    (a tenth of the server's time at 1,000 subscribers, bench/progress.py --profile). Here
    the observations of the next moment are counted per bucket and written together: the
    same figures, a scrape at most that moment late.
    """

    def __init__(self, histogram: Histogram, moment: float = 0.05):
        self._histogram = histogram
        self._moment = moment
        self._pending: list[tuple[float, int]] = []  # (amount, times observed)
        self._loop: asyncio.AbstractEventLoop | None = None  # the one whose timer writes

    def observe(self, amount: float, times: int = 1) -> None:
        """Observes `amount` (`times` times: the subscribers one write loop served)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop: nothing to batch on
            self._pending.append((amount, times))
            self.write()
            return
        if self._pending and loop is not self._loop:
            self.write()  # the batch of a loop that has gone (its timer will never fire)
        if not self._pending:
            self._loop = loop
            loop.call_later(self._moment, self.write)
        self._pending.append((amount, times))

    def write(self) -> None:
        pending, self._pending = self._pending, []
        if not pending:
            return
        histogram = self._histogram
        # (prometheus-client's own observe, for many amounts: its sum, and the first bucket
        # each amount fits in)
        histogram._sum.inc(sum(amount * times for amount, times in pending))
        per_bucket = Tally()
        for amount, times in pending:
            per_bucket[bisect.bisect_left(histogram._upper_bounds, amount)] += times
        for bucket, count in per_bucket.items():
            histogram._buckets[bucket].inc(count)


event_delivery_lag = LoopBatchedHistogram(
    Histogram(
        "jobstream_event_delivery_lag_seconds",
        "From a worker emitting a job event to the server handing it to a subscriber.",
        buckets=DELIVERY_LAG_BUCKETS,
    )
)


@atexit.register
def _forget_this_process() -> None:
    """A process that exits takes its live gauges with it (its counters stay counted)."""
    event_delivery_lag.write()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(os.getpid())
