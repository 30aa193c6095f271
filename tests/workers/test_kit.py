"""The worker kit's rules that hold for every task: names, limits, attempts."""

import re
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from celery.signals import before_task_publish
from django.conf import settings
from kombu import Queue

from config.celery import app, tasks_past_visibility_timeout
from domains.jobs.attempts import job_attempt_start
from domains.jobs.ending import job_end_handlers
from domains.jobs.models import JobKind, JobStatus
from domains.jobs.services import job_create
from domains.jobs.tasks import JobTaskName

DOMAINS = Path(settings.BASE_DIR) / "domains"


@pytest.fixture(scope="module")
def registered() -> set[str]:
    app.loader.import_default_modules()
    return set(app.tasks)


def test_every_task_name_a_domain_sends_is_registered(registered):
    assert sorted(set(JobTaskName) - registered) == []


def test_domains_send_tasks_only_by_their_named_constants():
    literal = re.compile(r"""(task_name=|send_task\(|signature\()\s*["'][a-z]""")
    offenders = [
        f"{path.relative_to(DOMAINS)}:{number}"
        for path in DOMAINS.rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if literal.search(line)
    ]
    assert offenders == []


def test_no_task_runs_past_the_brokers_visibility_timeout(registered):
    assert tasks_past_visibility_timeout(app) == []
    visibility = settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]
    assert visibility > max(settings.TASK_TIME_LIMITS.values())


def test_a_visibility_timeout_below_a_task_limit_is_refused(registered, monkeypatch):
    monkeypatch.setitem(app.conf.broker_transport_options, "visibility_timeout", 60)
    assert "crm.sync" in tasks_past_visibility_timeout(app)


def test_every_kind_with_a_record_registers_what_its_record_does_at_the_end():
    assert set(job_end_handlers()) == set(JobKind) - {JobKind.PRODUCT_SYNC}


pytestmark_db = pytest.mark.django_db(transaction=True)


@pytestmark_db
def test_a_retry_is_not_another_attempt_a_redelivery_is(user):
    job = job_create(kind=JobKind.SALES_REPORT, owner=user)
    first, reporter = job_attempt_start(job_id=job.pk)
    reporter.retrying("busy", countdown=5)
    retried, _ = job_attempt_start(job_id=job.pk, retry=True)
    assert (first.attempts, retried.attempts) == (1, 1)

    again, _ = job_attempt_start(job_id=job.pk, retry=True, redelivered=True)
    assert again.attempts == 2


@pytestmark_db
def test_a_duplicate_delivery_of_a_running_job_claims_nothing_a_redelivery_does(user):
    job = job_create(kind=JobKind.SALES_REPORT, owner=user)
    _, reporter = job_attempt_start(job_id=job.pk)
    reporter.started()

    assert job_attempt_start(job_id=job.pk) is None  # its lease is alive: a duplicate
    claimed, _ = job_attempt_start(job_id=job.pk, redelivered=True)  # its worker was lost
    assert (claimed.status, claimed.attempts) == (JobStatus.STARTED, 2)


@pytest.mark.parametrize("delay", ["countdown", "eta"])
def test_a_delay_under_a_second_is_sent_as_one_whole_second(delay):
    # RabbitMQ's native delayed delivery counts whole seconds: Celery refused a shorter
    # delay there and the retry that asked for it was lost (config.celery.whole_seconds).
    sent: list[dict] = []

    def record(headers=None, **kwargs):
        sent.append(headers)

    before_task_publish.connect(record)
    before = app.now()
    when = {"countdown": 0.4} if delay == "countdown" else {"eta": before + timedelta(seconds=0.2)}
    try:
        app.send_task("tests.never_consumed", queue=UNCONSUMED, **when)
    finally:
        before_task_publish.disconnect(record)
        with app.connection_for_write() as connection:
            Queue(UNCONSUMED).bind(connection.channel()).delete()

    [headers] = sent
    assert datetime.fromisoformat(headers["eta"]) >= before + timedelta(seconds=1)


UNCONSUMED = "tests-whole-seconds"
