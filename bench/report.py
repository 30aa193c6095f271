"""The sales report export against a bare COPY of the same query, on PostgreSQL.

Loads 1,000,000 order lines (once per database), then in the same run:
- throughput: the report task's export (count, COPY to a spool file, then into Django
  storage, with progress) against a bare `COPY (same query) TO STDOUT CSV` into a file;
- peak memory: the export run in a fresh process over ~10,000 rows and over 1,000,000.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/jobstream_bench .venv/bin/python bench/report.py
(DATABASE_URL defaults to that database, created when missing.)
"""

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/jobstream_bench")
os.environ["REPORT_MAX_ROWS_PER_SECOND"] = "0"


def _ensure_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as admin:
        if not admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            admin.execute(f'CREATE DATABASE "{name}"')


_ensure_database(os.environ["DATABASE_URL"])

from django.db import connection, transaction  # noqa: E402

from bench import harness  # noqa: E402  (sets Django up)
from domains.accounts.models import User  # noqa: E402
from domains.catalog.models import Category, Product  # noqa: E402
from domains.jobs.attempts import job_attempt_start  # noqa: E402
from domains.jobs.models import JobKind  # noqa: E402
from domains.jobs.services import job_create  # noqa: E402
from domains.orders.models import Order, OrderItem  # noqa: E402
from domains.reports.models import Report  # noqa: E402
from domains.reports.services import sales_lines, sales_report_export  # noqa: E402

LINES = 1_000_000
PER_ORDER = 4
YEAR = (2025, 2025)  # every generated order falls in 2025


@transaction.atomic
def _load() -> None:
    if OrderItem.objects.count() >= LINES:
        return
    print(f"loading {LINES:,} order lines ...", flush=True)
    categories = Category.objects.bulk_create(
        Category(name=f"Bench {i}", slug=f"bench-{i}") for i in range(10)
    )
    Product.objects.bulk_create(
        Product(
            sku=f"BENCH-{i:05d}",
            name=f"Bench product {i}",
            price=10 + i % 90,
            category=categories[i % 10],
        )
        for i in range(1000)
    )
    User.objects.bulk_create(User(email=f"bench{i}@example.com", password="!") for i in range(1000))
    orders, items = Order._meta.db_table, OrderItem._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {orders} (number, customer_id, status, payment_status, total_amount,
                                  currency, region, error_message, created_at, updated_at)
            SELECT 'B' || n, (SELECT min(id) FROM {User._meta.db_table}) + n %% 1000, 'confirmed',
                   'paid', 100, 'USD', (ARRAY['north','south','east','west'])[1 + n %% 4], '',
                   timestamp '2025-01-01' + (n %% 364) * interval '1 day' + (n %% 86400) * interval '1 second',
                   now()
            FROM generate_series(1, %s) AS n
            """,
            [LINES // PER_ORDER],
        )
        cursor.execute(
            f"""
            INSERT INTO {items} (order_id, product_id, quantity, unit_price)
            SELECT o.id, (SELECT min(id) FROM {Product._meta.db_table}) + (o.id * 7 + k) %% 1000,
                   1 + k, 9.99 + k
            FROM {orders} o CROSS JOIN generate_series(0, %s) AS k
            WHERE o.number LIKE 'B%%'
            """,
            [PER_ORDER - 1],
        )
        cursor.execute("ANALYZE")


def _report(start: str, end: str) -> Report:
    user = User.objects.filter(email__startswith="bench").first()
    job = job_create(kind=JobKind.SALES_REPORT, owner=user)
    return Report.objects.create(
        owner=user, report_type="sales", job=job, parameters={"startDate": start, "endDate": end}
    )


def _export(report: Report) -> tuple[float, int]:
    _, reporter = job_attempt_start(job_id=report.job_id)
    reporter.started()
    began = time.perf_counter()
    report = sales_report_export(report=report, reporter=reporter)
    return time.perf_counter() - began, report.row_count


def _bare_copy(report: Report) -> tuple[float, int]:
    sql, params = sales_lines(
        viewer=report.owner, parameters=report.parameters
    ).query.sql_with_params()
    began = time.perf_counter()
    with tempfile.TemporaryFile() as out, connection.cursor() as cursor:
        with cursor.cursor.copy(
            f"COPY ({sql}) TO STDOUT WITH (FORMAT csv, HEADER true)", params
        ) as copy:
            for block in copy:
                out.write(block)
        rows = cursor.cursor.rowcount
    return time.perf_counter() - began, rows


def _peak_memory_mb(start: str, end: str) -> tuple[float, int]:
    """Peak RSS of a fresh process exporting the report (so each size starts clean)."""
    report = _report(start, end)
    out = subprocess.run(
        [sys.executable, __file__, "--export", str(report.pk)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return float(out[-2]), int(out[-1])


def main() -> None:
    _load()
    full = ("2025-01-01", "2025-12-31")
    ours, rows = _export(_report(*full))
    bare, bare_rows = _bare_copy(_report(*full))
    assert rows == bare_rows, (rows, bare_rows)
    print(f"sales report, {rows:,} rows, PostgreSQL {connection.pg_version}")
    print(
        harness.row("throughput (rows/s, thousands)", rows / ours / 1000, rows / bare / 1000, "k/s")
    )
    small_mb, small_rows = _peak_memory_mb("2025-01-01", "2025-01-03")
    large_mb, large_rows = _peak_memory_mb(*full)
    print(harness.row(f"peak RSS {large_rows:,} vs {small_rows:,} rows", large_mb, small_mb, "MB"))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--export"]:
        _export(Report.objects.get(pk=int(sys.argv[2])))
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(peak, Report.objects.get(pk=int(sys.argv[2])).row_count)
    else:
        main()
