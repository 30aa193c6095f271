"""schema/frames.py: one execution and one encoding per shared event and document."""

import asyncio
import contextvars
import enum
import json
from collections.abc import AsyncGenerator
from datetime import UTC, datetime

import pytest
import strawberry
from strawberry.scalars import JSON

from schema import frames
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


@strawberry.enum
class Phase(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"


@strawberry.type
class Stage:
    name: str
    weight: float | None


@strawberry.type
class Reading:
    seq: int
    phase: Phase
    at: datetime
    label: str | None
    required: str  # None in one event: the executor's error, not the projection's
    tags: list[str]
    scores: list[int | None] | None
    result: JSON | None
    stage: Stage | None
    stages: list[Stage]

    @strawberry.field
    def doubled(self) -> int:
        return self.seq * 2


AT = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
READINGS = [
    {
        "seq": 1,
        "phase": Phase.WAITING,
        "at": AT,
        "label": None,
        "required": "r",
        "tags": [],
        "scores": None,
        "result": None,
        "stage": None,
        "stages": [],
    },
    {
        "seq": 2,
        "phase": Phase.RUNNING,
        "at": AT,
        "label": "two",
        "required": "r",
        "tags": ["a", "b"],
        "scores": [1, None, 3],
        "result": {"rows": [1, 2], "ok": True},
        "stage": Stage(name="load", weight=0.5),
        "stages": [Stage(name="a", weight=None), Stage(name="b", weight=1.0)],
    },
    {
        "seq": 3,
        "phase": Phase.RUNNING,
        "at": AT,
        "label": "three",
        "required": None,
        "tags": ["c"],
        "scores": [],
        "result": [1, "x"],
        "stage": Stage(name="end", weight=None),
        "stages": [],
    },
]


@strawberry.type
class Query:
    ok: bool = True


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def ticks(self, shared: bool = True) -> AsyncGenerator[Tick, None]:
        for event in EVENTS:
            yield shared_root(event, _tick) if shared else _tick(event)

    @strawberry.subscription
    async def readings(self, shared: bool = True) -> AsyncGenerator[Reading, None]:
        for event in READINGS:
            yield shared_root(event, _reading) if shared else _reading(event)


def _reading(event: dict) -> Reading:
    return Reading(**event)


schema = strawberry.Schema(
    query=Query, subscription=Subscription, execution_context_class=SharedFrameExecutor
)


async def _results(document: str, variables: dict | None = None) -> list:
    return [r async for r in await schema.subscribe(document, variable_values=variables)]


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


_FRAGMENT = "fragment Named on Stage { name __typename }"
PLAIN_DOCUMENTS = [
    ("subscription { readings { seq phase at label tags scores result } }", None),
    ("subscription { readings { n: seq p: phase again: seq __typename } }", None),
    (
        "subscription { readings { stage { name weight } stages { ...Named weight } } }"
        + _FRAGMENT,
        None,
    ),
    (
        "subscription($full: Boolean!) { readings { seq label @include(if: $full)"
        " ... on Reading { tags @skip(if: $full) } } }",
        {"full": True},
    ),
    (
        "subscription($full: Boolean!) { readings { seq label @include(if: $full)"
        " ... on Reading { tags @skip(if: $full) } } }",
        {"full": False},
    ),
]


@pytest.fixture
def compiled(monkeypatch):
    """What each document's projection compiled to: a projection, or None."""
    made = []

    def compile_and_note(executor):
        projection = original(executor)
        made.append(projection)
        return projection

    original = frames._compile
    monkeypatch.setattr(frames, "_compile", compile_and_note)
    monkeypatch.setattr(frames, "_projections", frames._Lru())  # none compiled before
    return made


def _data_of(document: str, variables: dict | None = None) -> tuple[list, list]:
    """A document's results over shared roots and, run by the executor, over plain ones."""

    async def run():
        unshared = document.replace("readings {", "readings(shared: false) {")
        return await asyncio.gather(_results(document, variables), _results(unshared, variables))

    shared, plain = asyncio.run(run())
    as_sent = lambda results: [(r.data, [e.message for e in r.errors or ()]) for r in results]  # noqa: E731
    return as_sent(shared), as_sent(plain)


@pytest.mark.parametrize(("document", "variables"), PLAIN_DOCUMENTS)
def test_a_frame_of_plain_fields_is_read_off_the_root_as_the_executor_would_complete_it(
    compiled, document, variables
):
    shared, plain = _data_of(document, variables)

    assert len(compiled) == 1
    assert compiled[0] is not None
    assert shared == plain
    assert shared[1][0]["readings"]  # (events with values, not only nulls)
    # the frames came from the projection itself, not from the executor behind it
    assert [(compiled[0](_reading(event)), []) for event in READINGS] == plain


def test_a_null_where_none_may_be_is_left_to_the_executor_and_its_error(compiled):
    shared, plain = _data_of("subscription { readings { seq required } }")

    assert compiled[0] is not None
    assert shared == plain
    assert shared[2] == (None, ["Cannot return null for non-nullable field Reading.required."])


def test_a_field_with_a_resolver_of_its_own_leaves_the_document_to_the_executor(compiled):
    shared, plain = _data_of("subscription { readings { seq doubled } }")

    assert compiled == [None]
    assert shared == plain


JOB_EVENTS = [
    {
        "job_id": 7,
        "seq": 0,
        "status": "PENDING",
        "queue_position": 3,
        "waiting_reason": "cap",
        "at": "2026-12-07T12:00:00+00:00",
    },
    {
        "job_id": 7,
        "seq": 4,
        "status": "PROGRESS",
        "progress": 0.5,
        "current": 5,
        "total": 10,
        "stage": "load",
        "message": "half",
        "cancel_requested_at": "2026-12-07T12:00:01+00:00",
        "at": "2026-12-07T12:00:02.250000+00:00",
    },
    {
        "job_id": 7,
        "seq": 9,
        "status": "SUCCESS",
        "progress": 1.0,
        "result": {"rows": [1, 2]},
        "at": "2026-12-07T12:00:03+00:00",
    },
    {
        "job_id": 7,
        "seq": 10,
        "status": "FAILURE",
        "error": "boom",
        "at": "2026-12-07T12:00:04+00:00",
    },
]


def test_the_job_progress_frame_of_every_field_is_read_off_the_root_as_the_executor_reads_it():
    from graphql import parse
    from graphql.execution.middleware import MiddlewareManager
    from strawberry_django.optimizer import DjangoOptimizerExtension

    from schema import schema as product_schema
    from schema.jobs import JobEvent

    document = (
        "subscription($id: ID!) { jobProgress(id: $id) { __typename jobId seq status progress"
        " current total stage message result error cancelRequestedAt queuePosition"
        " waitingReason at } }"
    )
    executor = contextvars.copy_context().run(  # (it marks its context as an operation's)
        SharedFrameExecutor.build,
        product_schema._schema,
        parse(document),
        raw_variable_values={"id": "Sm9iOjc="},
        # the middleware the product's schema runs fields through (its only resolve hook)
        middleware=MiddlewareManager(DjangoOptimizerExtension()),
    )
    projection = frames._compile(executor)

    assert projection is not None
    for event in JOB_EVENTS:
        executed = executor.build_per_event_executor(JobEvent.from_event(event)).execute_operation()
        assert not executed.errors
        assert projection(JobEvent.from_event(event)) == executed.data
