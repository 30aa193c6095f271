"""A metrics snapshot adds up per-user figures computed in parallel chunks; its totals are
what one SQL aggregate over the same orders says."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db.models import Count, Max, Sum
from django.utils import timezone

from domains.accounts.models import User
from domains.analytics.models import MetricsSnapshot, SnapshotStatus
from domains.analytics.services import (
    metrics_snapshot_complete,
    user_id_ranges,
    user_metrics_chunk,
)
from domains.infra.redis import sync_client
from domains.jobs.ending import job_end
from domains.jobs.models import JobKind, JobStatus
from domains.jobs.services import job_create
from domains.orders.models import Order, OrderStatus
from testbed.factories import make_order, make_product, make_user
from testbed.stack import kill_running
from testbed.waiting import job_finished
from tests.fixtures.redis import job_terminal_statuses

GENERATE = """
mutation { metricsSnapshotGenerate {
  metricsSnapshot { id status } job { id kind status } errors { code message } } }
"""
SNAPSHOTS = """
{ metricsSnapshots(first: 5) { totalCount edges { node {
  status userCount activeUserCount orderCount revenue maxUserRevenue averageOrderValue
  job { status current total result } } } } }
"""


def _shop(buyers: int = 9) -> None:
    """Buyers with a few orders each, plus orders that must not count."""
    cheap, dear = make_product(price="9.99"), make_product(price="120.00")
    for n in range(buyers):
        customer = make_user()
        for _ in range(n % 3 + 1):
            make_order(customer=customer, lines=[(cheap, n + 1), (dear, 1)])
        if n % 4 == 0:
            make_order(customer=customer, lines=[(dear, 5)], status=OrderStatus.FAILED)
    make_user()  # a user without orders still counts as a user


def _sql_truth(as_of) -> dict:
    confirmed = Order.objects.filter(status=OrderStatus.CONFIRMED, created_at__lt=as_of)
    totals = confirmed.aggregate(
        orders=Count("pk"), revenue=Sum("total_amount"), active=Count("customer", distinct=True)
    )
    top = (
        confirmed.values("customer")
        .annotate(spent=Sum("total_amount"))
        .aggregate(top=Max("spent"))["top"]
    )
    return {**totals, "top": top}


@pytest.mark.e2e
def test_snapshot_totals_equal_a_direct_sql_aggregate(live, staff_user):
    _shop()
    make_order(
        customer=make_user(),
        lines=[(make_product(price="1.00"), 1)],
        created_at=timezone.now() + timedelta(days=1),  # after the cut: not counted
    )
    client = live.client(staff_user)

    started = client.data(GENERATE)["metricsSnapshotGenerate"]
    assert started["errors"] == []
    snapshot = MetricsSnapshot.objects.get()
    job = job_finished(snapshot.job_id)

    assert job.status == "SUCCESS", job.error
    snapshot.refresh_from_db()
    truth = _sql_truth(snapshot.as_of)
    users = User.objects.count()
    assert snapshot.status == SnapshotStatus.COMPLETED
    assert (snapshot.order_count, snapshot.revenue, snapshot.active_user_count) == (
        truth["orders"],
        truth["revenue"],
        truth["active"],
    )
    assert snapshot.max_user_revenue == truth["top"]
    assert snapshot.user_count == users
    assert snapshot.average_order_value == (truth["revenue"] / truth["orders"]).quantize(
        Decimal("0.01")
    )
    assert (job.current, job.total) == (users, users)  # progress counted users done
    listed = client.data(SNAPSHOTS)["metricsSnapshots"]["edges"][0]["node"]
    assert (listed["orderCount"], Decimal(listed["revenue"])) == (truth["orders"], truth["revenue"])
    assert listed["job"]["result"]["snapshotId"] == snapshot.pk


@pytest.mark.e2e
def test_a_worker_killed_mid_chunk_ends_the_snapshot_once_and_no_chunk_loops(live, staff_user):
    _shop()
    live.client(staff_user).data(GENERATE)
    snapshot = MetricsSnapshot.objects.get()

    kill_running("analytics.user_metrics")
    job = job_finished(snapshot.job_id, timeout=120)

    snapshot.refresh_from_db()
    users = User.objects.count()
    redeliveries = [
        int(sync_client().get(key))
        for key in sync_client().scan_iter(f"job:{job.pk}:part:*:redeliveries")
    ]
    assert job_terminal_statuses(job.pk) == ["SUCCESS"], "ended once"
    assert (job.status, snapshot.status) == (JobStatus.SUCCESS, SnapshotStatus.COMPLETED)
    assert redeliveries == [1], "the killed chunk ran again once; nothing looped"
    # The killed chunk counted once, in the job's progress and in the snapshot's figures.
    assert snapshot.user_count == job.current == job.total == users
    assert (job.result["userCount"], job.result["orderCount"]) == (users, snapshot.order_count)
    assert snapshot.order_count == _sql_truth(snapshot.as_of)["orders"]
    assert live.worker.alive()


def test_chunks_cover_every_user_and_add_up_to_the_aggregate(transactional_db):
    _shop(buyers=11)
    snapshot = MetricsSnapshot.objects.create(as_of=timezone.now())

    ranges, users = user_id_ranges(chunk_size=3)
    partials = [
        user_metrics_chunk(snapshot=snapshot, first_id=first, last_id=last)
        for first, last in ranges
    ]
    snapshot = metrics_snapshot_complete(snapshot=snapshot, partials=partials)

    truth = _sql_truth(snapshot.as_of)
    assert len(ranges) == -(-users // 3)
    assert sum(p["users"] for p in partials) == snapshot.user_count == users
    assert (snapshot.order_count, snapshot.revenue, snapshot.max_user_revenue) == (
        truth["orders"],
        truth["revenue"],
        truth["top"],
    )


def test_a_completed_snapshot_is_not_rewritten(transactional_db):
    job = job_create(kind=JobKind.METRICS_SNAPSHOT, owner=None)
    snapshot = MetricsSnapshot.objects.create(as_of=timezone.now(), job=job)
    partial = {
        "users": 2,
        "activeUsers": 1,
        "orders": 3,
        "revenue": "30.00",
        "maxUserRevenue": "30.00",
    }
    metrics_snapshot_complete(snapshot=snapshot, partials=[partial])
    job_end(job_id=job.pk, status=JobStatus.SUCCESS)  # completes the snapshot with its job

    again = metrics_snapshot_complete(snapshot=snapshot, partials=[partial, partial])

    assert (again.order_count, again.revenue) == (3, Decimal("30.00"))
