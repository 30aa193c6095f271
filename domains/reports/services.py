"""Reports: starting a sales report, and writing its CSV with memory flat in the rows."""

import csv
import io
import logging
import tempfile
from collections.abc import Sequence
from contextlib import suppress
from datetime import date, datetime, time, timedelta
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from django.db.models import (
    Case,
    CharField,
    DecimalField,
    ExpressionWrapper,
    F,
    QuerySet,
    Value,
    When,
)
from django.db.models.functions import Concat, Left
from django.db.models.lookups import In
from django.urls import reverse
from django.utils import timezone

from domains.accounts.models import User
from domains.catalog.models import Category
from domains.infra.keyset import keyset_batches
from domains.infra.pacing import Pace
from domains.jobs.ending import JobEnd
from domains.jobs.models import Job, JobKind, JobStatus
from domains.jobs.reporter import JobReporter
from domains.jobs.retry import RetryOptions
from domains.jobs.services import job_create, job_dispatch
from domains.jobs.tasks import JobTaskName
from domains.notifications.emails import email_queue
from domains.orders.models import OrderItem, OrderStatus
from domains.orders.selectors import order_list
from domains.reports.errors import ReportError, ReportErrorCode
from domains.reports.models import Report, ReportStatus

logger = logging.getLogger(__name__)

MAX_REPORT_DAYS = 3 * 366
SALES_COLUMNS = (
    "order_number",
    "ordered_at",
    "region",
    "customer_email",
    "sku",
    "product_name",
    "category",
    "quantity",
    "unit_price",
    "line_total",
    "currency",
)
# The rows' order, unique per line: also the key each batch resumes after (keyset_batches).
SALES_ORDER = ("order__created_at", "order_id", "id")
_CHUNK_ROWS = 2_000
# A text cell starting with one of these is a formula to a spreadsheet (OWASP "CSV
# injection"): `=1+2@example.com` as an email would run. Such cells get a leading quote.
FORMULA_LEADS = ("=", "+", "-", "@", "\t", "\r")
REPORT_READY_TEMPLATE = "report_ready"


def sales_report_generate(
    *,
    viewer: User,
    start_date: date,
    end_date: date,
    category_id: int | None = None,
    region: str | None = None,
) -> Report:
    if end_date < start_date:
        raise ReportError(
            "The end date is before the start date.",
            code=ReportErrorCode.INVALID_DATE_RANGE,
            field="endDate",
        )
    if (end_date - start_date).days > MAX_REPORT_DAYS:
        raise ReportError(
            f"A report covers at most {MAX_REPORT_DAYS} days.",
            code=ReportErrorCode.INVALID_DATE_RANGE,
            field="endDate",
        )
    if region is not None and (not region.strip() or len(region) > 32):
        raise ReportError(
            "Enter a region name of 1 to 32 characters.",
            code=ReportErrorCode.INVALID_REGION,
            field="region",
        )
    if category_id is not None and not Category.objects.filter(pk=category_id).exists():
        raise ReportError(
            "No such category.", code=ReportErrorCode.CATEGORY_NOT_FOUND, field="category"
        )
    parameters = {
        "startDate": start_date.isoformat(),
        "endDate": end_date.isoformat(),
        "category": category_id,
        "region": region.strip() if region else None,
    }
    with transaction.atomic(durable=True):
        job = job_create(kind=JobKind.SALES_REPORT, owner=viewer)
        report = Report.objects.create(
            owner=viewer, report_type="sales", parameters=parameters, job=job
        )
        job_dispatch(job=job, task_name=JobTaskName.REPORTS_GENERATE_SALES, report_id=report.pk)
    logger.info("report.requested", extra={"report_id": report.pk, "job_id": job.pk})
    return report


def _spreadsheet_safe(field: str) -> Case:
    """The text column `field`, quoted where a spreadsheet would read it as a formula.

    Written in SQL so that PostgreSQL's COPY and the Python writer export the same cells.
    """
    text = CharField()
    return Case(
        When(
            In(Left(F(field), 1), FORMULA_LEADS),
            then=Concat(Value("'"), F(field), output_field=text),
        ),
        default=F(field),
        output_field=text,
    )


def sales_lines(*, viewer: User, parameters: dict) -> QuerySet:
    """The rows of a sales report: one per line of a confirmed order in the range, among
    the orders `viewer` may see (the report's owner: their own; staff: every order)."""
    start = timezone.make_aware(
        datetime.combine(date.fromisoformat(parameters["startDate"]), time.min)
    )
    end = timezone.make_aware(
        datetime.combine(date.fromisoformat(parameters["endDate"]) + timedelta(days=1), time.min)
    )
    lines = OrderItem.objects.filter(
        order__status=OrderStatus.CONFIRMED,
        order__created_at__gte=start,
        order__created_at__lt=end,
    )
    visible = order_list(viewer=viewer)
    if visible.query.has_filters():
        # Not when every order is visible (staff): SQLite would drive the read from an IN
        # over all orders and sort them at each batch, instead of walking the dates' index.
        lines = lines.filter(order__in=visible)
    if parameters.get("category"):
        lines = lines.filter(product__category_id=parameters["category"])
    if parameters.get("region"):
        lines = lines.filter(order__region=parameters["region"])
    return (
        lines.annotate(
            order_number=_spreadsheet_safe("order__number"),
            ordered_at=F("order__created_at"),
            region=_spreadsheet_safe("order__region"),
            customer_email=_spreadsheet_safe("order__customer__email"),
            sku=_spreadsheet_safe("product__sku"),
            product_name=_spreadsheet_safe("product__name"),
            category=_spreadsheet_safe("product__category__name"),
            line_total=ExpressionWrapper(
                F("quantity") * F("unit_price"),
                output_field=DecimalField(max_digits=14, decimal_places=2),
            ),
            currency=_spreadsheet_safe("order__currency"),
        )
        .order_by(*SALES_ORDER)
        .values_list(*SALES_COLUMNS)
    )


def _remove_leftovers(report: Report) -> None:
    """A run killed mid-write leaves its temporary file behind; the next run clears it."""
    for leftover in Path(settings.REPORT_TMP_DIR).glob(f"report-{report.pk}-*.csv"):
        leftover.unlink(missing_ok=True)


def sales_report_export(*, report: Report, reporter: JobReporter) -> Report:
    """Write the report's CSV to storage, reporting progress; safe to run again.

    Rows stream from the database to a temporary file (on PostgreSQL through COPY on a
    connection of its own; elsewhere in keyset batches, so that no read stays open while
    progress is written), then the file is copied to storage in chunks, so memory does not
    grow with the rows.
    The report is completed, or marked as ended, with its job (the end transition).
    """
    Path(settings.REPORT_TMP_DIR).mkdir(parents=True, exist_ok=True)
    _remove_leftovers(report)
    Report.objects.filter(pk=report.pk).update(status=ReportStatus.RUNNING, error_message="")
    lines = sales_lines(viewer=report.owner, parameters=report.parameters)
    reporter.progress(stage="counting", force=True)
    total = lines.count()
    reporter.progress(stage="writing", current=0, total=total, force=True)
    with tempfile.NamedTemporaryFile(
        "w+b", dir=settings.REPORT_TMP_DIR, prefix=f"report-{report.pk}-", suffix=".csv"
    ) as spool:
        if connection.vendor == "postgresql":
            rows = _copy_csv(lines, spool, reporter, total)
        else:
            rows = _write_csv(lines, spool, reporter, total)
        # Lines committed meanwhile may be in it, as in any query of the moment.
        total = max(total, rows)
        reporter.progress(stage="storing", current=rows, total=total, force=True)
        spool.seek(0)
        name = default_storage.save(
            f"reports/{report.pk}/sales-{report.parameters['startDate']}-{report.parameters['endDate']}.csv",
            File(spool),
        )
    stale = Report.objects.filter(pk=report.pk).values_list("file", flat=True).first()
    if stale and stale != name:
        default_storage.delete(stale)
    # Completed with its job, in the transaction that ends it (the end transition).
    Report.objects.filter(pk=report.pk).update(file=name, row_count=rows)
    report.refresh_from_db()
    logger.info("report.written", extra={"report_id": report.pk, "rows": rows})
    return report


def _progress_step(total: int) -> int:
    """Rows between progress calls: fine enough for 1% steps, coarse enough to be cheap."""
    return max(1, min(_CHUNK_ROWS, total // 200))


def _write_csv(lines: QuerySet, spool, reporter: JobReporter, total: int) -> int:
    # Text over the spool's own buffered file, detached before the spool closes, however
    # the write ends: a writer left holding text at a cancel flushed it when collected, into
    # whatever socket had taken the closed file's descriptor number (the broker's).
    text = io.TextIOWrapper(spool.file, encoding="utf-8", newline="")
    try:
        rows = _write_rows(lines, csv.writer(text), reporter, total)
    except BaseException:
        with suppress(OSError, ValueError):  # what stopped the write is the error to tell
            text.detach()
        raise
    text.detach()
    return rows


def _write_rows(lines: QuerySet, writer, reporter: JobReporter, total: int) -> int:
    writer.writerow(SALES_COLUMNS)
    rows = 0
    step = _progress_step(total)
    pace = Pace(settings.REPORT_MAX_ROWS_PER_SECOND)
    money = (SALES_COLUMNS.index("unit_price"), SALES_COLUMNS.index("line_total"))
    # In batches read to the end, not one cursor: on SQLite a cursor held open while the
    # progress is written would make that write meet a stale snapshot (keyset_batches).
    for batch in keyset_batches(lines, key=SALES_ORDER, size=_CHUNK_ROWS):
        for row in batch:
            row = list(row)
            for i in money:  # as PostgreSQL's COPY writes them: two decimals
                row[i] = f"{row[i]:.2f}"
            writer.writerow(row)
            rows += 1
            if rows % step == 0:
                reporter.progress(current=rows, total=total)
                pace.wait(rows)
    return rows


def _copy_csv(lines: QuerySet, spool, reporter: JobReporter, total: int) -> int:
    sql, params = lines.query.sql_with_params()
    rows = -1  # the header line
    next_tick = step = _progress_step(total)
    pace = Pace(settings.REPORT_MAX_ROWS_PER_SECOND)
    # A COPY holds its connection until the last row, and progress writes the Job row
    # meanwhile: on the same connection the two would deadlock, so COPY gets its own.
    copy_connection = connections.create_connection(DEFAULT_DB_ALIAS)
    try:
        with copy_connection.cursor() as cursor:
            raw = cursor.cursor  # psycopg's own cursor, for COPY
            with raw.copy(f"COPY ({sql}) TO STDOUT WITH (FORMAT csv, HEADER true)", params) as copy:
                for block in copy:
                    spool.write(block)
                    rows += bytes(block).count(b"\n")  # approximate: a quoted field may hold one
                    if rows >= next_tick:
                        reporter.progress(current=rows, total=total)
                        pace.wait(rows)
                        next_tick = rows + step
            copied = raw.rowcount  # exact, from the server's COPY tag
    finally:
        copy_connection.close()
    spool.flush()
    return copied if copied >= 0 else rows


def report_job_ended(report: Report, end: JobEnd) -> None:
    """The report's end, with its job's (the end transition set its status): a completed
    one's owner is mailed the link, once; a failed or cancelled one leaves nothing behind."""
    if end.status != JobStatus.SUCCESS:
        _remove_leftovers(report)
    elif end.record_moved:
        report_ready_email_queue(report)


def report_job_retry(original: Job, retry: Job, options: RetryOptions) -> None:
    """A new report with the same parameters (the failed one keeps its reason)."""
    report = Report.objects.get(job=original)
    again = Report.objects.create(
        owner=report.owner, report_type=report.report_type, parameters=report.parameters, job=retry
    )
    job_dispatch(job=retry, task_name=JobTaskName.REPORTS_GENERATE_SALES, report_id=again.pk)


def report_download_url(report: Report) -> str:
    path = reverse("report-download", args=[report.pk])
    return f"{settings.PUBLIC_BASE_URL.rstrip('/')}{path}" if settings.PUBLIC_BASE_URL else path


def report_ready_email_queue(report: Report) -> None:
    """Mail the owner that the report is ready, through the email pipeline (runs inside
    the transaction that completes the report, so it is queued exactly once)."""
    if report.owner is None or not report.owner.email:
        return
    email_queue(
        template=REPORT_READY_TEMPLATE,
        to_address=report.owner.email,
        recipient=report.owner,
        context={
            "first_name": report.owner.first_name,
            "start_date": report.parameters.get("startDate"),
            "end_date": report.parameters.get("endDate"),
            "row_count": report.row_count,
            "download_url": report_download_url(report),
        },
    )


def reports_purge(*, job_ids: Sequence[int], dry_run: bool) -> dict[str, int]:
    """Retention (domains/jobs/retention.py): the CSV files of these jobs' reports. The
    report rows are the user's and stay, their `file` emptied (fileUrl null, the download
    a 404); the file goes first, so a purge cut short leaves no file that no row names."""
    reports = Report.objects.filter(job_id__in=job_ids).exclude(file="")
    names = list(reports.values_list("pk", "file"))
    if not dry_run:
        for _, name in names:
            default_storage.delete(name)
        Report.objects.filter(pk__in=[pk for pk, _ in names]).update(file="")
    return {"report files": len(names)}
