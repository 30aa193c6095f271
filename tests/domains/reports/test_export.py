"""The export itself, without Celery: rows, progress rows written mid-export, cleanup."""

import csv
import io
import threading
import time
from datetime import date

import pytest
from django.core.files.storage import default_storage
from django.db import connections

from domains.jobs.attempts import job_attempt_start
from domains.jobs.models import Job, JobKind
from domains.jobs.services import job_create
from domains.reports.models import Report, ReportStatus
from domains.reports.services import sales_report_export
from testbed.factories import make_category, make_product, make_sales_lines


def _run_with_deadline(target, seconds: float = 60):
    """Run `target` in a daemon thread so that a deadlock fails the test instead of hanging it."""
    outcome: dict = {}

    def run():
        try:
            outcome["value"] = target()
        except BaseException as error:
            outcome["error"] = error
        finally:
            connections.close_all()  # this thread's own connections

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "the export did not finish: deadlocked?"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


@pytest.mark.django_db(transaction=True)
def test_export_writes_progress_rows_while_rows_stream(user, settings):
    """On PostgreSQL the rows stream through COPY while the Job row is updated: the two
    must not share a connection (they deadlocked once)."""
    settings.JOB_DB_WRITE_INTERVAL = 0  # write the Job row at every progress step
    product = make_product(category=make_category(), price="3.25")
    lines = make_sales_lines(customer=user, products=[product], orders=20_000)
    today = str(date.today())
    report = Report.objects.create(
        owner=user,
        job=job_create(kind=JobKind.SALES_REPORT, owner=user),
        parameters={"startDate": today, "endDate": today},
    )
    _, reporter = job_attempt_start(job_id=report.job_id)
    reporter.started()

    report = _run_with_deadline(lambda: sales_report_export(report=report, reporter=reporter))
    assert report.status == ReportStatus.RUNNING  # written; completed with its job
    reporter.succeeded()

    report.refresh_from_db()
    assert report.status == ReportStatus.COMPLETED
    assert report.row_count == lines
    with default_storage.open(report.file.name) as stored:
        rows = list(csv.reader(io.TextIOWrapper(stored, encoding="utf-8")))
    assert len(rows) == lines + 1
    assert {row[rows[0].index("line_total")] for row in rows[1:]} == {"3.25"}
    job = Job.objects.get(pk=report.job_id)
    assert (job.current, job.total) == (lines, lines)


@pytest.mark.django_db(transaction=True)
def test_export_succeeds_while_other_connections_commit(user, settings):
    """On SQLite a read held open across the export's progress writes failed the export
    ("database is locked") at the first write after another connection committed."""
    settings.JOB_DB_WRITE_INTERVAL = 0  # write the Job row at every progress step
    settings.REPORT_MAX_ROWS_PER_SECOND = 10_000  # a second or so of export
    product = make_product(category=make_category(), price="2.00")
    lines = make_sales_lines(customer=user, products=[product], orders=10_000)
    today = str(date.today())
    report = Report.objects.create(
        owner=user,
        job=job_create(kind=JobKind.SALES_REPORT, owner=user),
        parameters={"startDate": today, "endDate": today},
    )
    _, reporter = job_attempt_start(job_id=report.job_id)
    reporter.started()
    exporting, commits = threading.Event(), []

    def commit_meanwhile():
        try:
            while not exporting.is_set():
                commits.append(make_product().pk)  # a commit of another connection
                time.sleep(0.02)
        finally:
            connections.close_all()

    committer = threading.Thread(target=commit_meanwhile, daemon=True)
    committer.start()
    try:
        report = _run_with_deadline(lambda: sales_report_export(report=report, reporter=reporter))
    finally:
        exporting.set()
        committer.join(30)

    assert len(commits) > 1
    assert report.row_count == lines
    assert Job.objects.get(pk=report.job_id).status == "PROGRESS"
