"""The subscription hub: one Redis connection per process, slow clients get the latest
state, and a cut connection to Redis loses no event a subscriber needs."""

import asyncio
import json
import logging
from datetime import UTC, datetime

import psutil
import pytest
import redis

from domains.infra.redis import sync_client
from domains.jobs.attempts import job_attempt_start
from domains.jobs.events import event_from_job, job_channel
from domains.jobs.models import Job, JobKind, JobStatus
from domains.jobs.reporter import JobReporter
from domains.jobs.services import job_create
from domains.jobs.stream import (
    _IDLE_READ_SHARED_FOR,
    IDLE,
    Mailbox,
    Resync,
    _reload_when_idle,
    event_hub,
    job_events_stream,
    job_progress_stream,
)
from tests.fixtures.redis import redis_at, unreachable_redis_url

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
    earlier, later = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)
    mailbox.resync(since=later)
    mailbox.resync(since=earlier)
    assert asyncio.run(mailbox.get()) == Resync(since=earlier)


def test_an_idle_mailbox_says_so_after_its_timeout():
    assert asyncio.run(Mailbox(max_jobs=2).get(timeout=0.01)) is IDLE


def test_each_get_waits_its_whole_timeout_though_an_earlier_one_armed_the_idle_timer():
    # The mailbox keeps one idle timer across gets; each get's quiet period counts from its
    # own start (the event loop runs timers in order of their time: no race here).
    async def scenario():
        mailbox = Mailbox(max_jobs=2)
        mailbox.put({"job_id": 1, "seq": 1})
        handed = [await mailbox.get(timeout=0.2)]
        getting = asyncio.ensure_future(mailbox.get(timeout=0.2))
        await asyncio.sleep(0)  # it waits, its idle timer armed
        mailbox.put({"job_id": 1, "seq": 2})
        handed.append(await getting)
        await asyncio.sleep(0.1)
        getting = asyncio.ensure_future(mailbox.get(timeout=0.2))  # due after the first timer
        await asyncio.sleep(0.15)
        mailbox.put({"job_id": 1, "seq": 3})
        handed.append(await getting)
        handed.append(await mailbox.get(timeout=0.05))
        return handed

    assert asyncio.run(scenario()) == [
        {"job_id": 1, "seq": 1},
        {"job_id": 1, "seq": 2},
        {"job_id": 1, "seq": 3},
        IDLE,
    ]


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


def _fail_cut_off(job_id: int, error: str) -> None:
    """End the job from a process whose Redis is down: only the row hears of it."""
    with redis_at(unreachable_redis_url()):
        JobReporter(Job.objects.get(pk=job_id)).failed(error)


@pytest.mark.parametrize(
    "malformed",
    [
        "not json",
        '{"seq": 3}',
        '{"job_id": 1}',
        "[1, 2]",
        '{"job_id": 1, "seq": "x"}',
        '{"job_id": 1, "seq": 2, "status": [], "at": "x"}',  # (an unhashable status)
    ],
)
def test_a_malformed_message_is_skipped_and_the_hub_keeps_serving(user, malformed, caplog):
    caplog.set_level(logging.INFO, logger="domains.jobs.stream")
    job, reporter = _started_job(user)

    async def scenario():
        stream = job_progress_stream(job=job)
        first = await anext(stream)
        await _in_thread(sync_client().publish, job_channel(job.pk), malformed)
        await _in_thread(lambda: reporter.progress(current=1, total=2, force=True))
        after_malformed = await anext(stream)
        # A later subscriber (another job, so another Redis subscription) is served too.
        other, other_reporter = await _in_thread(_started_job, user)
        later = job_progress_stream(job=other)
        later_first = await anext(later)
        await _in_thread(other_reporter.succeeded)
        later_rest = [e async for e in later]
        await stream.aclose()
        return first, after_malformed, later_first, later_rest

    first, after_malformed, later_first, later_rest = asyncio.run(
        asyncio.wait_for(scenario(), timeout=20)
    )
    assert (first["status"], after_malformed["status"]) == (JobStatus.STARTED, JobStatus.PROGRESS)
    assert after_malformed["seq"] == first["seq"] + 1
    assert later_first["status"] == JobStatus.STARTED
    assert [e["status"] for e in later_rest] == [JobStatus.SUCCESS]
    logged = [r.getMessage() for r in caplog.records]
    # skipped as malformed, not a reader that failed and had every mailbox resync
    assert "stream.malformed_message" in logged
    assert "stream.reader_failed" not in logged
    assert "stream.reconnected" not in logged


def test_a_deployment_on_another_database_of_the_same_redis_is_not_heard(user, settings):
    """Pub/sub ignores the database number: a job of the same id on another database (another
    deployment, or another test process) publishes on a channel of its own."""
    job, reporter = _started_job(user)
    base, _, db = settings.REDIS_URL.rpartition("/")
    other_db = (int(db or 0) + 1) % 16
    other_deployment = redis.Redis.from_url(f"{base}/{other_db}")
    foreign = json.dumps(
        {**event_from_job(job), "seq": 999, "status": JobStatus.FAILURE}, default=str
    )

    async def scenario():
        stream = job_progress_stream(job=job)
        first = await anext(stream)
        await _in_thread(other_deployment.publish, f"db{other_db}:job:{{{job.pk}}}", foreign)
        await _in_thread(lambda: reporter.progress(current=1, total=2, force=True))
        after = await anext(stream)
        await stream.aclose()
        return first, after

    first, after = asyncio.run(asyncio.wait_for(scenario(), timeout=20))
    assert (after["seq"], after["status"]) == (first["seq"] + 1, JobStatus.PROGRESS)
    assert job_channel(job.pk) == f"db{int(db or 0)}:job:{{{job.pk}}}"


def test_a_stopped_reader_is_restarted_by_the_next_subscriber(user):
    job, reporter = _started_job(user)

    async def scenario():
        hub = event_hub()
        first = job_progress_stream(job=job)
        await anext(first)
        await first.aclose()
        hub._reader.cancel()  # as the loop's shutdown, or any error, stops it
        await asyncio.gather(hub._reader, return_exceptions=True)
        stream = job_progress_stream(job=job)
        again = await anext(stream)
        await _in_thread(reporter.succeeded)
        return again, [e async for e in stream]

    again, rest = asyncio.run(asyncio.wait_for(scenario(), timeout=20))
    assert again["status"] == JobStatus.STARTED
    assert [e["status"] for e in rest] == [JobStatus.SUCCESS]


def test_an_idle_subscription_ends_with_its_job_when_the_end_was_never_published(user, settings):
    """The job ended while its worker could not reach Redis: only the row knows."""
    settings.JOB_STREAM_IDLE_RECHECK = 0.2
    job, _ = _started_job(user)

    async def scenario():
        stream = job_progress_stream(job=job)
        first = await anext(stream)
        await _in_thread(_fail_cut_off, job.pk, "The export could not be written.")
        return first, [e async for e in stream]

    first, rest = asyncio.run(asyncio.wait_for(scenario(), timeout=20))
    assert [e["status"] for e in rest] == [JobStatus.FAILURE]
    assert rest[0]["seq"] > first["seq"]
    assert rest[0]["error"] == "The export could not be written."


def _cut_and_finish(*reporters: JobReporter) -> None:
    """Kill the hub's pub/sub connection, then end jobs while it is reconnecting."""
    assert sync_client().client_kill_filter(_type="pubsub") >= 1
    for reporter in reporters:
        reporter.succeeded({"ok": True})


@pytest.mark.parametrize("as_staff", [False, True])
def test_job_events_resyncs_the_viewers_jobs_after_a_reconnect(
    user, other_user, staff_user, as_staff
):
    viewer = staff_user if as_staff else user
    own, own_reporter = _started_job(user)
    foreign, foreign_reporter = _started_job(other_user)
    untouched, _ = _started_job(user)

    async def scenario():
        stream = job_events_stream(viewer=viewer)
        first = asyncio.ensure_future(anext(stream))
        while not first.done():  # until the stream is subscribed and hears one
            await _in_thread(lambda: own_reporter.progress(current=1, total=2, force=True))
            await asyncio.wait([first], timeout=0.1)
        received = [first.result()]
        await _in_thread(_cut_and_finish, own_reporter, foreign_reporter)
        wanted = {own.pk, foreign.pk} if as_staff else {own.pk}
        while {e["job_id"] for e in received if e["status"] == JobStatus.SUCCESS} != wanted:
            received.append(await anext(stream))
        await stream.aclose()
        return received

    received = asyncio.run(asyncio.wait_for(scenario(), timeout=30))
    ended = [e for e in received if e["status"] == JobStatus.SUCCESS]
    assert sorted(e["job_id"] for e in ended) == sorted(
        [own.pk, foreign.pk] if as_staff else [own.pk]
    )
    assert untouched.pk not in {e["job_id"] for e in received}
    own_seqs = [e["seq"] for e in received if e["job_id"] == own.pk]
    assert own_seqs == sorted(set(own_seqs))


def test_subscribers_of_a_job_that_go_quiet_together_share_one_read_of_its_row(user):
    job, _ = _started_job(user)

    async def scenario():
        together = await asyncio.gather(*(_reload_when_idle(job) for _ in range(50)))
        await asyncio.sleep(_IDLE_READ_SHARED_FOR + 0.1)  # past the sharing: read anew
        later = await _reload_when_idle(job)
        return together, later

    together, later = asyncio.run(scenario())

    assert len({id(row) for row in together}) == 1
    assert together[0].pk == job.pk
    assert later is not together[0]
    assert later.pk == job.pk


def test_quiet_subscribers_of_a_job_are_not_woken_until_its_row_moves(user, settings, monkeypatch):
    """An idle recheck reads the job's row once for all its subscribers and wakes none of
    them while the row shows nothing they have not seen: 1,000 idle subscribers would
    otherwise each resume their whole stream every JOB_STREAM_IDLE_RECHECK seconds."""
    settings.JOB_STREAM_IDLE_RECHECK = 0.1
    job, _ = _started_job(user)
    handed_idle = []
    real_get = Mailbox.get

    async def counting_get(self, timeout=None):
        item = await real_get(self, timeout)
        if item is IDLE:
            handed_idle.append(item)
        return item

    monkeypatch.setattr(Mailbox, "get", counting_get)

    async def scenario():
        streams = [job_progress_stream(job=job) for _ in range(20)]
        for stream in streams:
            await anext(stream)  # the snapshot
        rest = [asyncio.ensure_future(_drain(stream)) for stream in streams]
        await asyncio.sleep(1.0)  # ten recheck periods of a quiet job
        woken_while_quiet = len(handed_idle)
        await _in_thread(_fail_cut_off, job.pk, "The export could not be written.")
        return woken_while_quiet, await asyncio.gather(*rest)

    woken_while_quiet, rest = asyncio.run(asyncio.wait_for(scenario(), timeout=20))
    assert woken_while_quiet == 0
    assert [[e["status"] for e in events] for events in rest] == [[JobStatus.FAILURE]] * 20


async def _drain(stream) -> list[dict]:
    return [event async for event in stream]
