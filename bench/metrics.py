"""Metrics snapshot over 100,000 users: wall time against one SQL GROUP BY.

Ours is the whole product path: metricsSnapshotGenerate's service commits the snapshot and
its Job, a real Celery worker (2 processes) runs the chord over chunks of users, and the
clock stops when the Job reaches SUCCESS (polled every 2 ms). One untimed warm-up run
first, as a running service is warm. The baseline, in the same run, is one query that
groups the same orders by user and aggregates the groups to the same numbers.

    .venv/bin/python bench/metrics.py [--users 100000] [--repeat 3]
"""

import argparse
import sys
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from django.conf import settings
from django.db import connection
from django.utils import timezone

from bench import harness
from domains.accounts.models import User
from domains.analytics.services import metrics_snapshot_generate
from domains.orders.models import Order, OrderStatus
from testbed.stack import start_worker
from testbed.waiting import job_finished

BATCH = 5_000


def _seed(users: int) -> int:
    """`users` users; user i has i % 4 orders, one in five of them not confirmed."""
    start = timezone.now() - timedelta(days=30)
    orders = 0
    for offset in range(0, users, BATCH):
        made = User.objects.bulk_create(
            [
                User(email=f"bench{i}@example.com", password="!")
                for i in range(offset, min(users, offset + BATCH))
            ]
        )
        batch = [
            Order(
                number=f"M-{user.pk}-{k}",
                customer=user,
                status=OrderStatus.FAILED if (user.pk + k) % 5 == 0 else OrderStatus.CONFIRMED,
                total_amount=f"{(user.pk * 7 + k * 13) % 500 + 0.99:.2f}",
                created_at=start + timedelta(minutes=user.pk % 40_000),
            )
            for user in made
            for k in range(user.pk % 4)
        ]
        Order.objects.bulk_create(batch, batch_size=BATCH)
        orders += len(batch)
    return orders


def _group_by(as_of) -> tuple[float, dict]:
    """The same figures from one statement: orders grouped by user, the groups aggregated."""
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT COUNT(*), SUM(orders), SUM(revenue), MAX(revenue),
                   (SELECT COUNT(*) FROM {User._meta.db_table})
            FROM (SELECT customer_id, COUNT(*) AS orders, SUM(total_amount) AS revenue
                  FROM {Order._meta.db_table}
                  WHERE status = %s AND created_at < %s
                  GROUP BY customer_id) AS per_user
            """,
            [OrderStatus.CONFIRMED, as_of],
        )
        active, orders, revenue, top, users = cursor.fetchone()
    elapsed = time.perf_counter() - started
    cent = Decimal("0.01")
    return elapsed, {
        "active": active,
        "orders": orders,
        "revenue": Decimal(revenue).quantize(cent),
        "top": Decimal(top).quantize(cent),
        "users": users,
    }


def _snapshot(staff: User) -> tuple[float, dict]:
    started = time.perf_counter()
    snapshot = metrics_snapshot_generate(viewer=staff)
    job = job_finished(snapshot.job_id, timeout=600, poll=0.002)
    elapsed = time.perf_counter() - started
    assert job.status == "SUCCESS", (job.status, job.error, job.result)
    snapshot.refresh_from_db()
    figures = {
        "active": snapshot.active_user_count,
        "orders": snapshot.order_count,
        "revenue": snapshot.revenue,
        "top": snapshot.max_user_revenue,
        "users": snapshot.user_count,
    }
    return elapsed, {**figures, "as_of": snapshot.as_of}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    seeded_at = time.perf_counter()
    orders = _seed(args.users)
    staff = User.objects.create_user("bench-staff@example.com", "x", is_staff=True)
    print(
        f"seeded {args.users:,} users, {orders:,} orders in {time.perf_counter() - seeded_at:.1f}s"
    )
    worker = start_worker("bench-metrics", concurrency=2, LOG_LEVEL="WARNING")
    ours, baseline = [], []
    try:
        _snapshot(staff)  # warm-up: worker processes import, connect, and page the tables in
        for _ in range(args.repeat):
            elapsed, figures = _snapshot(staff)
            ours.append(elapsed)
            as_of = figures.pop("as_of")
            sql_elapsed, truth = _group_by(as_of)
            baseline.append(sql_elapsed)
            assert figures == truth, (figures, truth)
    finally:
        worker.stop()
    engine = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    chunks = -(-(args.users + 1) // settings.METRICS_CHUNK_USERS)
    print(
        f"Metrics snapshot over {args.users + 1:,} users ({engine}, {chunks} chunks of "
        f"{settings.METRICS_CHUNK_USERS:,} users, worker concurrency 2, median of {args.repeat}):"
    )
    print(
        harness.row("wall time", harness.median(ours) * 1000, harness.median(baseline) * 1000, "ms")
    )
    print("  (ratio = snapshot via chord / one SQL GROUP BY; target <= 5x; totals checked equal)")


if __name__ == "__main__":
    main()
