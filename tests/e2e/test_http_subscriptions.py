"""jobProgress over plain HTTP, read off a real socket: graphql-sse (POST, and GET as a
browser's EventSource sends it with its session cookie) and Apollo's multipart
subscriptions; an SSE stream resumes by Last-Event-ID as a websocket does by afterSeq."""

import asyncio

import pytest
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore

from domains.jobs.attempts import job_attempt_start
from domains.jobs.models import JobKind, JobStatus
from domains.jobs.services import job_create
from schema.base import global_id
from testbed.factories import make_pending_job, make_token
from testbed.graphql import (
    HTTP_STREAMS,
    JOB_PROGRESS,
    MULTIPART,
    PROTOCOLS,
    SSE,
    SSE_GET,
    HTTPStream,
    Subscription,
    SubscriptionError,
)
from testbed.stack import Server
from testbed.waiting import job_in_status, wait_until
from tests.e2e.test_job_progress import _sales, _start_report

pytestmark = pytest.mark.e2e

TERMINAL = {"SUCCESS", "FAILURE", "CANCELLED"}


def _session_cookie(user) -> dict[str, str]:
    """A signed-in browser session, as the login page would leave it."""
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.save()
    return {settings.SESSION_COOKIE_NAME: session.session_key}


def _stream(live, job_id, transport, user, client, query=JOB_PROGRESS, **kwargs) -> HTTPStream:
    variables = {"id": job_id, **kwargs.pop("variables", {})}
    if transport == SSE_GET:  # EventSource: no headers of its own, the session cookie
        kwargs.setdefault("cookies", _session_cookie(user))
    else:
        kwargs.setdefault("token", client.token)
    return HTTPStream(live.server.graphql_url, query, variables, transport=transport, **kwargs)


async def _events(stream: HTTPStream) -> list[tuple[str | None, dict]]:
    async with stream:
        assert stream.response.status_code == 200, await stream.body()
        return [
            (event_id, payload["data"]["jobProgress"])
            for event_id, payload in await stream.collect_events()
        ]


def _follower(live, job_id, transport, user, client) -> Subscription | HTTPStream:
    """A real client of the transport, following the job."""
    if transport in PROTOCOLS:
        return Subscription(
            live.server.ws_url, JOB_PROGRESS, {"id": job_id}, token=client.token, protocol=transport
        )
    return _stream(live, job_id, transport, user, client)


@pytest.mark.parametrize("transport", [*PROTOCOLS, *HTTP_STREAMS])
def test_a_job_followed_over_every_transport_streams_snapshot_first_then_each_change_to_its_end(
    live, user, transport
):
    _sales(user, 8_000)
    client = live.client(user)
    job_id, job_pk = _start_report(client)
    running = job_in_status(job_pk, {JobStatus.PROGRESS})
    follower = _follower(live, job_id, transport, user, client)

    async def follow():
        async with follower:
            return [data["jobProgress"] for data in await follower.collect()], follower.completed

    events, completed = asyncio.run(follow())

    seqs = [e["seq"] for e in events]
    assert events[0]["status"] == "PROGRESS", "the current snapshot first, not its history"
    assert events[0]["seq"] >= running.seq > 1
    assert seqs == sorted(set(seqs)), "strictly increasing seq"
    assert [e["status"] in TERMINAL for e in events].count(True) == 1
    assert events[-1]["status"] == "SUCCESS"
    assert len(events) > 2, "the snapshot, then live changes"
    assert completed


@pytest.mark.parametrize("transport", [SSE, SSE_GET])
def test_sse_events_carry_their_seq_as_id(live, user, transport):
    _sales(user, 4_000)
    client = live.client(user)
    job_id, _ = _start_report(client)

    events = asyncio.run(_events(_stream(live, job_id, transport, user, client)))

    assert [event_id for event_id, _ in events] == [str(e["seq"]) for _, e in events]


def test_sse_stream_cut_mid_job_and_reopened_with_last_event_id_gets_exactly_the_missed(live, user):
    _sales(user, 8_000)
    client = live.client(user)
    job_id, _ = _start_report(client)

    async def cut_then_resume():
        async with _stream(live, job_id, SSE, user, client, variables={"afterSeq": 0}) as first:
            before = [await first.next_event() for _ in range(3)]
        last_id = before[-1][0]
        resumed = await _events(
            _stream(live, job_id, SSE, user, client, headers={"Last-Event-ID": last_id})
        )
        replayed = await _events(
            _stream(live, job_id, SSE, user, client, variables={"afterSeq": 0})
        )
        return before, resumed, replayed

    before, resumed, everything = asyncio.run(cut_then_resume())

    got = [payload["data"]["jobProgress"] for _, payload in before] + [e for _, e in resumed]
    assert got == [e for _, e in everything], "every event once: none missed, none twice"
    assert resumed[-1][1]["status"] == "SUCCESS"


def test_late_sse_subscriber_gets_the_terminal_event_then_completion(live, user):
    _sales(user, 20)
    client = live.client(user)
    job_id, job_pk = _start_report(client)
    finished = job_in_status(job_pk, {JobStatus.SUCCESS})

    events = asyncio.run(_events(_stream(live, job_id, SSE_GET, user, client)))

    assert [(event_id, e["status"]) for event_id, e in events] == [(str(finished.seq), "SUCCESS")]


@pytest.mark.parametrize("transport", [SSE, MULTIPART])
def test_another_users_job_is_refused_over_http_streams(live, user, other_user, transport):
    _sales(user, 10)
    job_id, _ = _start_report(live.client(user))
    intruder = live.client(other_user)

    async def intrude():
        async with _stream(live, job_id, transport, other_user, intruder) as stream:
            return stream.response.status_code, await stream.collect_events()

    status, events = asyncio.run(intrude())

    assert status == 200
    [(_, payload)] = events
    assert payload["data"] is None
    assert payload["errors"][0]["extensions"]["code"] == "PERMISSION_DENIED"


@pytest.mark.parametrize("transport", HTTP_STREAMS)
def test_anonymous_stream_is_refused_with_401(live, user, transport):
    _sales(user, 10)
    job_id, _ = _start_report(live.client(user))

    async def anonymous():
        stream = HTTPStream(
            live.server.graphql_url, JOB_PROGRESS, {"id": job_id}, transport=transport
        )
        async with stream:
            return stream.response.status_code, await stream.body()

    status, body = asyncio.run(anonymous())

    assert status == 401, body
    assert '"UNAUTHENTICATED"' in body


def test_sse_response_turns_proxy_buffering_off(live, user):
    _sales(user, 10)
    client = live.client(user)
    job_id, _ = _start_report(client)

    async def headers():
        async with _stream(live, job_id, SSE, user, client) as stream:
            return stream.response.headers

    received = asyncio.run(headers())

    assert received["content-type"].startswith("text/event-stream")
    assert received["x-accel-buffering"] == "no"
    assert "no-cache" in received["cache-control"]


SUBSCRIPTIONS_CAP = 3


@pytest.fixture
def capped_server(stack):
    """A server that lets a viewer run few subscriptions, so that a test reaches the cap."""
    server = Server(GRAPHQL_WS_MAX_SUBSCRIPTIONS_PER_USER=str(SUBSCRIPTIONS_CAP))
    yield server
    server.stop()


def _codes(errors: list[dict]) -> list[str]:
    return [e["extensions"]["code"] for e in errors]


async def _refused_over_http(server: Server, job_id: str, token: str, transport: str) -> list:
    """The error codes of a stream that the server answers with one error, then completes."""
    async with HTTPStream(
        server.graphql_url, JOB_PROGRESS, {"id": job_id}, transport=transport, token=token
    ) as stream:
        assert stream.response.status_code == 200, await stream.body()
        [(_, payload)] = await stream.collect_events()
        return _codes(payload["errors"])


async def _first_status(server: Server, job_id: str, token: str) -> str:
    async with HTTPStream(server.graphql_url, JOB_PROGRESS, {"id": job_id}, token=token) as stream:
        return (await stream.next())["jobProgress"]["status"]


async def _refused_over_ws(server: Server, job_id: str, token: str) -> list:
    async with Subscription(server.ws_url, JOB_PROGRESS, {"id": job_id}, token=token) as sub:
        with pytest.raises(SubscriptionError) as refused:
            await sub.next()
        return _codes(refused.value.payload)


def test_a_viewers_subscriptions_are_counted_once_across_websockets_and_http_streams(
    live, user, other_user, capped_server
):
    token, job_id = make_token(user), make_pending_job(user)
    bystander, bystanders_job = make_token(other_user), make_pending_job(other_user)
    server = capped_server

    async def scenario():
        held = [
            Subscription(server.ws_url, JOB_PROGRESS, {"id": job_id}, token=token),
            HTTPStream(server.graphql_url, JOB_PROGRESS, {"id": job_id}, token=token),
            HTTPStream(
                server.graphql_url, JOB_PROGRESS, {"id": job_id}, transport=MULTIPART, token=token
            ),
        ]
        assert len(held) == SUBSCRIPTIONS_CAP
        async with held[0], held[1], held[2]:
            for stream in held:
                await stream.next()  # its snapshot: it runs, and counts
            return (
                await _refused_over_http(server, job_id, token, SSE),
                await _refused_over_http(server, job_id, token, MULTIPART),
                await _refused_over_ws(server, job_id, token),
                await _first_status(server, bystanders_job, bystander),
            )

    over_sse, over_multipart, over_ws, bystanders = asyncio.run(scenario())

    assert over_sse == over_multipart == over_ws == ["TOO_MANY_SUBSCRIPTIONS"]
    assert bystanders == "PENDING", "another viewer's cap is their own"


def test_a_closed_http_stream_gives_its_place_under_the_cap_back(live, user, capped_server):
    token, job_id = make_token(user), make_pending_job(user)
    server = capped_server

    async def first_events(count: int) -> list[dict]:
        streams = [
            HTTPStream(server.graphql_url, JOB_PROGRESS, {"id": job_id}, token=token)
            for _ in range(count)
        ]
        async with streams[0], streams[1], streams[2]:
            return [await stream.next_event() for stream in streams]

    def all_run() -> bool:
        events = asyncio.run(first_events(SUBSCRIPTIONS_CAP))
        return all("data" in payload and payload["data"] for _, payload in events)

    assert all_run()
    # Each stream was cut by its client: the server gives the places back as it notices.
    assert wait_until(all_run, timeout=10, message="the cut streams' places to be free")


def _too_many_aliases() -> str:
    aliases = " ".join(f"a{n}: seq" for n in range(settings.GRAPHQL_MAX_ALIASES + 1))
    return f"subscription($id: ID!) {{ jobProgress(id: $id) {{ {aliases} }} }}"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_query_limits_hold_on_websockets(live, user, protocol):
    sub = Subscription(
        live.server.ws_url,
        _too_many_aliases(),
        {"id": make_pending_job(user)},
        token=make_token(user),
        protocol=protocol,
    )

    async def refused():
        async with sub:
            with pytest.raises(SubscriptionError) as error:
                await sub.next()
        return error.value.payload

    payload = asyncio.run(refused())

    # graphql-transport-ws sends its errors as a list, the legacy protocol one error.
    assert _codes(payload if protocol == PROTOCOLS[0] else [payload]) == ["TOO_MANY_ALIASES"]


@pytest.mark.parametrize("transport", HTTP_STREAMS)
def test_query_limits_hold_on_http_streams(live, user, transport):
    client = live.client(user)
    stream = _stream(live, make_pending_job(user), transport, user, client, _too_many_aliases())

    async def refused():
        async with stream:
            [(_, payload)] = await stream.collect_events()
        return payload

    assert _codes(asyncio.run(refused())["errors"]) == ["TOO_MANY_ALIASES"]


def test_open_http_streams_hold_no_request_slot(live, user):
    token, job_id = make_token(user), make_pending_job(user)
    client = live.client(user)
    streams = [
        HTTPStream(live.server.graphql_url, JOB_PROGRESS, {"id": job_id}, token=token)
        for _ in range(settings.SERVER_MAX_CONCURRENT_REQUESTS + 1)
    ]

    async def scenario():
        for stream in streams:
            await stream.__aenter__()
        try:
            snapshots = [(await stream.next())["jobProgress"]["status"] for stream in streams]
            answer = await asyncio.to_thread(client.data, "query { me { email } }")
            return snapshots, answer
        finally:
            for stream in streams:
                await stream.__aexit__(None, None, None)

    snapshots, answer = asyncio.run(scenario())

    assert snapshots == ["PENDING"] * len(streams), "every stream got its turn"
    assert answer == {"me": {"email": user.email}}, "and so does a plain request"


@pytest.fixture
def quick_heartbeat_server(stack):
    """A server whose streams send a heartbeat after a fifth of a second of quiet."""
    server = Server(GRAPHQL_STREAM_HEARTBEAT="0.2")
    yield server
    server.stop()


_HEARTBEATS = {SSE: ": ping\r\n\r\n", MULTIPART: "\r\n\r\n{}\r\n--graphql"}


@pytest.mark.parametrize("transport", [SSE, MULTIPART])
def test_a_quiet_stream_sends_heartbeats_and_then_its_next_event(
    live, user, transport, quick_heartbeat_server
):
    token = make_token(user)
    job = job_create(kind=JobKind.SALES_REPORT, owner=user)  # no task: it stays quiet
    job_id = str(global_id("Job", job.pk))
    server = quick_heartbeat_server

    async def scenario():
        async with HTTPStream(
            server.graphql_url, JOB_PROGRESS, {"id": job_id}, transport=transport, token=token
        ) as stream:
            first = (await stream.next())["jobProgress"]["status"]
            while stream._buffer.count(_HEARTBEATS[transport]) < 2:  # the raw stream so far
                stream._buffer += await asyncio.wait_for(anext(stream._chunks), 10)
            heard = stream._buffer.count(_HEARTBEATS[transport])
            await asyncio.to_thread(lambda: job_attempt_start(job_id=job.pk)[1].started())
            return first, heard, (await stream.next())["jobProgress"]["status"]

    first, heard, after = asyncio.run(scenario())

    assert first == "PENDING"
    assert heard >= 2
    assert after == "STARTED", "a heartbeat never stands in for the stream's events"
