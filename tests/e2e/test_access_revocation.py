"""A connection lives only as long as its credentials: revoking its token or deactivating
its user closes a websocket at once (4401 with the reason), and nothing runs on it
afterwards; an HTTP stream (SSE, multipart) ends with an ACCESS_REVOKED error event, then
completes."""

import asyncio
import json

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from domains.accounts.models import User
from domains.orders.models import Order
from testbed.factories import make_pending_job, make_product, make_token
from testbed.graphql import (
    JOB_PROGRESS,
    LEGACY_WS,
    MULTIPART,
    PROTOCOLS,
    SSE,
    SSE_GET,
    TRANSPORT_WS,
    GraphQLClient,
    HTTPStream,
)
from tests.e2e.test_http_subscriptions import _session_cookie

pytestmark = pytest.mark.e2e

JOB_EVENTS = "subscription { jobEvents { jobId status } }"
GENERATE = """
mutation($input: SalesReportInput!) { salesReportGenerate(input: $input) { job { id } errors { code } } }
"""
REVOKE = "mutation($token: String!) { tokenRevoke(token: $token) { revoked errors { code } } }"
ORDER_CREATE = """
mutation($input: OrderCreateInput!) { orderCreate(input: $input) { order { id } errors { code } } }
"""
CLOSED_WITHIN = 1.0  # seconds: what the contract promises


class Socket:
    """A raw websocket in one subprotocol, to see every frame and the close frame."""

    def __init__(self, url: str, token: str, protocol: str):
        self.url, self.token, self.protocol = url, token, protocol

    async def __aenter__(self) -> "Socket":
        self.ws = await websockets.connect(self.url, subprotocols=[self.protocol])
        await self.send("connection_init", payload={"Authorization": f"Bearer {self.token}"})
        assert (await self.receive())["type"] == "connection_ack"
        return self

    async def __aexit__(self, *exc) -> None:
        await self.ws.close()

    async def send(self, kind: str, **fields) -> None:
        await self.ws.send(json.dumps({"type": kind, **fields}))

    async def start(self, operation_id: str, query: str, variables: dict | None = None) -> None:
        kind = "subscribe" if self.protocol == TRANSPORT_WS else "start"
        await self.send(
            kind, id=operation_id, payload={"query": query, "variables": variables or {}}
        )

    async def receive(self, timeout: float = 30) -> dict:
        while True:
            message = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
            if message["type"] not in ("ka", "ping", "pong"):
                return message

    async def closed(self, within: float) -> tuple[int, str, list[dict]]:
        """The close code and reason, and any frame that came before it."""
        frames = []
        async with asyncio.timeout(within):
            try:
                while True:
                    frames.append(json.loads(await self.ws.recv()))
            except ConnectionClosed as closed:
                return closed.rcvd.code, closed.rcvd.reason, frames


def _start_report(client: GraphQLClient) -> str:
    today = "2026-01-01"
    payload = client.data(GENERATE, {"input": {"startDate": today, "endDate": today}})
    return payload["salesReportGenerate"]["job"]["id"]


def _job_events(frames: list[dict]) -> list[dict]:
    return [f["payload"]["data"]["jobEvents"] for f in frames if f["type"] in ("next", "data")]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_revoking_the_token_closes_its_socket_and_its_subscriptions_end(live, user, protocol):
    token = make_token(user)
    client = GraphQLClient(live.server.graphql_url, token)
    same_user_elsewhere = live.client(user)  # another token of the same user

    async def scenario():
        async with Socket(live.server.ws_url, token, protocol) as socket:
            await socket.start("events", JOB_EVENTS)
            first_job = _start_report(client)
            while (await socket.receive())["payload"]["data"]["jobEvents"]["jobId"] != first_job:
                pass  # the subscription is live and delivering
            assert client.data(REVOKE, {"token": token})["tokenRevoke"]["revoked"] is True
            code, reason, frames = await socket.closed(within=CLOSED_WITHIN)
            later_job = _start_report(same_user_elsewhere)
            return code, reason, frames, later_job

    code, reason, frames, later_job = asyncio.run(scenario())

    assert (code, reason) == (4401, "Token revoked")
    assert later_job not in {event["jobId"] for event in _job_events(frames)}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_operation_sent_after_the_revoke_does_not_run(live, user, protocol):
    token = make_token(user)
    product = make_product()

    async def scenario():
        async with Socket(live.server.ws_url, token, protocol) as socket:
            revoked = GraphQLClient(live.server.graphql_url, token).data(REVOKE, {"token": token})
            assert revoked["tokenRevoke"]["revoked"] is True
            # Sent at once, racing the revocation signal: refused all the same.
            await socket.start(
                "order",
                ORDER_CREATE,
                {"input": {"items": [{"productId": str(product.pk), "quantity": 1}]}},
            )
            return await socket.closed(within=CLOSED_WITHIN)

    code, reason, frames = asyncio.run(scenario())

    assert (code, reason) == (4401, "Token revoked")
    assert not [f for f in frames if f.get("id") == "order"]
    assert not Order.objects.filter(customer=user).exists()


def test_deactivating_the_user_closes_every_socket_of_theirs(live, user, other_user):
    tokens = [make_token(user), make_token(user)]
    bystander = make_token(other_user)

    async def scenario():
        async with (
            Socket(live.server.ws_url, tokens[0], TRANSPORT_WS) as first,
            Socket(live.server.ws_url, tokens[1], LEGACY_WS) as second,
            Socket(live.server.ws_url, bystander, TRANSPORT_WS) as unaffected,
        ):
            deactivated = await User.objects.aget(pk=user.pk)
            deactivated.is_active = False
            await deactivated.asave()  # as the admin saves it
            closes = [await first.closed(CLOSED_WITHIN), await second.closed(CLOSED_WITHIN)]
            await unaffected.start("me", "query { me { email } }")
            return closes, await unaffected.receive()

    closes, bystander_answer = asyncio.run(scenario())

    assert [(code, reason) for code, reason, _ in closes] == [(4401, "Account deactivated")] * 2
    assert bystander_answer["payload"]["data"] == {"me": {"email": other_user.email}}


def _http_stream(live, job_id: str, transport: str, token: str) -> HTTPStream:
    return HTTPStream(
        live.server.graphql_url, JOB_PROGRESS, {"id": job_id}, transport=transport, token=token
    )


async def _rest_of(stream: HTTPStream) -> list[dict]:
    """Every payload until the server completes the stream, within the contract's time."""
    return [payload for _, payload in await stream.collect_events(timeout=CLOSED_WITHIN)]


@pytest.mark.parametrize("transport", [SSE, MULTIPART])
def test_revoking_the_token_ends_its_http_streams_with_a_coded_error(live, user, transport):
    token = make_token(user)
    job_id = make_pending_job(user)

    async def scenario():
        async with _http_stream(live, job_id, transport, token) as stream:
            snapshot = await stream.next()
            revoked = await asyncio.to_thread(
                GraphQLClient(live.server.graphql_url, token).data, REVOKE, {"token": token}
            )
            assert revoked["tokenRevoke"]["revoked"] is True
            return snapshot, await _rest_of(stream), stream.completed

    snapshot, rest, completed = asyncio.run(scenario())

    assert snapshot["jobProgress"]["status"] == "PENDING"
    [ending] = rest
    assert ending["data"] is None
    assert [(e["message"], e["extensions"]["code"]) for e in ending["errors"]] == [
        ("Token revoked", "ACCESS_REVOKED")
    ]
    assert completed


def test_revoking_another_token_leaves_a_stream_open(live, user):
    token, other_token = make_token(user), make_token(user)
    job_id = make_pending_job(user)

    async def scenario():
        async with _http_stream(live, job_id, SSE, token) as stream:
            await stream.next()
            await asyncio.to_thread(
                GraphQLClient(live.server.graphql_url, other_token).data,
                REVOKE,
                {"token": other_token},
            )
            with pytest.raises(TimeoutError):
                await stream.next_event(timeout=CLOSED_WITHIN)
            return stream.completed

    assert asyncio.run(scenario()) is False


def test_deactivating_the_user_ends_their_session_and_token_streams(live, user, other_user):
    job_id, bystanders_job = make_pending_job(user), make_pending_job(other_user)
    by_token = _http_stream(live, job_id, MULTIPART, make_token(user))
    unaffected = _http_stream(live, bystanders_job, SSE, make_token(other_user))
    session = HTTPStream(
        live.server.graphql_url,
        JOB_PROGRESS,
        {"id": job_id},
        transport=SSE_GET,
        cookies=_session_cookie(user),
    )

    async def scenario():
        async with session, by_token, unaffected:
            for stream in (session, by_token, unaffected):
                await stream.next()
            deactivated = await User.objects.aget(pk=user.pk)
            deactivated.is_active = False
            await deactivated.asave()  # as the admin saves it
            endings = [await _rest_of(session), await _rest_of(by_token)]
            with pytest.raises(TimeoutError):
                await unaffected.next_event(timeout=CLOSED_WITHIN)
            return endings

    endings = asyncio.run(scenario())

    assert [
        [(e["message"], e["extensions"]["code"]) for p in ending for e in p["errors"]]
        for ending in endings
    ] == [[("Account deactivated", "ACCESS_REVOKED")]] * 2


async def _session_socket(live, cookies: dict[str, str]):
    """A websocket signed in by the session cookie alone, as the console's page opens it."""
    cookie = "; ".join(f"{name}={value}" for name, value in cookies.items())
    ws = await websockets.connect(
        live.server.ws_url, subprotocols=[TRANSPORT_WS], additional_headers={"Cookie": cookie}
    )
    await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
    assert json.loads(await ws.recv())["type"] == "connection_ack"
    return ws


def _session_ending(live, user, change) -> tuple[list[dict], tuple[int, str], bool]:
    """A session's SSE stream and websocket, and a token stream of the same user, across
    `change` (run on the user's row and the session's cookies): what the session's stream and socket
    got, and whether the token's stream was left open."""
    cookies = _session_cookie(user)
    job_id = make_pending_job(user)
    by_session = HTTPStream(
        live.server.graphql_url, JOB_PROGRESS, {"id": job_id}, transport=SSE_GET, cookies=cookies
    )
    by_token = _http_stream(live, job_id, SSE, make_token(user))

    async def scenario():
        ws = await _session_socket(live, cookies)
        async with by_session, by_token:
            await by_session.next()
            await by_token.next()
            await change(await User.objects.aget(pk=user.pk), cookies)
            ending = await _rest_of(by_session)
            try:
                async with asyncio.timeout(CLOSED_WITHIN):
                    await ws.wait_closed()
            finally:
                await ws.close()
            with pytest.raises(TimeoutError):
                await by_token.next_event(timeout=CLOSED_WITHIN)
            return ending, (ws.close_code, ws.close_reason), not by_token.completed

    return asyncio.run(scenario())


def test_changing_the_password_ends_the_sessions_streams_not_its_tokens(live, user):
    async def change_password(account, cookies):
        account.set_password("a-new-and-long-passphrase")
        await account.asave()  # as the admin's password form saves it

    ending, socket_closed, token_stream_open = _session_ending(live, user, change_password)

    assert [(e["message"], e["extensions"]["code"]) for p in ending for e in p["errors"]] == [
        ("Password changed", "ACCESS_REVOKED")
    ]
    assert socket_closed == (4401, "Password changed")
    assert token_stream_open


def test_signing_out_ends_the_sessions_streams(live, user):
    async def sign_out(account, cookies):
        """The console's sign-out: sessionEnd from the same browser (cookies, CSRF)."""
        async with httpx.AsyncClient(cookies=cookies) as browser:
            assert (await browser.get(live.server.url + "/console/")).status_code == 200
            answer = await browser.post(
                live.server.graphql_url,
                json={"query": "mutation { sessionEnd { ended } }"},
                headers={"X-CSRFToken": browser.cookies["csrftoken"]},
            )
        assert answer.json()["data"] == {"sessionEnd": {"ended": True}}

    ending, socket_closed, token_stream_open = _session_ending(live, user, sign_out)

    assert [(e["message"], e["extensions"]["code"]) for p in ending for e in p["errors"]] == [
        ("Signed out", "ACCESS_REVOKED")
    ]
    assert socket_closed == (4401, "Signed out")
    assert token_stream_open


def test_sockets_of_one_token_share_its_watch_and_each_is_closed_when_it_is_revoked(live, user):
    """Connections presenting the same credentials are watched together (one check and one
    subscription for all of them): one leaving keeps the others watched, one joining later
    is watched too, and a revocation closes every one still open."""
    token = make_token(user)

    async def scenario():
        async with (
            Socket(live.server.ws_url, token, TRANSPORT_WS) as first,
            Socket(live.server.ws_url, token, LEGACY_WS) as second,
        ):
            async with Socket(live.server.ws_url, token, TRANSPORT_WS) as leaving:
                await leaving.start("me", "query { me { email } }")
                assert (await leaving.receive())["payload"]["data"] == {"me": {"email": user.email}}
            async with Socket(live.server.ws_url, token, LEGACY_WS) as joined_later:
                revoked = await asyncio.to_thread(
                    GraphQLClient(live.server.graphql_url, token).data, REVOKE, {"token": token}
                )
                assert revoked["tokenRevoke"]["revoked"] is True
                return [
                    await socket.closed(CLOSED_WITHIN) for socket in (first, second, joined_later)
                ]

    closes = asyncio.run(scenario())

    assert [(code, reason) for code, reason, _ in closes] == [(4401, "Token revoked")] * 3
