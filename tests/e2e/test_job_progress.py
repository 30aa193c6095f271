"""jobProgress as a client sees it: late subscribers, resumes, cancellation, lost workers."""

import asyncio
import json
import os
import signal
from datetime import timedelta
from pathlib import Path

import pytest
import websockets
from celery.result import AsyncResult
from django.conf import settings
from django.test import Client
from django.utils import timezone
from strawberry.relay import GlobalID

from domains.jobs.models import Job, JobKind, JobStatus
from domains.jobs.services import job_create
from domains.reports.models import Report, ReportStatus
from schema.base import global_id
from testbed.factories import make_category, make_product, make_sales_lines
from testbed.graphql import JOB_PROGRESS, LEGACY_WS, TRANSPORT_WS, Subscription
from testbed.waiting import job_in_status, wait_until

pytestmark = pytest.mark.e2e

GENERATE = """
mutation($input: SalesReportInput!) { salesReportGenerate(input: $input) { report { id } job { id } errors { code } } }
"""
CANCEL = "mutation($id: ID!) { jobCancel(id: $id) { job { status } errors { code message } } }"


def _start_report(client) -> tuple[str, int]:
    """Start a report of the last two days; returns the job's global id and primary key."""
    today = timezone.now().date()
    payload = client.data(
        GENERATE,
        {
            "input": {
                "startDate": (today - timedelta(days=1)).isoformat(),
                "endDate": today.isoformat(),
            }
        },
    )["salesReportGenerate"]
    assert payload["errors"] == []
    job_id = payload["job"]["id"]
    return job_id, int(GlobalID.from_id(job_id).node_id)


def _sales(user, orders: int) -> None:
    make_sales_lines(
        customer=user, products=[make_product(category=make_category())], orders=orders
    )


async def _collect(
    live, job_id: str, token: str, after_seq: int | None = None, protocol=TRANSPORT_WS
):
    variables = {"id": job_id} if after_seq is None else {"id": job_id, "afterSeq": after_seq}
    async with Subscription(
        live.server.ws_url, JOB_PROGRESS, variables, token=token, protocol=protocol
    ) as sub:
        return [r["jobProgress"] for r in await sub.collect()]


def test_late_subscriber_gets_the_terminal_event_then_completion(live, user):
    _sales(user, 50)
    client = live.client(user)
    job_id, job_pk = _start_report(client)
    finished = job_in_status(job_pk, {JobStatus.SUCCESS})

    events = asyncio.run(_collect(live, job_id, client.token))

    assert [e["status"] for e in events] == ["SUCCESS"]
    assert events[0]["seq"] == finished.seq
    assert events[0]["result"]["rowCount"] == 50


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
def test_resume_with_after_seq_replays_exactly_the_missed_events(live, user, protocol):
    _sales(user, 4_000)
    client = live.client(user)
    job_id, _ = _start_report(client)
    everything = asyncio.run(_collect(live, job_id, client.token, after_seq=0, protocol=protocol))
    assert [e["seq"] for e in everything] == list(range(1, len(everything) + 1)), (
        "the log holds every event"
    )
    cut = len(everything) // 2

    resumed = asyncio.run(_collect(live, job_id, client.token, after_seq=cut, protocol=protocol))

    assert resumed == everything[cut:]
    assert resumed[-1]["status"] == "SUCCESS"


def test_resume_after_the_terminal_event_completes_at_once(live, user):
    _sales(user, 10)
    client = live.client(user)
    job_id, job_pk = _start_report(client)
    finished = job_in_status(job_pk, {JobStatus.SUCCESS})

    assert asyncio.run(_collect(live, job_id, client.token, after_seq=finished.seq)) == []


def test_cancel_mid_run_ends_cancelled_and_removes_the_partial_file(live, user):
    _sales(user, 12_000)  # three seconds at the test stack's 4,000 rows/s
    client = live.client(user)
    job_id, job_pk = _start_report(client)

    async def cancel_once_writing():
        async with Subscription(
            live.server.ws_url, JOB_PROGRESS, {"id": job_id}, token=client.token
        ) as sub:
            while (event := (await sub.next())["jobProgress"])["stage"] != "writing" or not event[
                "current"
            ]:
                pass
            partial_files = list(Path(settings.REPORT_TMP_DIR).glob("report-*.csv"))
            cancel = await asyncio.to_thread(client.data, CANCEL, {"id": job_id})
            return (
                partial_files,
                cancel["jobCancel"],
                [d["jobProgress"] for d in await sub.collect()],
            )

    partial_files, cancel, events_after_cancel = asyncio.run(cancel_once_writing())

    assert partial_files, "a partial file existed mid-run"
    assert cancel["errors"] == []
    assert events_after_cancel[-1]["status"] == "CANCELLED"
    job = job_in_status(job_pk, {JobStatus.CANCELLED})
    report = Report.objects.get(job_id=job_pk)
    wait_until(lambda: Report.objects.get(pk=report.pk).status == ReportStatus.CANCELLED)
    assert not Report.objects.get(pk=report.pk).file
    assert list(Path(settings.REPORT_TMP_DIR).glob(f"report-{report.pk}-*.csv")) == []
    assert not (Path(settings.MEDIA_ROOT) / "reports" / str(report.pk)).exists()
    assert job.finished_at is not None


def test_cancel_after_the_end_is_refused(live, user):
    _sales(user, 10)
    client = live.client(user)
    job_id, job_pk = _start_report(client)
    job_in_status(job_pk, {JobStatus.SUCCESS})

    refused = client.data(CANCEL, {"id": job_id})["jobCancel"]

    assert refused["errors"][0]["code"] == "ALREADY_FINISHED"
    assert Job.objects.get(pk=job_pk).status == JobStatus.SUCCESS


def test_worker_killed_mid_report_runs_again_and_succeeds(live, user):
    _sales(user, 8_000)
    client = live.client(user)
    job_id, job_pk = _start_report(client)
    job = job_in_status(job_pk, {JobStatus.PROGRESS})
    pid = AsyncResult(str(job.task_id)).info["pid"]

    os.kill(pid, signal.SIGKILL)
    events = asyncio.run(_collect(live, job_id, client.token, after_seq=0))

    finished = job_in_status(job_pk, {JobStatus.SUCCESS, JobStatus.FAILURE})
    assert finished.status == JobStatus.SUCCESS
    assert finished.attempts == 2
    assert events[-1]["status"] == "SUCCESS"
    assert [e["status"] for e in events].count("STARTED") == 2
    assert Report.objects.get(job_id=job_pk).row_count == 8_000
    assert live.worker.alive()


def test_a_socket_signed_in_by_its_session_cookie_alone_gets_its_job(live, user):
    # (the websocket reads the session through config.websocket.SocketSession)
    browser = Client()
    browser.force_login(user)
    cookie = f"{settings.SESSION_COOKIE_NAME}={browser.cookies[settings.SESSION_COOKIE_NAME].value}"
    job = job_create(kind=JobKind.SALES_REPORT, owner=user)

    async def first_event():
        async with websockets.connect(
            live.server.ws_url, subprotocols=[TRANSPORT_WS], additional_headers={"Cookie": cookie}
        ) as ws:
            await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
            ack = json.loads(await asyncio.wait_for(ws.recv(), 30))
            subscribe = {"query": JOB_PROGRESS, "variables": {"id": str(global_id("Job", job.pk))}}
            await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": subscribe}))
            return ack, json.loads(await asyncio.wait_for(ws.recv(), 30))

    ack, first = asyncio.run(first_event())

    assert ack["type"] == "connection_ack"
    assert first["type"] == "next", first
    assert first["payload"]["data"]["jobProgress"]["status"] == "PENDING"
