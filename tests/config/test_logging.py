"""Log lines: an ignored task is one line, a failed task shows its traceback once; JSON lines
(LOG_FORMAT=json) hold the record, its context and the job it was written for."""

import io
import json
import logging
import sys

import pytest
from celery import Celery
from celery.app.trace import build_tracer
from celery.exceptions import Ignore

from config.logging import ContextFormatter, JsonFormatter
from domains.infra.log_context import job_logged


@pytest.fixture
def worker_log():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(ContextFormatter("%(levelname)s %(name)s %(message)s"))
    trace_logger = logging.getLogger("celery.app.trace")
    trace_logger.addHandler(handler)
    previous = trace_logger.level
    trace_logger.setLevel(logging.INFO)
    yield stream
    trace_logger.removeHandler(handler)
    trace_logger.setLevel(previous)


def _run_in_celery_tracer(body) -> None:
    app = Celery("logging-test", set_as_current=False)
    task = app.task(name="logging_test.task")(body)
    tracer = build_tracer(task.name, task, eager=False, propagate=False, app=app)
    tracer("task-1", (), {}, {"id": "task-1", "hostname": "worker@test"})


def test_an_ignored_task_logs_one_line_without_a_traceback(worker_log):
    def hands_over():
        raise Ignore

    _run_in_celery_tracer(hands_over)

    assert worker_log.getvalue() == "INFO celery.app.trace Task logging_test.task[task-1] ignored\n"


def test_a_failed_task_logs_its_traceback_once(worker_log):
    def fails():
        raise RuntimeError("disk on fire")

    _run_in_celery_tracer(fails)

    assert worker_log.getvalue().count("Traceback (most recent call last)") == 1
    assert "RuntimeError: disk on fire" in worker_log.getvalue()


def _json_line(record: logging.LogRecord) -> dict:
    return json.loads(JsonFormatter().format(record))


def test_a_json_line_holds_the_record_its_context_and_the_job_of_the_task():
    record = logging.makeLogRecord(
        {"name": "workers.base", "levelname": "INFO", "msg": "job.%s", "args": ("started",)}
    )
    record.attempt, record.where = 2, object()

    with job_logged(41):
        line = _json_line(record)

    assert list(line)[:5] == ["time", "level", "logger", "message", "job_id"]
    assert (line["level"], line["logger"], line["message"]) == (
        "INFO",
        "workers.base",
        "job.started",
    )
    assert (line["job_id"], line["attempt"]) == (41, 2)
    assert line["where"].startswith("<object object")  # what JSON cannot hold, as its repr
    assert "request_id" not in line
    assert "trace_id" not in line  # tracing is off


def test_a_json_line_prefers_the_records_own_job_id_and_carries_the_traceback():
    try:
        raise RuntimeError("disk on fire")
    except RuntimeError:
        record = logging.makeLogRecord(
            {"name": "x", "levelname": "ERROR", "msg": "boom", "exc_info": sys.exc_info()}
        )
    record.job_id = 7

    with job_logged(41):
        line = _json_line(record)

    assert line["job_id"] == 7
    assert line["exc_info"].startswith("Traceback (most recent call last)")
    assert "RuntimeError: disk on fire" in line["exc_info"]
