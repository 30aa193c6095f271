"""The hub writes each live event's frame to every subscriber of a shared frame itself: many
subscribers of one job each get every event in order, then the end; a socket that reads
nothing holds nobody back."""

import asyncio
import json
import socket
from urllib.parse import urlparse

import pytest
import websockets

from domains.jobs.attempts import job_attempt_start
from domains.jobs.models import Job, JobKind
from domains.jobs.reporter import JobReporter
from domains.jobs.services import job_create
from schema.base import global_id
from testbed.graphql import (
    LEGACY_WS,
    MULTIPART,
    SSE,
    TRANSPORT_WS,
    HTTPStream,
    Subscription,
)
from testbed.stack import Server
from testbed.waiting import wait_until
from tests.config.test_metrics import _moved, _scrape

pytestmark = pytest.mark.e2e

FRAMES = "jobstream_subscription_frames_total"
DOCUMENT = """subscription($id: ID!, $afterSeq: Int) {
  jobProgress(id: $id, afterSeq: $afterSeq) { seq status current message }
}"""
SOCKETS, PER_SOCKET = 100, 10  # 1,000 subscribers
TICKS = 20


@pytest.fixture
def roomy_server(stack):
    """A server that lets one viewer hold 1,000 subscriptions, and closes a socket that read
    nothing for 3 seconds."""
    server = Server(
        GRAPHQL_WS_MAX_PER_USER=str(SOCKETS + 10),
        GRAPHQL_WS_MAX_SUBSCRIPTIONS=str(PER_SOCKET),
        GRAPHQL_WS_MAX_SUBSCRIPTIONS_PER_USER=str(SOCKETS * PER_SOCKET + 10),
        GRAPHQL_WS_STUCK_CLOSE="3",
    )
    yield server
    server.stop()


def _emit(job_id: int, ticks: int = TICKS, message_bytes: int = 10) -> None:
    reporter = JobReporter(Job.objects.get(pk=job_id))
    for step in range(1, ticks + 1):
        message = f"tick {step} ".ljust(message_bytes, ".")
        reporter.progress(current=step, total=ticks, message=message, force=True)
    reporter.succeeded({"ticks": ticks})


class _Socket:
    """One websocket carrying several subscriptions of one document (ids "1", "2", ...)."""

    def __init__(self, ws_url: str, token: str, variables: dict, operations: int):
        self.ws_url, self.token, self.variables = ws_url, token, variables
        self.results: dict[str, list[dict]] = {str(n): [] for n in range(1, operations + 1)}
        self.completed: set[str] = set()

    async def open(self) -> None:
        self.ws = await websockets.connect(
            self.ws_url, subprotocols=[TRANSPORT_WS], max_queue=None, open_timeout=120
        )
        init = {"Authorization": f"Bearer {self.token}"}
        await self.ws.send(json.dumps({"type": "connection_init", "payload": init}))
        assert json.loads(await self.ws.recv())["type"] == "connection_ack"
        for operation in self.results:
            payload = {"query": DOCUMENT, "variables": self.variables}
            await self.ws.send(
                json.dumps({"id": operation, "type": "subscribe", "payload": payload})
            )

    async def read_until(self, done) -> None:
        while not done(self):
            message = json.loads(await self.ws.recv())
            if message["type"] == "ping":
                await self.ws.send(json.dumps({"type": "pong"}))
            elif message["type"] == "next":
                assert "errors" not in message["payload"], message
                self.results[message["id"]].append(message["payload"]["data"]["jobProgress"])
            elif message["type"] == "complete":
                self.completed.add(message["id"])
            else:
                raise AssertionError(message)


def test_a_thousand_subscribers_of_one_job_each_get_every_event_in_order_then_the_end(
    live, user, staff_user, roomy_server
):
    job = job_create(kind=JobKind.SALES_REPORT, owner=user)
    job_attempt_start(job_id=job.pk)[1].started()  # seq 1
    variables = {"id": str(global_id("Job", job.pk)), "afterSeq": 0}
    token = live.client(user).token

    async def run():
        sockets = [
            _Socket(roomy_server.ws_url, token, variables, PER_SOCKET) for _ in range(SOCKETS)
        ]
        for batch in range(0, SOCKETS, 20):
            await asyncio.gather(*(s.open() for s in sockets[batch : batch + 20]))
        # every subscriber holds its first event (seq 1): all of them are live
        await asyncio.gather(*(s.read_until(lambda s: all(s.results.values())) for s in sockets))
        before = await asyncio.to_thread(_scrape, live, staff_user)
        await asyncio.to_thread(_emit, job.pk)
        await asyncio.wait_for(
            asyncio.gather(
                *(s.read_until(lambda s: len(s.completed) == PER_SOCKET) for s in sockets)
            ),
            300,
        )
        for s in sockets:
            await s.ws.close()
        return before, sockets

    before, sockets = asyncio.run(run())
    after = _scrape(live, staff_user)  # (the servers' metrics are added up)

    every_seq = list(range(1, TICKS + 3))  # started, each tick, the end
    received = [events for s in sockets for events in s.results.values()]
    assert len(received) == SOCKETS * PER_SOCKET
    for events in received:
        assert [e["seq"] for e in events] == every_seq
        assert [e["current"] for e in events[1:-1]] == list(range(1, TICKS + 1))
        assert events[-1]["status"] == "SUCCESS"
    assert all(s.completed == set(s.results) for s in sockets)
    # the live frames were written by the hub itself, not by a task per subscriber
    live_frames = SOCKETS * PER_SOCKET * (TICKS + 1)
    # The hub writes to a subscriber that waits; one still busy with the last frame gets
    # the next through its own path (a loaded machine makes more of those): counts, not shares.
    assert 1 <= _moved(before, after, FRAMES, step="written") <= live_frames


# Enough to fill what the kernel and the server's transport buffer for a socket that reads
# nothing, many times over: its write buffer climbs above the high-water mark.
BIG_TICKS, BIG_MESSAGE = 120, 60_000


@pytest.fixture
def patient_server(stack):
    """A server that lets a socket read nothing for ten minutes before it closes it."""
    server = Server(GRAPHQL_WS_STUCK_CLOSE="600")
    yield server
    server.stop()


async def _stuck_socket(ws_url: str, token: str, variables: dict):
    """A subscriber that reads nothing until told: a tiny receive buffer, one frame queued."""
    address = urlparse(ws_url)
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect((address.hostname, address.port))
    raw.setblocking(False)
    ws = await websockets.connect(
        ws_url, sock=raw, subprotocols=[TRANSPORT_WS], max_queue=1, open_timeout=60
    )
    init = {"Authorization": f"Bearer {token}"}
    await ws.send(json.dumps({"type": "connection_init", "payload": init}))
    assert json.loads(await ws.recv())["type"] == "connection_ack"
    payload = {"query": DOCUMENT, "variables": variables}
    await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": payload}))
    first = json.loads(await ws.recv())
    assert first["type"] == "next", first
    return ws


async def _readers_get_every_event(server, token, variables, stuck_variables):
    """Two subscribers that read (both protocols, every event), one that does not; the
    job's events emitted meanwhile. The readers' events, and the stuck socket."""
    readers = [
        Subscription(server.ws_url, DOCUMENT, variables, token=token, protocol=protocol)
        for protocol in (TRANSPORT_WS, LEGACY_WS)
    ]
    for reader in readers:
        await reader.__aenter__()
    stuck = await _stuck_socket(server.ws_url, token, stuck_variables)
    firsts = [await reader.next() for reader in readers]
    return readers, stuck, firsts


def _check_readers(firsts, rests):
    every_seq = list(range(1, BIG_TICKS + 3))
    for first, rest in zip(firsts, rests, strict=True):
        events = [r["jobProgress"] for r in [first, *rest]]
        assert [e["seq"] for e in events] == every_seq
        assert events[-1]["status"] == "SUCCESS"


def test_a_socket_that_reads_nothing_holds_nobody_back_and_then_gets_the_latest_and_the_end(
    live, user, patient_server
):
    job = job_create(kind=JobKind.SALES_REPORT, owner=user)
    job_attempt_start(job_id=job.pk)[1].started()
    job_gid = str(global_id("Job", job.pk))
    token = live.client(user).token

    async def run():
        readers, stuck, firsts = await _readers_get_every_event(
            patient_server, token, {"id": job_gid, "afterSeq": 0}, {"id": job_gid}
        )
        emitting = asyncio.create_task(asyncio.to_thread(_emit, job.pk, BIG_TICKS, BIG_MESSAGE))
        rests = await asyncio.gather(*(reader.collect(timeout=300) for reader in readers))
        await emitting
        # the readers are done; now the stuck one reads what the server kept for it
        frames = []
        while (message := json.loads(await asyncio.wait_for(stuck.recv(), 60)))["type"] != (
            "complete"
        ):
            assert message["type"] in ("next", "ping"), message
            if message["type"] == "next":
                frames.append(message["payload"]["data"]["jobProgress"])
        for reader in readers:
            await reader.__aexit__(None, None, None)
        await stuck.close()
        return firsts, rests, frames

    firsts, rests, stuck_frames = asyncio.run(run())

    _check_readers(firsts, rests)
    seqs = [f["seq"] for f in stuck_frames]
    assert seqs == sorted(set(seqs))  # in order, none twice
    assert stuck_frames[-1]["status"] == "SUCCESS"  # the end, always
    assert len(stuck_frames) < BIG_TICKS + 1  # it was skipped: the latest state, not each tick


async def _read_until_closed(ws) -> None:
    """Reads what the socket holds; the subscription never completes before it closes."""
    while True:
        assert json.loads(await asyncio.wait_for(ws.recv(), 60))["type"] != "complete"


def test_a_socket_that_stays_stuck_is_closed_with_a_reason_and_nobody_waits_for_it(
    live, user, roomy_server
):
    job = job_create(kind=JobKind.SALES_REPORT, owner=user)
    job_attempt_start(job_id=job.pk)[1].started()
    job_gid = str(global_id("Job", job.pk))
    token = live.client(user).token
    variables = {"id": job_gid, "afterSeq": 0}

    async def run():
        readers, stuck, firsts = await _readers_get_every_event(
            roomy_server, token, variables, variables
        )
        emitting = asyncio.create_task(asyncio.to_thread(_emit, job.pk, BIG_TICKS, BIG_MESSAGE))
        rests = await asyncio.gather(*(reader.collect(timeout=300) for reader in readers))
        await emitting
        await asyncio.to_thread(
            wait_until,
            lambda: any("ws.too_slow" in line for line in roomy_server.log_lines()),
            120,
            "the server to close the stuck socket",
        )
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await _read_until_closed(stuck)
        for reader in readers:
            await reader.__aexit__(None, None, None)
        return firsts, rests, closed.value

    firsts, rests, closed = asyncio.run(run())

    _check_readers(firsts, rests)
    # its close frame, when the client read in time to take it; else the connection cut
    assert (closed.rcvd.code if closed.rcvd else 1006) in (1008, 1006)


def test_sse_and_multipart_streams_take_their_live_frames_from_the_hub_with_their_ids(
    live, user, staff_user
):
    job = job_create(kind=JobKind.SALES_REPORT, owner=user)
    job_attempt_start(job_id=job.pk)[1].started()
    variables = {"id": str(global_id("Job", job.pk)), "afterSeq": 0}
    token = live.client(user).token
    transports = [SSE, SSE, MULTIPART]

    async def run():
        streams = [
            HTTPStream(live.server.graphql_url, DOCUMENT, variables, transport=t, token=token)
            for t in transports
        ]
        for stream in streams:
            await stream.__aenter__()
        firsts = [await stream.next_event() for stream in streams]  # every one is live now
        before = await asyncio.to_thread(_scrape, live, staff_user)
        await asyncio.to_thread(_emit, job.pk)
        rests = await asyncio.gather(*(stream.collect_events(timeout=120) for stream in streams))
        for stream in streams:
            await stream.__aexit__(None, None, None)
        return before, firsts, rests

    before, firsts, rests = asyncio.run(run())
    after = _scrape(live, staff_user)

    every_seq = list(range(1, TICKS + 3))
    for transport, first, rest in zip(transports, firsts, rests, strict=True):
        events = [first, *rest]
        assert [p["data"]["jobProgress"]["seq"] for _, p in events] == every_seq
        assert all(p["extensions"]["cost"] > 0 for _, p in events)  # as every frame had
        # an SSE event's id is its seq (Last-Event-ID resumes there); a part has none
        expected_ids = [str(seq) for seq in every_seq] if transport == SSE else [None] * len(events)
        assert [event_id for event_id, _ in events] == expected_ids
        assert events[-1][1]["data"]["jobProgress"]["status"] == "SUCCESS"
    live_frames = len(transports) * (TICKS + 1)
    # The hub writes to a subscriber that waits; one still busy with the last frame gets
    # the next through its own path (a loaded machine makes more of those): counts, not shares.
    assert 1 <= _moved(before, after, FRAMES, step="written") <= live_frames
