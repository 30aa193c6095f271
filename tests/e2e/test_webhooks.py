"""Webhooks on the real stack: a job that ends on a worker is told to a receiver on
loopback, retried on the worker's `webhooks` queue until taken, with one webhook-id and
signatures the standardwebhooks library verifies; a send lost with its worker is sent
again by the sweep and taken once."""

import json
import signal
import time
from datetime import timedelta

import psutil
import pytest
from django.conf import settings
from django.utils import timezone

from domains.jobs.ending import job_end
from domains.jobs.models import Job, JobKind, JobStatus
from domains.jobs.services import job_create
from domains.webhooks.models import WebhookDelivery
from domains.webhooks.services import webhook_deliveries_sweep, webhook_endpoint_create
from schema.base import global_id
from testbed.factories import make_category, make_product, make_sales_lines
from testbed.stack import stack_alone, start_worker
from testbed.waiting import wait_until
from testbed.webhooks import Receiver, refusing_first, verified

pytestmark = pytest.mark.e2e

CREATE = """
mutation($input: WebhookEndpointCreateInput!) {
  webhookEndpointCreate(input: $input) { endpoint { id } secret errors { code message } }
}
"""
GENERATE = """
mutation($input: SalesReportInput!) {
  salesReportGenerate(input: $input) { job { id } errors { code message } }
}
"""
ENDPOINTS = """
{ webhookEndpoints(first: 5) { edges { node { id deliveries(first: 5) { edges { node {
    status attempts lastResponseStatus webhookId job { id } } } } } } } }
"""
JOB = "query($id: ID!) { job(id: $id) { id webhookDeliveries { id } } }"


@pytest.fixture
def receiver():
    receiver = Receiver()
    yield receiver
    receiver.close()


def test_a_job_end_refused_twice_is_taken_on_the_third_attempt_and_only_its_owner_sees_it(
    live, user, other_user, receiver
):
    receiver.answer = refusing_first(2)
    client = live.client(user)
    created = client.data(
        CREATE, {"input": {"url": receiver.url, "events": ["JOB_SUCCEEDED", "JOB_FAILED"]}}
    )["webhookEndpointCreate"]
    assert created["errors"] == []
    make_sales_lines(customer=user, products=[make_product(category=make_category())], orders=5)
    today = str(timezone.now().date())

    started = client.data(GENERATE, {"input": {"startDate": today, "endDate": today}})
    job_id = started["salesReportGenerate"]["job"]["id"]

    def the_jobs_message_taken() -> str | None:
        # (the report's email is a job of the user's too, and is told as well)
        for arrival in list(receiver.arrivals):
            if json.loads(arrival.body)["data"]["job"]["id"] == job_id:
                return receiver.taken.get(arrival.webhook_id) and arrival.webhook_id
        return None

    webhook_id = wait_until(the_jobs_message_taken, timeout=120, message="the message taken")
    time.sleep(3)  # three retry delays: nothing more comes after the 2xx
    arrivals = receiver.for_id(webhook_id)
    assert (receiver.taken[webhook_id], len(arrivals)) == (1, 3)
    assert [a.answered for a in arrivals] == [503, 503, 204]
    payloads = [verified(created["secret"], arrival) for arrival in arrivals]
    assert all(payload == payloads[0] for payload in payloads)
    assert payloads[0]["type"] == "job.succeeded"
    assert payloads[0]["data"]["job"]["id"] == job_id
    assert payloads[0]["data"]["job"]["status"] == "SUCCESS"
    [endpoint] = client.data(ENDPOINTS)["webhookEndpoints"]["edges"]
    [delivery] = [
        edge
        for edge in endpoint["node"]["deliveries"]["edges"]
        if edge["node"]["webhookId"] == webhook_id
    ]
    assert delivery["node"] == {
        "status": "SUCCEEDED",
        "attempts": 3,
        "lastResponseStatus": 204,
        "webhookId": webhook_id,
        "job": {"id": job_id},
    }

    stranger = live.client(other_user)
    assert stranger.data(ENDPOINTS)["webhookEndpoints"]["edges"] == []
    assert stranger.data(JOB, {"id": job_id})["job"] is None


def _kill_whole_worker(worker) -> None:
    """SIGKILL the worker's main process and pool: its messages stay unacknowledged in Redis
    (handed out again only after the visibility timeout, past half an hour)."""
    main = psutil.Process(worker.pid)
    for process in [*main.children(recursive=True), main]:
        process.send_signal(signal.SIGKILL)
    worker.popen.wait()


def test_a_send_lost_with_its_worker_is_sent_again_by_the_sweep_and_taken_once(
    transactional_db, user, receiver
):
    receiver.answer = lambda webhook_id, attempt: None if attempt == 1 else 204  # hangs first
    endpoint = webhook_endpoint_create(viewer=user, url=receiver.url, events=["JOB_SUCCEEDED"])
    with stack_alone("hooks-lost") as stack:
        job = job_create(kind=JobKind.PRODUCT_SYNC, owner=user)
        Job.objects.filter(pk=job.pk).update(status=JobStatus.STARTED)

        job_end(job_id=job.pk, status=JobStatus.SUCCESS)  # sent to the worker on commit

        wait_until(lambda: receiver.arrivals, timeout=60, message="the first attempt")
        _kill_whole_worker(stack.worker)
        delivery = WebhookDelivery.objects.get()
        assert (delivery.status, delivery.attempts) == ("SENDING", 1)
        replacement = start_worker("hooks-lost-worker-2")
        try:
            # The dead attempt's claim lapses (its hard limit passed, here in one step).
            lapsed = timezone.now() - settings.WEBHOOK_CLAIM_TIMEOUT - timedelta(seconds=1)
            WebhookDelivery.objects.filter(pk=delivery.pk).update(claimed_at=lapsed)

            assert webhook_deliveries_sweep()["sent"] == 1

            wait_until(
                lambda: WebhookDelivery.objects.get().status == "SUCCEEDED",
                timeout=60,
                message="the delivery sent by the sweep",
            )
        finally:
            replacement.stop()
    delivery.refresh_from_db()
    assert delivery.attempts == 2
    assert len(receiver.for_id(delivery.webhook_id)) == 2
    assert receiver.taken == {delivery.webhook_id: 1}
    assert verified(endpoint.secret, receiver.arrivals[-1])["data"]["job"]["id"] == str(
        global_id("Job", job.pk)
    )
