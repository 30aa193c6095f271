"""Subscribers of one job share each event's frame only where their documents agree."""

import asyncio

import pytest

from domains.jobs.models import Job, JobKind
from domains.jobs.progress import JobReporter, job_attempt_start
from domains.jobs.services import job_create
from schema.base import global_id
from tests.fixtures.graphql import LEGACY_WS, TRANSPORT_WS, Subscription

pytestmark = pytest.mark.e2e

SHARED = """subscription($id: ID!, $afterSeq: Int) {
  jobProgress(id: $id, afterSeq: $afterSeq) { seq status current total }
}"""
NARROW = (
    "subscription($id: ID!, $afterSeq: Int) { jobProgress(id: $id, afterSeq: $afterSeq) { seq } }"
)
WIDE = """subscription($id: ID!, $afterSeq: Int) {
  jobProgress(id: $id, afterSeq: $afterSeq) { seq status progress message at jobId }
}"""
TICKS = 20


def _emit(job_id: int) -> None:
    reporter = JobReporter(Job.objects.get(pk=job_id))
    for step in range(1, TICKS + 1):
        reporter.progress(current=step, total=TICKS, message=f"tick {step}")
    reporter.succeeded({"ticks": TICKS})


async def _watch(live, token: str, job_gid: str, document: str, protocol: str):
    variables = {"id": job_gid, "afterSeq": 0}
    async with Subscription(
        live.server.ws_url, document, variables, token=token, protocol=protocol
    ) as sub:
        first = await sub.next()
        return [first, *await sub.collect()]


def test_same_and_different_documents_each_get_their_own_fields_every_event(live, user):
    job = job_create(kind=JobKind.SALES_REPORT, owner=user)
    job_attempt_start(job_id=job.pk)[1].started()  # seq 1: every subscriber starts from it
    job_gid = str(global_id("Job", job.pk))
    token = live.client(user).token
    subscribers = [
        (SHARED, TRANSPORT_WS),
        (SHARED, LEGACY_WS),
        (NARROW, TRANSPORT_WS),
        (WIDE, LEGACY_WS),
    ]

    async def run():
        watching = [
            asyncio.create_task(_watch(live, token, job_gid, doc, protocol))
            for doc, protocol in subscribers
        ]
        await asyncio.sleep(0)  # the sockets open while the worker side starts
        await asyncio.to_thread(_emit, job.pk)
        return await asyncio.gather(*watching)

    shared_a, shared_b, narrow, wide = [
        [result["jobProgress"] for result in results] for results in asyncio.run(run())
    ]

    every_seq = list(range(1, TICKS + 3))  # started, each tick, the end
    for events in (shared_a, shared_b, narrow, wide):
        assert [e["seq"] for e in events] == every_seq
    assert shared_a == shared_b
    assert {frozenset(e) for e in shared_a} == {frozenset({"seq", "status", "current", "total"})}
    assert [e["current"] for e in shared_a[1:-1]] == list(range(1, TICKS + 1))
    assert shared_a[-1]["status"] == "SUCCESS"
    assert {frozenset(e) for e in narrow} == {frozenset({"seq"})}
    assert {frozenset(e) for e in wide} == {
        frozenset({"seq", "status", "progress", "message", "at", "jobId"})
    }
    assert [e["message"] for e in wide[1:-1]] == [f"tick {n}" for n in range(1, TICKS + 1)]
    assert {e["jobId"] for e in wide} == {job_gid}
