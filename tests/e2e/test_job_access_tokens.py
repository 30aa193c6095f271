"""A job token handed to a browser or a phone, against a real server and worker: it follows
its job to the end on every transport, reads nothing else (another job of the same owner
is not found, `me` is null, every mutation is refused), and stops at its expiry and at a
revoke, an open stream ending as any other does (4401, ACCESS_REVOKED)."""

import asyncio

import httpx
import pytest

from domains.accounts.models import User
from domains.reports.models import Report
from schema import schema
from testbed.factories import make_pending_job, make_token
from testbed.graphql import (
    JOB_PROGRESS,
    LEGACY_WS,
    MULTIPART,
    PROTOCOLS,
    SSE,
    TRANSPORT_WS,
    GraphQLClient,
    HTTPStream,
    Subscription,
    SubscriptionError,
)
from testbed.waiting import job_finished
from tests.e2e.test_access_revocation import REVOKE, Socket
from tests.e2e.test_job_progress import _sales, _start_report

pytestmark = pytest.mark.e2e

CREATE = """
mutation($jobId: ID!, $seconds: Int) {
  jobAccessTokenCreate(jobId: $jobId, expiresInSeconds: $seconds) {
    token expiresAt errors { field code }
  }
}
"""
JOB = "query($id: ID!) { job(id: $id) { id status } }"
ENDED_WITHIN = 10.0  # seconds: the expiry is checked at the moment it falls due


def _job_token(owner_client: GraphQLClient, job_id: str, seconds: int | None = None) -> str:
    variables = {"jobId": job_id} | ({"seconds": seconds} if seconds is not None else {})
    payload = owner_client.data(CREATE, variables)["jobAccessTokenCreate"]
    assert payload["errors"] == [], payload
    return payload["token"]


def _follower(live, job_id: str, token: str, transport: str):
    if transport in PROTOCOLS:
        return Subscription(
            live.server.ws_url, JOB_PROGRESS, {"id": job_id}, token=token, protocol=transport
        )
    return HTTPStream(
        live.server.graphql_url, JOB_PROGRESS, {"id": job_id}, transport=transport, token=token
    )


@pytest.mark.parametrize("transport", [TRANSPORT_WS, LEGACY_WS, SSE, MULTIPART])
def test_a_job_token_follows_its_job_to_the_end(live, user, transport):
    _sales(user, 8_000)
    owner = live.client(user)
    job_id, _ = _start_report(owner)
    token = _job_token(owner, job_id)

    async def follow():
        async with _follower(live, job_id, token, transport) as follower:
            return [r["jobProgress"] for r in await follower.collect(timeout=120)], follower

    events, follower = asyncio.run(follow())

    assert follower.completed
    assert events[-1]["status"] == "SUCCESS"
    assert {e["jobId"] for e in events} == {job_id}
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(set(seqs))
    # and over plain HTTP, the same token reads the job's row
    assert GraphQLClient(live.server.graphql_url, token).data(JOB, {"id": job_id}) == {
        "job": {"id": job_id, "status": "SUCCESS"}
    }


def _every_mutation() -> list[str]:
    return sorted(schema._schema.mutation_type.fields)


def test_a_job_token_reads_nothing_else_and_runs_no_mutation(live, user):
    owner = live.client(user)
    job_id, sibling = make_pending_job(user), make_pending_job(user)
    client = GraphQLClient(live.server.graphql_url, _job_token(owner, job_id))

    own = client.data(JOB, {"id": job_id})
    others = client.data(JOB, {"id": sibling})
    me = client.data("query { me { email } }")
    jobs = client.data("query { jobs(first: 5) { edges { node { id } } } }")
    refusals = {
        name: client.execute(f"mutation {{ {name} }}")["errors"] for name in _every_mutation()
    }

    assert own == {"job": {"id": job_id, "status": "PENDING"}}
    assert others == {"job": None}
    assert me == {"me": None}
    assert jobs == {"jobs": {"edges": []}}  # as an anonymous viewer's
    assert {"jobAccessTokenCreate", "tokenRevoke", "jobCancel"} <= set(refusals)
    assert {
        name: [e["extensions"]["code"] for e in errors] for name, errors in refusals.items()
    } == {name: ["JOB_TOKEN_READ_ONLY"] for name in refusals}


@pytest.mark.parametrize("transport", [TRANSPORT_WS, SSE])
def test_a_job_token_cannot_follow_another_job_of_its_owner(live, user, transport):
    owner = live.client(user)
    job_id, sibling = make_pending_job(user), make_pending_job(user)
    token = _job_token(owner, job_id)

    async def follow_sibling():
        async with _follower(live, sibling, token, transport) as follower:
            return await follower.next(timeout=30)

    with pytest.raises(SubscriptionError) as refused:
        asyncio.run(follow_sibling())

    assert [e["extensions"]["code"] for e in refused.value.payload] == ["PERMISSION_DENIED"]


def test_a_job_token_opens_no_file_of_its_job(live, user):
    """Files (a report's CSV, an image's derivatives) are the owner's, not the token's."""
    _sales(user, 100)
    owner = live.client(user)
    job_id, job_pk = _start_report(owner)
    token = _job_token(owner, job_id)
    assert job_finished(job_pk).status == "SUCCESS"
    url = f"{live.server.url}/files/reports/{Report.objects.get(job_id=job_pk).pk}/"

    as_owner = httpx.get(url, headers={"Authorization": f"Bearer {owner.token}"})
    as_token = httpx.get(url, headers={"Authorization": f"Bearer {token}"})

    assert (as_owner.status_code, as_token.status_code) == (200, 404)


def _revoke(live, user, token: str) -> None:
    owner = GraphQLClient(live.server.graphql_url, make_token(user))
    assert owner.data(REVOKE, {"token": token})["tokenRevoke"]["revoked"] is True


def test_a_revoked_job_token_closes_its_socket_with_4401(live, user):
    job_id = make_pending_job(user)
    token = _job_token(live.client(user), job_id)

    async def scenario():
        async with Socket(live.server.ws_url, token, TRANSPORT_WS) as socket:
            await socket.start("1", JOB_PROGRESS, {"id": job_id})
            first = await socket.receive()
            await asyncio.to_thread(_revoke, live, user, token)
            return first, await socket.closed(within=ENDED_WITHIN)

    first, (code, reason, _) = asyncio.run(scenario())

    assert first["payload"]["data"]["jobProgress"]["status"] == "PENDING"
    assert (code, reason) == (4401, "Token revoked")
    assert (
        httpx.post(
            live.server.graphql_url,
            json={"query": "query { me { email } }"},
            headers={"Authorization": f"Bearer {token}"},
        ).status_code
        == 401
    )


def _ending(live, job_id: str, token: str, transport: str, during=None) -> list[tuple]:
    """The (message, code) of the errors an HTTP stream of the job ended with."""

    async def scenario():
        async with _follower(live, job_id, token, transport) as stream:
            await stream.next()
            if during is not None:
                await asyncio.to_thread(during)
            events = await stream.collect_events(timeout=ENDED_WITHIN + 20)
            return events, stream.completed

    events, completed = asyncio.run(scenario())
    assert completed
    return [(e["message"], e["extensions"]["code"]) for _, p in events for e in p["errors"]]


def test_a_revoked_job_token_ends_its_sse_stream_with_access_revoked(live, user):
    job_id = make_pending_job(user)
    token = _job_token(live.client(user), job_id)

    ending = _ending(live, job_id, token, SSE, during=lambda: _revoke(live, user, token))

    assert ending == [("Token revoked", "ACCESS_REVOKED")]


def test_a_job_tokens_streams_end_at_its_expiry(live, user):
    job_id = make_pending_job(user)
    owner = live.client(user)
    by_socket, by_sse = _job_token(owner, job_id, seconds=5), _job_token(owner, job_id, seconds=5)

    async def socket_scenario():
        async with Socket(live.server.ws_url, by_socket, TRANSPORT_WS) as socket:
            await socket.start("1", JOB_PROGRESS, {"id": job_id})
            await socket.receive()
            return await socket.closed(within=ENDED_WITHIN + 20)

    async def both():
        return await asyncio.gather(
            socket_scenario(), asyncio.to_thread(_ending, live, job_id, by_sse, SSE)
        )

    (code, reason, _), sse_ending = asyncio.run(both())

    assert (code, reason) == (4401, "Token expired")
    assert sse_ending == [("Token expired", "ACCESS_REVOKED")]


def test_a_password_change_ends_a_job_tokens_stream(live, user):
    job_id = make_pending_job(user)
    token = _job_token(live.client(user), job_id)

    def change_password():
        account = User.objects.get(pk=user.pk)
        account.set_password("a-new-and-long-passphrase")
        account.save()

    ending = _ending(live, job_id, token, MULTIPART, during=change_password)

    assert ending == [("Password changed", "ACCESS_REVOKED")]
