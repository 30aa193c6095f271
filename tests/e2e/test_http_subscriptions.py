"""jobProgress over plain HTTP, read off a real socket: graphql-sse (POST, and GET as a
browser's EventSource sends it with its session cookie) and Apollo's multipart
subscriptions; an SSE stream resumes by Last-Event-ID as a websocket does by afterSeq."""

import asyncio

import pytest
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore

from domains.jobs.models import JobStatus
from tests.e2e.test_job_progress import _sales, _start_report
from tests.fixtures.graphql import (
    HTTP_STREAMS,
    JOB_PROGRESS,
    MULTIPART,
    SSE,
    SSE_GET,
    HTTPStream,
)
from tests.fixtures.waiting import job_in_status

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


def _stream(live, job_id, transport, user, client, **kwargs) -> HTTPStream:
    variables = {"id": job_id, **kwargs.pop("variables", {})}
    if transport == SSE_GET:  # EventSource: no headers of its own, the session cookie
        kwargs.setdefault("cookies", _session_cookie(user))
    else:
        kwargs.setdefault("token", client.token)
    return HTTPStream(
        live.server.graphql_url, JOB_PROGRESS, variables, transport=transport, **kwargs
    )


async def _events(stream: HTTPStream) -> list[tuple[str | None, dict]]:
    async with stream:
        assert stream.response.status_code == 200, await stream.body()
        return [
            (event_id, payload["data"]["jobProgress"])
            for event_id, payload in await stream.collect_events()
        ]


@pytest.mark.parametrize("transport", HTTP_STREAMS)
def test_a_job_followed_over_http_streams_snapshot_first_then_each_change_to_its_end(
    live, user, transport
):
    _sales(user, 4_000)
    client = live.client(user)
    job_id, _ = _start_report(client)

    events = asyncio.run(_events(_stream(live, job_id, transport, user, client)))

    seqs = [e["seq"] for _, e in events]
    assert seqs == sorted(set(seqs)), "strictly increasing seq"
    assert [e["status"] in TERMINAL for _, e in events].count(True) == 1
    assert events[-1][1]["status"] == "SUCCESS"
    if transport != MULTIPART:
        assert [event_id for event_id, _ in events] == [str(s) for s in seqs], "id: <seq>"
    assert len(events) > 2, "the snapshot, then live changes"


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
