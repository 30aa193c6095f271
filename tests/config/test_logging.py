"""Worker log lines: an ignored task is one line, a failed task shows its traceback once."""

import io
import logging

import pytest
from celery import Celery
from celery.app.trace import build_tracer
from celery.exceptions import Ignore

from config.logging import ContextFormatter


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
