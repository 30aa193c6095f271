"""What the console reads through the API: jobStats, a job's timeline, owner and record,
the ownerEmail filter; each scoped to the viewer."""

import pytest
from django.test import Client

from domains.jobs.attempts import job_attempt_start
from domains.jobs.ending import job_end
from domains.jobs.models import Job, JobKind, JobStatus
from domains.jobs.services import job_create
from domains.orders.models import Order
from schema.base import global_id
from testbed.factories import make_order, make_product, make_token

pytestmark = pytest.mark.django_db(transaction=True)

JOB = """
query($id: ID!) {
  job(id: $id) { owner { email } events { seq status stage } order { number } report { id } }
}
"""
JOBS = "query($f: JobFilter) { jobs(filters: $f) { edges { node { id owner { email } } } } }"


def _post(user, query: str, variables: dict | None = None) -> dict:
    client = Client(HTTP_AUTHORIZATION=f"Bearer {make_token(user)}")
    response = client.post(
        "/graphql/", {"query": query, "variables": variables or {}}, "application/json"
    )
    assert response.status_code == 200, response.content
    return response.json()


def _gid(job: Job) -> str:
    return str(global_id("Job", job.pk))


def test_a_jobs_timeline_owner_and_order(user):
    job = job_create(kind=JobKind.ORDER_WORKFLOW, owner=user)
    order = make_order(customer=user, lines=[(make_product(), 1)])
    Order.objects.filter(pk=order.pk).update(job=job)
    _, reporter = job_attempt_start(job_id=job.pk)
    reporter.started()
    reporter.progress(stage="reserve", force=True)
    job_end(job_id=job.pk, status=JobStatus.FAILURE, error="Out of stock.")

    answer = _post(user, JOB, {"id": _gid(job)})["data"]["job"]

    assert answer["owner"] == {"email": user.email}
    assert answer["order"] == {"number": order.number}
    assert answer["report"] is None
    assert [(e["status"], e["stage"]) for e in answer["events"]][:2] == [
        ("STARTED", None),
        ("PROGRESS", "reserve"),
    ]
    assert answer["events"][-1]["status"] == "FAILURE"
    assert [e["seq"] for e in answer["events"]] == sorted({e["seq"] for e in answer["events"]})


def test_the_owner_filter_selects_by_email_within_what_the_viewer_sees(
    user, other_user, staff_user
):
    mine = job_create(kind=JobKind.PAYMENT, owner=user)
    job_create(kind=JobKind.PAYMENT, owner=other_user)

    by_staff = _post(staff_user, JOBS, {"f": {"ownerEmail": user.email.upper()}})
    by_other = _post(other_user, JOBS, {"f": {"ownerEmail": user.email}})

    assert [e["node"]["id"] for e in by_staff["data"]["jobs"]["edges"]] == [_gid(mine)]
    assert by_other["data"]["jobs"]["edges"] == []


def test_job_stats_through_the_api_and_its_bounds(user):
    job = job_create(kind=JobKind.PAYMENT, owner=user)
    job_end(job_id=job.pk, status=JobStatus.CANCELLED)
    query = "query($m: Int!) { jobStats(minutes: $m) { perMinute { status count } durations { kind } } }"

    answer = _post(user, query, {"m": 60})["data"]["jobStats"]
    refused = _post(user, query, {"m": 0})

    assert answer == {"perMinute": [{"status": "CANCELLED", "count": 1}], "durations": []}
    assert refused["errors"][0]["extensions"]["code"] == "INVALID_ARGUMENT"
