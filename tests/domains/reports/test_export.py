"""The export itself, without Celery: rows, progress rows written mid-export, cleanup."""

import csv
import gc
import io
import os
import tempfile
import threading
import time
from contextlib import ExitStack
from datetime import date

import pytest
from django.core.files.storage import default_storage
from django.db import connections

from domains.jobs.attempts import job_attempt_start
from domains.jobs.models import Job, JobKind
from domains.jobs.reporter import JobCancelled
from domains.jobs.services import job_cancel, job_create
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


def _report_running(user):
    """A report of today's sales whose job has started, and the job's reporter."""
    today = str(date.today())
    report = Report.objects.create(
        owner=user,
        job=job_create(kind=JobKind.SALES_REPORT, owner=user),
        parameters={"startDate": today, "endDate": today},
    )
    _, reporter = job_attempt_start(job_id=report.job_id)
    reporter.started()
    return report, reporter


@pytest.mark.django_db(transaction=True)
def test_export_writes_progress_rows_while_rows_stream(user, settings):
    """On PostgreSQL the rows stream through COPY while the Job row is updated: the two
    must not share a connection (they deadlocked once)."""
    settings.JOB_DB_WRITE_INTERVAL = 0  # write the Job row at every progress step
    product = make_product(category=make_category(), price="3.25")
    lines = make_sales_lines(customer=user, products=[product], orders=20_000)
    report, reporter = _report_running(user)

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
    report, reporter = _report_running(user)
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


@pytest.mark.django_db(transaction=True)
def test_an_export_cancelled_mid_write_writes_nothing_after_its_file_is_closed(user, settings):
    """A cancel raised mid-write left CSV text buffered in a writer opened on the temporary
    file's descriptor number; once the file was closed that number went to the next socket
    the worker opened (its broker connection), and the writer, collected later, flushed the
    rows into it: RabbitMQ closed the connection on the garbage (frame_too_large)."""
    settings.JOB_DB_WRITE_INTERVAL = 0  # the row, and the cancel's flag, read at every step
    settings.REPORT_MAX_ROWS_PER_SECOND = 2_000  # a couple of seconds of export
    product = make_product(category=make_category(), price="1.50")
    make_sales_lines(customer=user, products=[product], orders=4_000)
    report, reporter = _report_running(user)

    def cancel_once_writing():
        try:
            while not Job.objects.filter(pk=report.job_id, current__gt=0).exists():
                time.sleep(0.02)
            job_cancel(job=Job.objects.get(pk=report.job_id))
        finally:
            connections.close_all()

    canceller = threading.Thread(target=cancel_once_writing, daemon=True)
    canceller.start()
    with pytest.raises(JobCancelled) as stopped:
        sales_report_export(report=report, reporter=reporter)
    canceller.join(30)

    # The descriptors the export's file freed go to the next files opened here.
    with ExitStack() as files:
        opened = [files.enter_context(tempfile.TemporaryFile()) for _ in range(16)]
        del stopped  # the traceback held the export's frames, and whatever they held
        gc.collect()
        assert [os.fstat(f.fileno()).st_size for f in opened] == [0] * len(opened)
