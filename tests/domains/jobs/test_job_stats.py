"""jobStats' aggregation, read without GraphQL: per-minute counts by status and run-time
percentiles by kind, scoped to the viewer, in a fixed number of queries."""

from datetime import timedelta

import pytest
from django.utils import timezone

from domains.jobs.models import Job, JobKind, JobStatus
from domains.jobs.selectors import JobKindDuration, job_stats

pytestmark = pytest.mark.django_db


def _job(owner, kind, status, *, minutes_ago: float, run_seconds: float | None = None) -> Job:
    created = timezone.now() - timedelta(minutes=minutes_ago)
    job = Job.objects.create(owner=owner, kind=kind, status=status)
    finished = created + timedelta(seconds=run_seconds) if run_seconds is not None else None
    # created_at is auto_now_add: set the history afterwards, as the rows would hold it.
    Job.objects.filter(pk=job.pk).update(
        created_at=created, started_at=created if finished else None, finished_at=finished
    )
    return job


def test_jobs_per_minute_by_status_and_percentiles_by_kind(user, django_assert_num_queries):
    for seconds in range(1, 21):  # 1..20 s
        _job(user, JobKind.SALES_REPORT, JobStatus.SUCCESS, minutes_ago=10, run_seconds=seconds)
    _job(user, JobKind.PAYMENT, JobStatus.FAILURE, minutes_ago=10, run_seconds=0.5)
    _job(user, JobKind.PAYMENT, JobStatus.PROGRESS, minutes_ago=5)
    _job(user, JobKind.PAYMENT, JobStatus.SUCCESS, minutes_ago=90, run_seconds=3)  # before

    since = timezone.now() - timedelta(hours=1)
    with django_assert_num_queries(2):
        stats = job_stats(viewer=user, since=since)

    counts = {(m.status, m.count) for m in stats.per_minute}
    assert counts == {("SUCCESS", 20), ("FAILURE", 1), ("PROGRESS", 1)}
    assert len({m.minute for m in stats.per_minute}) == 2
    assert all(
        m.minute.second == 0 and m.minute >= since - timedelta(minutes=1) for m in stats.per_minute
    )
    assert stats.durations == [
        JobKindDuration(kind="PAYMENT", count=1, p50=0.5, p95=0.5),
        JobKindDuration(kind="SALES_REPORT", count=20, p50=10.0, p95=19.0),
    ]


def test_an_ordinary_user_counts_only_their_own_jobs_and_staff_count_all(
    user, other_user, staff_user
):
    _job(user, JobKind.PAYMENT, JobStatus.SUCCESS, minutes_ago=2, run_seconds=1)
    _job(other_user, JobKind.SALES_REPORT, JobStatus.SUCCESS, minutes_ago=2, run_seconds=4)
    since = timezone.now() - timedelta(hours=1)

    own = job_stats(viewer=user, since=since)
    every = job_stats(viewer=staff_user, since=since)

    assert [(d.kind, d.count) for d in own.durations] == [("PAYMENT", 1)]
    assert sum(m.count for m in own.per_minute) == 1
    assert [(d.kind, d.count) for d in every.durations] == [("PAYMENT", 1), ("SALES_REPORT", 1)]
    assert sum(m.count for m in every.per_minute) == 2


def test_no_jobs_no_figures(user):
    stats = job_stats(viewer=user, since=timezone.now() - timedelta(hours=1))

    assert stats.per_minute == []
    assert stats.durations == []
