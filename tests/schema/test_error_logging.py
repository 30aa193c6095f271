"""Each GraphQL error is logged once: a client's mistake as one INFO line without a
traceback, a server fault at ERROR with its traceback."""

import asyncio
import json
import logging
from collections.abc import AsyncGenerator

import pytest
import strawberry
from django.test import Client

from schema.extensions import ClientErrors, ErrorLoggingSchema

pytestmark = pytest.mark.django_db


def _post(query: str) -> dict:
    return Client().post("/graphql/", json.dumps({"query": query}), content_type="application/json")


def _error_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name in {"schema.errors", "strawberry.execution"}]


@pytest.mark.parametrize(
    "query",
    [
        pytest.param("{ nope }", id="validation"),
        pytest.param('mutation { tokenRevoke(token: "x") { revoked } }', id="permission"),
        pytest.param("query { me { ", id="syntax"),
    ],
)
def test_a_client_mistake_is_one_info_line_without_a_traceback(caplog, query):
    with caplog.at_level(logging.DEBUG):
        body = _post(query).json()

    assert body["errors"]
    records = _error_records(caplog)
    assert [(r.levelno, r.msg) for r in records] == [(logging.INFO, "graphql.client_error")]
    assert records[0].exc_info is None
    assert records[0].error == body["errors"][0]["message"]


def test_a_server_fault_is_logged_once_at_error_with_its_traceback(caplog):
    @strawberry.type
    class Query:
        @strawberry.field
        def boom(self) -> str:
            raise RuntimeError("disk on fire")

    schema = ErrorLoggingSchema(query=Query, extensions=[ClientErrors])

    with caplog.at_level(logging.DEBUG):
        result = schema.execute_sync("{ boom }")

    assert result.errors[0].message == "Internal server error."
    records = _error_records(caplog)
    assert [(r.levelno, r.msg) for r in records] == [(logging.ERROR, "graphql.unexpected_error")]
    assert records[0].exc_info[1].args == ("disk on fire",)


def test_a_subscription_frame_with_a_fault_is_masked_and_the_others_pass_as_they_are():
    @strawberry.type
    class Tick:
        seq: int

        @strawberry.field
        def note(self) -> str | None:
            if self.seq == 2:
                raise RuntimeError("disk on fire")
            return f"n{self.seq}"

    @strawberry.type
    class Query:
        ok: bool = True

    @strawberry.type
    class Subscription:
        @strawberry.subscription
        async def ticks(self) -> AsyncGenerator[Tick, None]:
            for seq in (1, 2, 3):
                yield Tick(seq=seq)

    schema = ErrorLoggingSchema(query=Query, subscription=Subscription, extensions=[ClientErrors])

    async def frames():
        stream = await schema.subscribe("subscription { ticks { seq note } }")
        return [(r.data, [e.message for e in r.errors or ()]) async for r in stream]

    assert asyncio.run(frames()) == [
        ({"ticks": {"seq": 1, "note": "n1"}}, []),
        ({"ticks": {"seq": 2, "note": None}}, ["Internal server error."]),
        ({"ticks": {"seq": 3, "note": "n3"}}, []),
    ]
