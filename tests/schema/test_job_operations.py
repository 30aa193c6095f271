"""jobRetry and jobsCancel through the API: who may, what they answer, and their codes."""

import pytest
from django.test import Client

from domains.jobs.ending import job_end
from domains.jobs.models import Job, JobKind, JobStatus
from domains.jobs.services import job_create
from schema.base import global_id
from testbed.factories import make_token

pytestmark = pytest.mark.django_db(transaction=True)

RETRY = """
mutation($id: ID!) {
  jobRetry(id: $id) { job { id kind status retryOf { id } } errors { field code } }
}
"""
CANCEL_MANY = """
mutation($filters: JobFilter!) {
  jobsCancel(filters: $filters) { count jobs { id status } errors { code } }
}
"""
RETRIES = "query($id: ID!) { job(id: $id) { retries { id status } } }"


def _post(user, query: str, variables: dict) -> dict:
    client = Client(HTTP_AUTHORIZATION=f"Bearer {make_token(user)}")
    body = client.post("/graphql/", {"query": query, "variables": variables}, "application/json")
    assert body.status_code == 200, body.content
    data = body.json()
    assert "errors" not in data, data
    return data["data"]


def _gid(job: Job) -> str:
    return str(global_id("Job", job.pk))


def _failed(kind: JobKind, owner) -> Job:
    job = job_create(kind=kind, owner=owner)
    job_end(job_id=job.pk, status=JobStatus.FAILURE, error="It broke.")
    return job


def test_a_retry_is_a_new_job_the_original_lists(staff_user):
    original = _failed(JobKind.PRODUCT_SYNC, staff_user)

    answer = _post(staff_user, RETRY, {"id": _gid(original)})["jobRetry"]

    retry = Job.objects.get(retry_of=original)
    assert answer == {
        "job": {
            "id": _gid(retry),
            "kind": "PRODUCT_SYNC",
            "status": "PENDING",
            "retryOf": {"id": _gid(original)},
        },
        "errors": [],
    }
    retries = _post(staff_user, RETRIES, {"id": _gid(original)})["job"]["retries"]
    assert retries == [{"id": _gid(retry), "status": "PENDING"}]


def test_retry_refusals_carry_codes(user, other_user):
    theirs = _failed(JobKind.PRODUCT_SYNC, other_user)
    email = _failed(JobKind.EMAIL, user)
    running = job_create(kind=JobKind.PRODUCT_SYNC, owner=user)

    def code(job):
        answer = _post(user, RETRY, {"id": _gid(job)})["jobRetry"]
        assert answer["job"] is None
        return answer["errors"][0]["code"]

    assert code(theirs) == "NOT_FOUND"  # another's job is not there to retry
    assert code(email) == "NOT_RETRYABLE"
    assert code(running) == "NOT_RETRYABLE"
    assert Job.objects.filter(retry_of__isnull=False).count() == 0


def test_jobs_cancel_is_for_staff(user):
    job = job_create(kind=JobKind.PRODUCT_SYNC, owner=user)
    client = Client(HTTP_AUTHORIZATION=f"Bearer {make_token(user)}")

    body = client.post(
        "/graphql/", {"query": CANCEL_MANY, "variables": {"filters": {}}}, "application/json"
    ).json()

    # the staff check's one shape: the operation's top-level error, no payload
    assert body["data"] is None
    assert [(e["path"], e["extensions"]["code"]) for e in body["errors"]] == [
        (["jobsCancel"], "PERMISSION_DENIED")
    ]
    assert Job.objects.get(pk=job.pk).status == JobStatus.PENDING


def test_jobs_cancel_cancels_what_the_filters_select(staff_user, user):
    syncs = [job_create(kind=JobKind.PRODUCT_SYNC, owner=user) for _ in range(2)]
    report = job_create(kind=JobKind.SALES_REPORT, owner=user)
    ended = _failed(JobKind.PRODUCT_SYNC, user)

    answer = _post(staff_user, CANCEL_MANY, {"filters": {"kind": "PRODUCT_SYNC"}})["jobsCancel"]

    assert answer["count"] == 2
    assert answer["errors"] == []
    assert sorted(j["id"] for j in answer["jobs"]) == sorted(_gid(j) for j in syncs)
    assert {j["status"] for j in answer["jobs"]} == {"CANCELLED"}
    assert Job.objects.get(pk=report.pk).status == JobStatus.PENDING
    assert Job.objects.get(pk=ended.pk).status == JobStatus.FAILURE
