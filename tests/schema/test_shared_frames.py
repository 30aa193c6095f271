"""schema/frames.py: one execution and one encoding per shared event and document."""

import asyncio
import json
from collections.abc import AsyncGenerator

import strawberry

from schema.frames import SharedFrameExecutor, encode_frame, shared_message, shared_root


@strawberry.type
class Tick:
    seq: int
    note: str

    @strawberry.field
    def executions(self) -> int:
        self.count += 1  # how often a document ran over this root
        return self.count


def _tick(event: dict) -> Tick:
    tick = Tick(seq=event["seq"], note=event["note"])
    tick.count = 0
    return tick


EVENTS = [{"seq": n, "note": f"n{n}"} for n in (1, 2, 3)]  # one dict per event, as the hub shares


@strawberry.type
class Query:
    ok: bool = True


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def ticks(self, shared: bool = True) -> AsyncGenerator[Tick, None]:
        for event in EVENTS:
            yield shared_root(event, _tick) if shared else _tick(event)


schema = strawberry.Schema(
    query=Query, subscription=Subscription, execution_context_class=SharedFrameExecutor
)


async def _results(document: str) -> list:
    return [r async for r in await schema.subscribe(document)]


def _run(*documents: str) -> list[list]:
    async def run():
        return await asyncio.gather(*(_results(d) for d in documents))

    return asyncio.run(run())


def test_the_same_document_over_a_shared_event_runs_once_and_shares_its_data():
    first, second = _run(
        "subscription { ticks { seq executions } }", "subscription { ticks { seq executions } }"
    )

    assert [r.data for r in first] == [{"ticks": {"seq": n, "executions": 1}} for n in (1, 2, 3)]
    assert all(a.data is b.data for a, b in zip(first, second, strict=True))


def test_other_documents_and_unshared_roots_run_their_own():
    same, other, unshared = _run(
        "subscription { ticks { seq executions } }",
        "subscription { ticks { note executions } }",
        "subscription { ticks(shared: false) { seq executions } }",
    )

    assert [r.data["ticks"]["note"] for r in other] == ["n1", "n2", "n3"]
    assert [r.data["ticks"]["executions"] for r in unshared] == [1, 1, 1]
    assert not any(a.data is b.data for a, b in zip(same, other, strict=True))


def test_a_shared_frame_encodes_as_the_plain_message_would():
    (results,) = _run("subscription { ticks { seq note } }")
    data = results[0].data
    plain = lambda m: json.dumps(m, separators=(",", ":"))  # noqa: E731

    for message in (
        {"id": "7", "type": "next", "payload": {"data": data}},
        {"id": "7", "type": "next", "payload": {"data": data, "extensions": {"cost": 2}}},
        {"id": "7", "type": "next", "payload": {"data": data, "errors": [{"message": "m"}]}},
        {"payload": {"data": data, "extensions": {"cost": 2}}},
        {"data": data},
    ):
        assert json.loads(encode_frame(message, plain)) == message


def test_a_shared_frames_http_message_is_built_once_per_framing_and_rest_of_response():
    (results,) = _run("subscription { ticks { seq note } }")
    data = results[0].data
    plain = lambda m: json.dumps(m, separators=(",", ":"))  # noqa: E731
    built = []

    def message(response, framing):
        def build():
            built.append(framing)
            return f"event: next\r\ndata: {encode_frame(response, plain)}\r\n\r\n".encode()

        return shared_message(response, framing, build, plain)

    first = message({"data": data, "extensions": {"cost": 2}}, ("sse", 1))
    again = message({"data": data, "extensions": {"cost": 2}}, ("sse", 1))
    other_cost = message({"data": data, "extensions": {"cost": 3}}, ("sse", 1))
    other_framing = message({"data": data, "extensions": {"cost": 2}}, ("multipart", None))
    unshared = message({"data": dict(data), "extensions": {"cost": 2}}, ("sse", 1))

    assert again is first
    assert built == [("sse", 1), ("sse", 1), ("multipart", None), ("sse", 1)]
    assert b'"cost":3' in other_cost
    assert other_framing == first  # the same text, built for its own framing
    assert json.loads(unshared.split(b"data: ", 1)[1]) == {"data": data, "extensions": {"cost": 2}}
