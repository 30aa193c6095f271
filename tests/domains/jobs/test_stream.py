"""The subscription hub: one Redis connection per process, slow clients get the latest
state, and a cut connection to Redis loses no event a subscriber needs."""

import asyncio

import psutil
import pytest

from domains.jobs.models import JobKind, JobStatus
from domains.jobs.progress import job_attempt_start
from domains.jobs.services import job_create
from domains.jobs.stream import RESYNC, Mailbox, event_hub, job_progress_stream
from domains.redis import sync_client

pytestmark = pytest.mark.django_db(transaction=True)


def _started_job(user):
    job = job_create(kind=JobKind.SALES_REPORT, owner=user)
    _, reporter = job_attempt_start(job_id=job.pk)
    reporter.started()
    return job, reporter


def _hub_connections() -> int:
    """Pub/sub connections of this process (the suite's server process holds its own)."""
    own_ports = {c.laddr.port for c in psutil.Process().net_connections("tcp")}
    return sum(
        1
        for c in sync_client().client_list()
        if c["name"] == "jobstream-pubsub" and int(c["addr"].rsplit(":", 1)[1]) in own_ports
    )


async def _in_thread(function, *args):
    return await asyncio.get_running_loop().run_in_executor(None, function, *args)


def test_a_slow_subscriber_is_handed_the_latest_state_of_each_job():
    mailbox = Mailbox(max_jobs=2)
    for seq in range(1, 101):
        mailbox.put({"job_id": 1, "seq": seq})
    mailbox.put({"job_id": 2, "seq": 7})
    mailbox.put({"job_id": 1, "seq": 50})  # late and stale: ignored

    assert asyncio.run(mailbox.get()) == {"job_id": 1, "seq": 100}
    assert asyncio.run(mailbox.get()) == {"job_id": 2, "seq": 7}


def test_a_full_mailbox_drops_the_oldest_job_not_the_newest():
    mailbox = Mailbox(max_jobs=2)
    for job_id in (1, 2, 3):
        mailbox.put({"job_id": job_id, "seq": 1})

    assert [asyncio.run(mailbox.get())["job_id"] for _ in range(2)] == [2, 3]


def test_resync_is_delivered_before_buffered_events():
    mailbox = Mailbox(max_jobs=2)
    mailbox.put({"job_id": 1, "seq": 1})
    mailbox.resync()
    assert asyncio.run(mailbox.get()) is RESYNC


def test_many_subscriptions_share_one_redis_connection(user):
    jobs = [_started_job(user) for _ in range(30)]

    async def scenario():
        streams = [job_progress_stream(job=job) for job, _ in jobs]
        firsts = await asyncio.gather(*(anext(s) for s in streams))
        connections = await _in_thread(_hub_connections)
        for stream in streams:
            await stream.aclose()
        return firsts, connections, event_hub().channel_count

    firsts, connections, channels_after = asyncio.run(scenario())
    assert [e["status"] for e in firsts] == [JobStatus.STARTED] * 30
    assert connections == 1
    assert channels_after == 0


def test_a_cut_redis_connection_loses_no_event(user):
    job, reporter = _started_job(user)

    def work_while_cut():
        # Kill the hub's pub/sub connection, then publish while it is reconnecting.
        killed = sync_client().client_kill_filter(_type="pubsub")
        assert killed >= 1
        for done in range(1, 6):
            reporter.progress(current=done, total=5, force=True)
        reporter.succeeded({"ok": True})

    async def scenario():
        received = []
        stream = job_progress_stream(job=job)
        received.append(await anext(stream))
        await _in_thread(work_while_cut)
        async for event in stream:
            received.append(event)
        return received

    received = asyncio.run(asyncio.wait_for(scenario(), timeout=30))
    seqs = [e["seq"] for e in received]
    assert seqs == sorted(set(seqs)), "seq must strictly increase"
    assert received[-1]["status"] == JobStatus.SUCCESS
    assert received[-1]["result"] == {"ok": True}


def test_resume_after_seq_replays_exactly_the_missed_events(user):
    job, reporter = _started_job(user)
    for done in range(1, 11):
        reporter.progress(current=done, total=10, force=True)
    reporter.succeeded()

    async def scenario():
        return [e async for e in job_progress_stream(job=job, after_seq=4)]

    replayed = asyncio.run(asyncio.wait_for(scenario(), timeout=10))
    assert [e["seq"] for e in replayed] == list(range(5, reporter.seq + 1))
    assert replayed[-1]["status"] == JobStatus.SUCCESS


def test_a_resuming_subscriber_gets_every_event_even_when_it_reads_slowly(user):
    """Live events a slow reader's mailbox coalesced are filled in from the log."""
    job, reporter = _started_job(user)

    def publish_burst():
        for done in range(1, 11):
            reporter.progress(current=done, total=10, force=True)
        reporter.succeeded()

    async def scenario():
        stream = job_progress_stream(job=job, after_seq=0)
        first = await anext(stream)  # subscribed from here on
        await _in_thread(publish_burst)  # nobody reads: the mailbox keeps only the latest
        await asyncio.sleep(0.2)
        return [first, *[e async for e in stream]]

    received = asyncio.run(asyncio.wait_for(scenario(), timeout=10))
    assert [e["seq"] for e in received] == list(range(1, reporter.seq + 1))
    assert received[-1]["status"] == JobStatus.SUCCESS
