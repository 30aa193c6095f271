"""Traces and JSON logs, as an operator collects them from a real server and worker.

The stack runs with tracing on through OTEL_TRACES_FILE (config/tracing.py): every process
appends its finished spans to one file as JSON lines, which the test reads. LOG_FORMAT=json
makes every log line of both processes one JSON object.
"""

import asyncio
import json
import os
import re
from pathlib import Path

import httpx
import pytest
from celery import current_app
from strawberry.relay import GlobalID

from domains.jobs.models import Job, JobStatus
from domains.jobs.tasks import JobTaskName
from schema.base import global_id
from testbed.factories import make_order
from testbed.graphql import JOB_PROGRESS, Subscription
from testbed.stack import stack_alone
from testbed.waiting import job_finished, wait_until
from tests.fixtures.commerce import stocked_product, with_clean_sandbox
from workers.jobs import WATCHDOG

pytestmark = pytest.mark.e2e

PROCESS = """
mutation($input: PaymentProcessInput!) { paymentProcess(input: $input) { job { id } errors { code } } }
"""
JOB = "query($id: ID!) { job(id: $id) { traceId } }"
TASK_SPAN = f"run/{JobTaskName.PAYMENTS_PROCESS}"


@pytest.fixture(scope="module")
def observed(django_db_setup, django_db_blocker, tmp_path_factory):
    spans = tmp_path_factory.mktemp("traces") / "spans.jsonl"
    with stack_alone("observed", OTEL_TRACES_FILE=str(spans), LOG_FORMAT="json") as stack:
        stack.spans = spans
        yield stack


@pytest.fixture
def traced(observed, transactional_db):
    return with_clean_sandbox(observed)


def _spans(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _trace(path: Path, trace_id: str) -> list[dict]:
    return [s for s in _spans(path) if s["context"]["trace_id"] == f"0x{trace_id}"]


def _named(spans: list[dict], name: str) -> list[dict]:
    return [s for s in spans if s["name"] == name]


def _pay(stack, user, **headers: str) -> int:
    order = make_order(customer=user, lines=[(stocked_product(), 1)], status="pending")
    variables = {
        "input": {
            "orderId": str(global_id("Order", order.pk)),
            "method": "tok_visa",
            "idempotencyKey": f"observed-{order.pk}",
        }
    }
    body = stack.client(user).execute(PROCESS, variables, **headers)
    payload = body["data"]["paymentProcess"]
    assert payload["errors"] == [], payload
    return int(GlobalID.from_id(payload["job"]["id"]).node_id)


def test_a_payment_is_one_trace_from_the_mutation_through_its_task_to_the_gateway(traced, user):
    job_id = _pay(traced, user)
    job = job_finished(job_id)
    assert job.status == JobStatus.SUCCESS, job.error
    assert re.fullmatch("[0-9a-f]{32}", job.trace_id)
    # The task's span ends just after it ended the job.
    spans = wait_until(
        lambda: (
            (found := _trace(traced.spans, job.trace_id)) and _named(found, TASK_SPAN) and found
        ),
        message="the task's span",
    )

    mutation = _named(spans, "GraphQL Resolving: paymentProcess")
    task = _named(spans, TASK_SPAN)
    assert len(mutation) == len(task) == 1
    assert mutation[0]["resource"]["attributes"]["service.name"] == "jobstream"
    assert task[0]["resource"]["attributes"]["service.name"] == "jobstream-worker"
    assert task[0]["attributes"]["jobstream.job_id"] == job.pk
    # The gateway call leaves the worker (requests) and reaches the sandbox (Django), both
    # in the same trace: the context travelled in the message, then in the HTTP headers.
    charge_url = f"{traced.server.url}/sandbox/gateway/charges"
    calls = [s for s in spans if s["attributes"].get("http.url") == charge_url]
    sent = [s for s in calls if s["kind"] == "SpanKind.CLIENT"]
    served = [s for s in calls if s["kind"] == "SpanKind.SERVER"]
    assert [s["resource"]["attributes"]["service.name"] for s in sent] == ["jobstream-worker"]
    assert [s["parent_id"] for s in served] == [sent[0]["context"]["span_id"]]
    # The client reads it from the API.
    data = traced.client(user).data(JOB, {"id": str(global_id("Job", job.pk))})
    assert data["job"]["traceId"] == job.trace_id


def test_with_tracing_on_a_subscription_streams_the_job_to_its_end(traced, user):
    job_id = _pay(traced, user)
    client = traced.client(user)

    events = asyncio.run(_progress(traced, str(global_id("Job", job_id)), client.token))

    assert events[-1]["status"] == "SUCCESS"
    assert _named(_spans(traced.spans), "GraphQL Resolving: jobProgress")


async def _progress(stack, job_id: str, token: str) -> list[dict]:
    async with Subscription(stack.server.ws_url, JOB_PROGRESS, {"id": job_id}, token=token) as sub:
        return [r["jobProgress"] for r in await sub.collect()]


def test_a_job_sent_again_by_the_watchdog_continues_the_mutations_trace(traced, user):
    worker = f"{traced.worker.name}@{os.uname().nodename}"
    current_app.control.cancel_consumer("celery", destination=[worker], reply=True)
    try:
        job_id = _pay(traced, user)
        # The message is lost, as though the broker had been down when the job committed.
        current_app.control.purge()
        Job.objects.filter(pk=job_id).update(dispatched_at=None)
    finally:
        current_app.control.add_consumer("celery", destination=[worker], reply=True)

    current_app.send_task(WATCHDOG)

    job = job_finished(job_id)
    assert job.status == JobStatus.SUCCESS, job.error
    spans = wait_until(
        lambda: (
            (found := _trace(traced.spans, job.trace_id)) and _named(found, TASK_SPAN) and found
        ),
        message="the task's span",
    )
    sends = _named(spans, f"apply_async/{JobTaskName.PAYMENTS_PROCESS}")
    # The first send (from the server, lost) and the watchdog's (from the worker).
    assert sorted(s["resource"]["attributes"]["service.name"] for s in sends) == [
        "jobstream",
        "jobstream-worker",
    ]
    assert len(_named(spans, TASK_SPAN)) == 1


def test_log_lines_are_json_with_the_request_job_and_trace_ids(traced, user):
    job_id = _pay(traced, user, **{"X-Request-ID": "observed-request-1"})
    job = job_finished(job_id)
    charged = wait_until(
        lambda: [
            line
            for line in _log_lines(traced.worker)
            if line["message"] == "payment.charged" and line.get("job_id") == job_id
        ],
        message="the worker's payment.charged line",
    )

    lines = [json.loads(line) for line in traced.server.log_lines()] + _log_lines(traced.worker)

    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    # The server's line names the request, the job it made and the trace ...
    requested = [line for line in lines if line.get("request_id") == "observed-request-1"]
    assert [line["message"] for line in requested] == ["payment.requested"]
    assert (requested[0]["job_id"], requested[0]["trace_id"]) == (job_id, job.trace_id)
    # ... and so does the worker's, whose job id comes from the task it runs in.
    assert len(charged) == 1
    assert charged[0]["trace_id"] == job.trace_id
    assert "request_id" not in charged[0]


def _log_lines(worker) -> list[dict]:
    """The worker's log lines, each parsed: what Celery prints before its logging starts
    (a warning, its banner) is not a log line."""
    lines = worker.log_lines()
    first = next(i for i, line in enumerate(lines) if line.startswith("{"))
    return [json.loads(line) for line in lines[first:]]


REGISTER = """mutation($input: UserRegisterInput!) {
  userRegister(input: $input) { user { id } errors { code } }
}"""


def _linked_to(spans: list[dict], trace_id: str) -> list[dict]:
    return [
        s
        for s in spans
        if any(link["context"]["trace_id"] == f"0x{trace_id}" for link in s["links"])
    ]


def test_an_anonymous_callers_traceparent_starts_a_new_trace_linked_to_it(traced):
    chosen = "4bf92f3577b34da6a3ce929d0e0e4736"
    email = f"traced-{os.getpid()}@example.com"
    variables = {"input": {"email": email, "password": "a-long-passphrase-1"}}

    body = httpx.post(
        traced.server.graphql_url,
        json={"query": REGISTER, "variables": variables},
        # the sampled flag off: continued, it would switch the trace's recording off
        headers={"traceparent": f"00-{chosen}-00f067aa0ba902b7-00"},
        timeout=30,
    ).json()

    assert body["data"]["userRegister"]["errors"] == []
    job = wait_until(
        lambda: Job.objects.filter(owner__email=email).first(), message="the welcome email job"
    )
    assert re.fullmatch("[0-9a-f]{32}", job.trace_id)
    assert job.trace_id != chosen
    linked = wait_until(
        lambda: _linked_to(_spans(traced.spans), chosen), message="the request's span"
    )
    assert [s["context"]["trace_id"] for s in linked] == [f"0x{job.trace_id}"]
    assert _trace(traced.spans, chosen) == []


def test_a_signed_in_callers_traceparent_is_continued(traced, user):
    chosen = "0af7651916cd43dd8448eb211c80319c"

    job_id = _pay(traced, user, traceparent=f"00-{chosen}-b7ad6b7169203331-01")

    assert Job.objects.get(pk=job_id).trace_id == chosen
