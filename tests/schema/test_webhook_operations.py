"""Webhooks through the API: registering (the secret shown once), the refusal codes, the
delivery log, retry and delete; another user sees neither the endpoint nor its deliveries."""

import re

import pytest
from django.test import Client

from domains.jobs.ending import job_end
from domains.jobs.models import JobKind, JobStatus
from domains.jobs.services import job_create
from domains.webhooks.models import WebhookDelivery, WebhookEndpoint
from schema import schema
from schema.base import global_id
from testbed.factories import make_token

pytestmark = pytest.mark.django_db(transaction=True)

CREATE = """
mutation($input: WebhookEndpointCreateInput!) {
  webhookEndpointCreate(input: $input) {
    endpoint { id url events isActive allJobs } secret errors { field code message }
  }
}
"""
ENDPOINTS = """
{ webhookEndpoints(first: 10) { edges { node { id url
    deliveries(first: 10) { edges { node { id eventType status attempts webhookId job { id } } } } } } } }
"""
ENDPOINT = "query($id: ID!) { webhookEndpoint(id: $id) { id } }"
JOB_DELIVERIES = "query($id: ID!) { job(id: $id) { webhookDeliveries { id status eventType } } }"
RETRY = """
mutation($id: ID!) { webhookDeliveryRetry(id: $id) { delivery { id status } errors { code } } }
"""
DELETE = "mutation($id: ID!) { webhookEndpointDelete(id: $id) { deletedId errors { code } } }"
URL = "http://127.0.0.1:9/hooks"  # nothing listens: attempts fail, nothing is taken


def _post(user, query: str, variables: dict | None = None) -> dict:
    client = Client(HTTP_AUTHORIZATION=f"Bearer {make_token(user)}")
    body = client.post(
        "/graphql/", {"query": query, "variables": variables or {}}, "application/json"
    )
    assert body.status_code == 200, body.content
    data = body.json()
    assert "errors" not in data, data
    return data["data"]


def _create(user, url=URL, events=("JOB_SUCCEEDED",), **extra) -> dict:
    variables = {"input": {"url": url, "events": list(events), **extra}}
    return _post(user, CREATE, variables)["webhookEndpointCreate"]


def _ended_job(owner):
    job = job_create(kind=JobKind.PRODUCT_SYNC, owner=owner)
    job_end(job_id=job.pk, status=JobStatus.SUCCESS)
    return job


def test_a_registered_endpoint_answers_its_secret_once(user):
    created = _create(user, events=["JOB_FAILED", "JOB_SUCCEEDED"])

    assert created["errors"] == []
    assert created["secret"].startswith("whsec_")
    assert created["endpoint"]["url"] == URL
    assert created["endpoint"]["events"] == ["JOB_FAILED", "JOB_SUCCEEDED"]
    assert created["endpoint"]["isActive"] is True
    assert "secret" not in schema._schema.get_type("WebhookEndpoint").fields


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("http://169.254.169.254/latest/meta-data/", "TARGET_NOT_ALLOWED"),
        ("ftp://127.0.0.1/hooks", "INVALID_URL"),
    ],
)
def test_a_refused_target_answers_its_code_and_registers_nothing(user, url, code):
    created = _create(user, url=url)

    assert created["endpoint"] is None
    assert created["secret"] is None
    assert [(e["field"], e["code"]) for e in created["errors"]] == [("url", code)]
    assert not WebhookEndpoint.objects.exists()


def test_a_private_target_is_refused_while_they_are_not_allowed(user, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = False

    created = _create(user, url="http://10.0.0.1/hooks")

    assert [e["code"] for e in created["errors"]] == ["TARGET_NOT_ALLOWED"]


def test_only_staff_register_for_every_job(user):
    client = Client(HTTP_AUTHORIZATION=f"Bearer {make_token(user)}")
    variables = {"input": {"url": URL, "events": ["JOB_SUCCEEDED"], "allJobs": True}}

    body = client.post("/graphql/", {"query": CREATE, "variables": variables}, "application/json")

    # a permission refusal is the operation's top-level error, never a payload's
    assert body.json()["data"] is None
    assert [e["extensions"]["code"] for e in body.json()["errors"]] == ["PERMISSION_DENIED"]
    assert not WebhookEndpoint.objects.exists()


def test_the_owner_reads_the_delivery_log_and_another_user_sees_nothing(user, other_user):
    endpoint_id = _create(user)["endpoint"]["id"]
    job = _ended_job(user)
    delivery = WebhookDelivery.objects.get()
    job_id = str(global_id("Job", job.pk))

    mine = _post(user, ENDPOINTS)["webhookEndpoints"]["edges"]
    [node] = [edge["node"]["deliveries"]["edges"][0]["node"] for edge in mine]
    assert node["eventType"] == "JOB_SUCCEEDED"
    assert node["status"] in ("PENDING", "FAILED")  # a worker may have tried it meanwhile
    assert node["webhookId"] == delivery.webhook_id
    assert node["job"] == {"id": job_id}
    assert (
        _post(user, JOB_DELIVERIES, {"id": job_id})["job"]["webhookDeliveries"][0]["id"]
        == (node["id"])
    )

    assert _post(other_user, ENDPOINTS)["webhookEndpoints"]["edges"] == []
    assert _post(other_user, ENDPOINT, {"id": endpoint_id})["webhookEndpoint"] is None
    codes = [
        _post(other_user, RETRY, {"id": node["id"]})["webhookDeliveryRetry"]["errors"],
        _post(other_user, DELETE, {"id": endpoint_id})["webhookEndpointDelete"]["errors"],
    ]
    assert codes == [[{"code": "NOT_FOUND"}], [{"code": "NOT_FOUND"}]]
    assert WebhookEndpoint.objects.count() == 1


def test_a_job_owner_does_not_see_a_staff_endpoint_following_every_job(user, staff_user):
    _create(staff_user, allJobs=True)
    job = _ended_job(user)
    job_id = str(global_id("Job", job.pk))

    assert _post(user, JOB_DELIVERIES, {"id": job_id})["job"]["webhookDeliveries"] == []
    assert len(_post(staff_user, JOB_DELIVERIES, {"id": job_id})["job"]["webhookDeliveries"]) == 1


def test_a_delivery_in_an_attempt_reads_pending(user):
    _create(user)
    _ended_job(user)
    WebhookDelivery.objects.update(status="SENDING")

    edges = _post(user, ENDPOINTS)["webhookEndpoints"]["edges"]

    assert edges[0]["node"]["deliveries"]["edges"][0]["node"]["status"] == "PENDING"


def test_a_failed_delivery_is_retried_and_another_is_not(user):
    _create(user)
    _ended_job(user)
    delivery = WebhookDelivery.objects.get()
    delivery_id = str(global_id("WebhookDelivery", delivery.pk))
    WebhookDelivery.objects.update(status="FAILED", next_attempt_at=None, attempts=8)

    retried = _post(user, RETRY, {"id": delivery_id})["webhookDeliveryRetry"]
    again = _post(user, RETRY, {"id": delivery_id})["webhookDeliveryRetry"]

    assert retried == {"delivery": {"id": delivery_id, "status": "PENDING"}, "errors": []}
    assert again["errors"] in ([{"code": "NOT_RETRYABLE"}], [])  # [] once a worker failed it again
    assert WebhookDelivery.objects.get().webhook_id == delivery.webhook_id


def test_deleting_an_endpoint_takes_its_log(user):
    endpoint_id = _create(user)["endpoint"]["id"]
    _ended_job(user)

    deleted = _post(user, DELETE, {"id": endpoint_id})["webhookEndpointDelete"]

    assert deleted == {"deletedId": endpoint_id, "errors": []}
    assert not WebhookEndpoint.objects.exists()
    assert not WebhookDelivery.objects.exists()


def test_the_consoles_webhook_documents_are_valid_against_the_schema():
    """config/static/console/webhooks.js's queries and mutation name only what is served."""
    from django.conf import settings
    from graphql import parse, validate

    source = (settings.BASE_DIR / "config/static/console/webhooks.js").read_text()
    fields = re.search(r"const DELIVERY_FIELDS = `([^`]*)`", source).group(1)
    documents = [
        d.replace("${DELIVERY_FIELDS}", fields) for d in re.findall(r"gql\(\s*`([^`]*)`", source)
    ]

    assert len(documents) == 3
    for document in documents:
        assert validate(schema._schema, parse(document)) == [], document
