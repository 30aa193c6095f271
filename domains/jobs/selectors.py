import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import Count, QuerySet
from django.db.models.functions import TruncMinute
from redis import RedisError

from domains.accounts.models import User
from domains.accounts.viewers import job_scope
from domains.infra.redis import sync_client
from domains.jobs.events import decode, event_from_job, is_terminal, log_key
from domains.jobs.models import Job


def job_list(*, viewer: User) -> QuerySet[Job]:
    """The viewer's own jobs; staff see every job; a job token its one job."""
    scoped = job_scope(viewer)
    if scoped is not None:
        return Job.objects.filter(pk=scoped)
    if not viewer.is_authenticated:
        return Job.objects.none()
    if viewer.is_staff:
        return Job.objects.all()
    return Job.objects.filter(owner=viewer)


def job_event_log(*, job: Job) -> list[dict[str, Any]]:
    """A job's timeline: every event of its log in Redis (the one afterSeq replays), then
    the row's state where the row is ahead of the log (the log expired or missed the end)."""
    try:
        events = [decode(fields["e"]) for _, fields in sync_client().xrange(log_key(job.pk))]
    except RedisError:
        events = []
    if not events:
        return [event_from_job(job)]
    last = events[-1]
    if job.seq <= last["seq"] and (is_terminal(last) or not job.is_terminal):
        return events
    row = event_from_job(job)
    row["seq"] = max(row["seq"], last["seq"] + 1)
    return [*events, row]


@dataclass(frozen=True)
class JobMinuteCount:
    minute: datetime
    status: str
    count: int


@dataclass(frozen=True)
class JobKindDuration:
    kind: str
    count: int
    p50: float  # seconds, from started to finished
    p95: float


@dataclass(frozen=True)
class JobStats:
    since: datetime
    per_minute: list[JobMinuteCount]
    durations: list[JobKindDuration]


def _nearest_rank(ordered: list[float], fraction: float) -> float:
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def job_stats(*, viewer: User, since: datetime) -> JobStats:
    """The viewer's jobs (staff: all) since `since`: how many were created each minute, by
    their status now, and the p50/p95 run time by kind of those that finished since then
    (nearest rank, so every figure is one job's real duration). Two queries."""
    jobs = job_list(viewer=viewer)
    per_minute = [
        JobMinuteCount(minute=row["minute"], status=row["status"], count=row["count"])
        for row in jobs.filter(created_at__gte=since)
        .annotate(minute=TruncMinute("created_at"))
        .values("minute", "status")
        .annotate(count=Count("pk"))
        .order_by("minute", "status")
    ]
    by_kind: dict[str, list[float]] = {}
    finished = jobs.filter(finished_at__gte=since, started_at__isnull=False).values_list(
        "kind", "started_at", "finished_at"
    )
    for kind, started, ended in finished.order_by().iterator():
        by_kind.setdefault(kind, []).append(max(0.0, (ended - started).total_seconds()))
    durations = []
    for kind, seconds in sorted(by_kind.items()):
        seconds.sort()
        durations.append(
            JobKindDuration(
                kind=kind,
                count=len(seconds),
                p50=_nearest_rank(seconds, 0.5),
                p95=_nearest_rank(seconds, 0.95),
            )
        )
    return JobStats(since=since, per_minute=per_minute, durations=durations)
