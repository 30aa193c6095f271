"""Subscribers of one job share each event's frame only where their documents agree."""

import asyncio
import contextlib

import pytest

from domains.jobs.attempts import job_attempt_start
from domains.jobs.models import Job, JobKind
from domains.jobs.reporter import JobReporter
from domains.jobs.services import job_create
from schema.base import global_id
from testbed.graphql import LEGACY_WS, MULTIPART, SSE, TRANSPORT_WS, HTTPStream, Subscription
from tests.config.test_metrics import _moved, _scrape

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


LIVE = "subscription($id: ID!) { jobProgress(id: $id) { seq status current total } }"
FRAMES = "jobstream_subscription_frames_total"


def test_websocket_sse_and_multipart_subscribers_share_one_execution_per_event(
    live, user, staff_user
):
    """Each live event runs once for all eight subscribers of one document, and each HTTP
    framing of it (SSE event, multipart part) is built once; only each subscriber's own
    first event (its snapshot, read for it alone) runs and is framed per subscriber."""
    job = job_create(kind=JobKind.SALES_REPORT, owner=user)
    job_attempt_start(job_id=job.pk)[1].started()
    variables = {"id": str(global_id("Job", job.pk))}
    token = live.client(user).token
    transports = [SSE] * 3 + [MULTIPART] * 3 + [TRANSPORT_WS, LEGACY_WS]

    def subscriber(transport):
        if transport in (SSE, MULTIPART):
            return HTTPStream(
                live.server.graphql_url, LIVE, variables, transport=transport, token=token
            )
        return Subscription(live.server.ws_url, LIVE, variables, token=token, protocol=transport)

    async def run():
        streams = [subscriber(t) for t in transports]
        async with contextlib.AsyncExitStack() as stack:
            for stream in streams:
                await stack.enter_async_context(stream)
            firsts = [await stream.next() for stream in streams]  # every one is live now
            before = await asyncio.to_thread(_scrape, live, staff_user)
            await asyncio.to_thread(_emit, job.pk)
            rests = await asyncio.gather(*(stream.collect() for stream in streams))
        return before, firsts, rests

    before, firsts, rests = asyncio.run(run())
    after = _scrape(live, staff_user)

    seqs = [{r["jobProgress"]["seq"] for r in rest} for rest in rests]
    assert all(rest[-1]["jobProgress"]["status"] == "SUCCESS" for rest in rests)
    assert len({f["jobProgress"]["seq"] for f in firsts}) == 1  # all began at the same state
    live_events = set().union(*seqs)
    over = {
        t: set().union(*(s for s, u in zip(seqs, transports, strict=True) if u == t))
        for t in (SSE, MULTIPART)
    }
    # (the snapshots ran before `before`: what moved is the live events alone)
    assert _moved(before, after, FRAMES, step="executed") == len(live_events)
    assert _moved(before, after, FRAMES, step="framed") == len(over[SSE]) + len(over[MULTIPART])
