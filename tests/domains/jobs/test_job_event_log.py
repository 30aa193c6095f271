"""A job's timeline (Job.events): its log in Redis, completed by the row where the row is
ahead of the log."""

import pytest

from domains.infra.redis import sync_client
from domains.jobs.attempts import job_attempt_start
from domains.jobs.ending import job_end
from domains.jobs.events import log_key, snapshot_key
from domains.jobs.models import JobKind, JobStatus
from domains.jobs.selectors import job_event_log
from domains.jobs.services import job_create

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_timeline_is_every_logged_event_in_order(user):
    job = job_create(kind=JobKind.SALES_REPORT, owner=user)
    _, reporter = job_attempt_start(job_id=job.pk)
    reporter.started()
    for done in (25, 50, 75, 100):
        reporter.progress(current=done, total=100, stage="writing")
    reporter.succeeded({"rows": 100})
    job.refresh_from_db()

    events = job_event_log(job=job)

    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [e["current"] for e in events if e["status"] == "PROGRESS"] == [25, 50, 75, 100]
    assert events[0]["status"] == "STARTED"
    assert events[-1]["status"] == "SUCCESS"


def test_an_end_the_log_lost_comes_from_the_row(user):
    job = job_create(kind=JobKind.SALES_REPORT, owner=user)
    _, reporter = job_attempt_start(job_id=job.pk)
    reporter.started()
    reporter.progress(current=1, total=2)
    sync_client().delete(snapshot_key(job.pk))  # Redis lost the job: the end is not logged
    job_end(job_id=job.pk, status=JobStatus.FAILURE, error="It broke.")
    job.refresh_from_db()
    logged = len(sync_client().xrange(log_key(job.pk)))

    events = job_event_log(job=job)

    assert len(events) == logged + 1
    assert events[-1]["status"] == "FAILURE"
    assert events[-1]["error"] == "It broke."
    assert events[-1]["seq"] > events[-2]["seq"]


def test_a_job_without_a_log_is_its_row(user):
    job = job_create(kind=JobKind.PAYMENT, owner=user)

    events = job_event_log(job=job)

    assert [(e["seq"], e["status"]) for e in events] == [(0, "PENDING")]
