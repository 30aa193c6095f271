"""A websocket lives only as long as its credentials: revoking its token or deactivating
its user closes it at once (4401 with the reason), and nothing runs on it afterwards."""

import asyncio
import json

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from domains.accounts.models import User
from domains.orders.models import Order
from tests.fixtures.factories import make_product, make_token
from tests.fixtures.graphql import LEGACY_WS, PROTOCOLS, TRANSPORT_WS, GraphQLClient

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
