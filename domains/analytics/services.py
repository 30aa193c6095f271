"""Analytics: order metrics per user, computed in chunks in parallel, then aggregated.

A snapshot is cut at `as_of`; each chunk is a range of user ids whose per-user figures
come from one GROUP BY, reduced to a partial; the partials add up to the snapshot.
"""

import logging
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Max, Min, Sum
from django.utils import timezone

from domains.accounts.models import User
from domains.accounts.permissions import staff_required
from domains.analytics.models import MetricsSnapshot, SnapshotStatus
from domains.infra.pacing import Pace
from domains.jobs.models import Job, JobKind
from domains.jobs.parts import job_part_done
from domains.jobs.reporter import JobReporter
from domains.jobs.retry import RetryOptions
from domains.jobs.services import job_create, job_dispatch
from domains.jobs.tasks import JobTaskName
from domains.orders.models import Order, OrderStatus

logger = logging.getLogger(__name__)

CENT = Decimal("0.01")


def metrics_snapshot_generate(*, viewer: User) -> MetricsSnapshot:
    staff_required(viewer)
    with transaction.atomic(durable=True):
        job = job_create(kind=JobKind.METRICS_SNAPSHOT, owner=viewer)
        snapshot = MetricsSnapshot.objects.create(
            requested_by=viewer, as_of=timezone.now(), job=job
        )
        job_dispatch(job=job, task_name=JobTaskName.ANALYTICS_SNAPSHOT, snapshot_id=snapshot.pk)
    logger.info("metrics.requested", extra={"snapshot_id": snapshot.pk, "job_id": job.pk})
    return snapshot


def user_id_ranges(*, chunk_size: int | None = None) -> tuple[list[tuple[int, int]], int]:
    """Ranges of user ids, `chunk_size` ids wide, covering every user; and the user count."""
    chunk_size = chunk_size or settings.METRICS_CHUNK_USERS
    bounds = User.objects.aggregate(first=Min("pk"), last=Max("pk"), count=Count("pk"))
    if not bounds["count"]:
        return [], 0
    ranges = [
        (start, min(start + chunk_size - 1, bounds["last"]))
        for start in range(bounds["first"], bounds["last"] + 1, chunk_size)
    ]
    return ranges, bounds["count"]


def user_metrics_chunk(*, snapshot: MetricsSnapshot, first_id: int, last_id: int) -> dict:
    """Per-user order figures for users first_id..last_id, reduced to a JSON partial.

    One statement: the orders grouped per user, and the groups reduced in the database,
    so that a chunk of thousands of users sends one row back, not one per user. Held to
    METRICS_MAX_USERS_PER_SECOND.
    """
    pace = Pace(settings.METRICS_MAX_USERS_PER_SECOND)
    per_user = (
        Order.objects.filter(
            customer_id__gte=first_id,
            customer_id__lte=last_id,
            status=OrderStatus.CONFIRMED,
            created_at__lt=snapshot.as_of,
        )
        .order_by()
        .values("customer_id")
        .annotate(orders=Count("pk"), revenue=Sum("total_amount"))
    )
    sql, params = per_user.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT COUNT(*), SUM(orders), SUM(revenue), MAX(revenue) FROM ({sql}) AS per_user",
            params,
        )
        active, orders, revenue, top = cursor.fetchone()
    users = User.objects.filter(pk__gte=first_id, pk__lte=last_id).count()
    pace.wait(users)
    return {
        "users": users,
        "activeUsers": active,
        "orders": int(orders or 0),
        "revenue": str(_money(revenue)),
        "maxUserRevenue": str(_money(top)),
    }


def _money(value) -> Decimal:
    """A sum from the database, in cents (SQLite adds decimals up as floats)."""
    return Decimal(str(value or 0)).quantize(CENT)


def metrics_progress_add(
    *, snapshot: MetricsSnapshot, part_id: str, users: int, total: int, reporter: JobReporter
) -> None:
    """Count a chunk's users as done, across every worker, and report the running total."""
    done = job_part_done(job_id=snapshot.job_id, part_id=part_id, units=users)
    reporter.progress(stage="computing", current=done, total=total)


def metrics_snapshot_complete(
    *, snapshot: MetricsSnapshot, partials: Iterable[Mapping[str, Any]]
) -> MetricsSnapshot:
    """Add the partials up into the snapshot (once: only a pending snapshot is written)."""
    users = active = orders = 0
    revenue = top = Decimal(0)
    for partial in partials:
        users += partial["users"]
        active += partial["activeUsers"]
        orders += partial["orders"]
        revenue += Decimal(partial["revenue"])
        top = max(top, Decimal(partial["maxUserRevenue"]))
    # Completed with its job, in the transaction that ends it (job_end).
    MetricsSnapshot.objects.filter(pk=snapshot.pk, status=SnapshotStatus.PENDING).update(
        user_count=users,
        active_user_count=active,
        order_count=orders,
        revenue=revenue,
        max_user_revenue=top,
        average_order_value=(revenue / orders).quantize(CENT) if orders else Decimal(0),
        revenue_per_active_user=(revenue / active).quantize(CENT) if active else Decimal(0),
    )
    snapshot.refresh_from_db()
    logger.info("metrics.computed", extra={"snapshot_id": snapshot.pk, "users": users})
    return snapshot


def metrics_snapshot_job_retry(original: Job, retry: Job, options: RetryOptions) -> None:
    """A new snapshot as of now: figures are of the moment they are taken."""
    snapshot = MetricsSnapshot.objects.get(job=original)
    again = MetricsSnapshot.objects.create(
        requested_by=snapshot.requested_by, as_of=timezone.now(), job=retry
    )
    job_dispatch(job=retry, task_name=JobTaskName.ANALYTICS_SNAPSHOT, snapshot_id=again.pk)


def metrics_snapshot_summary(snapshot: MetricsSnapshot) -> dict[str, Any]:
    """The job's result: the snapshot's figures as JSON."""
    return {
        "snapshotId": snapshot.pk,
        "userCount": snapshot.user_count,
        "activeUserCount": snapshot.active_user_count,
        "orderCount": snapshot.order_count,
        "revenue": str(snapshot.revenue),
    }
