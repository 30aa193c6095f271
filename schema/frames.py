"""Frames shared across subscribers: one execution and one encoding per event and document.

The hub decodes each published event once and hands the same dict to every mailbox of its
channel. A subscription yields, for that dict, one shared root object (`shared_root`);
the executor then runs a document over a given shared root once per (document, variables)
and hands every subscriber the same result (`SharedFrameExecutor`), and the transports
encode that result's data once and splice the same text into each subscriber's message
(`encode_frame`); an HTTP stream, whose messages for one frame are the same bytes for every
subscriber (an SSE event, a multipart part), takes them whole (`shared_message`). This is how Hasura multiplexes live queries: subscribers whose documents
and variables select the same fields share the work of each frame. Authorization is
untouched: each subscriber's resolver decides, at subscribe time, whether it may have the
stream at all; only the fields of a root that depends on nothing but the event are shared
(the subscription's types opt in by building their roots through `shared_root`).
A subscriber with its own document or variables gets its own frame, as before.
"""

import json
from collections import OrderedDict
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, Protocol

from graphql import (
    ExecutionResult,
    GraphQLEnumType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLScalarType,
    OperationType,
    Undefined,
    print_ast,
)
from graphql.execution.collect_fields import collect_fields, collect_subfields
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.schema.schema_converter import GraphQLCoreConverter
from strawberry.types.field import StrawberryField
from strawberry_django.optimizer import DjangoOptimizerExtension

from domains.infra.metrics import subscription_frames

# Frames outlive the fan-out of their event only briefly: every subscriber of a job takes
# its frame within moments of the others. Bounded so that memory stays flat.
_MAX_ENTRIES = 4096


class _Lru(OrderedDict):
    def remember(self, key: Any, value: Any) -> Any:
        self[key] = value
        if len(self) > _MAX_ENTRIES:
            self.popitem(last=False)
        return value


# Each entry holds the object whose id() keys it, so that an id is never reused while its
# entry lives.
_roots: _Lru = _Lru()  # id(event dict) -> (event dict, root)
_frames: _Lru = _Lru()  # (id(root), document key) -> (root, result)
# id(a shared result's data) -> [data, its JSON text or None, {framing: message bytes}]
_encoded: _Lru = _Lru()
# (schema id, middleware, document key) -> (the schema, whose id it is; its projection,
# or None where the executor must run it)
_projections: _Lru = _Lru()

_executed = subscription_frames.labels(step="executed")  # looked up once, counted per frame

_SHARED = "_shared_frame_root"  # marks the roots shared_root made: only those are shared


def shared_root(event: dict[str, Any], build: Callable[[dict[str, Any]], Any]) -> Any:
    """The one root object built from `event` for every subscriber that yields it."""
    held = _roots.get(id(event))
    if held is not None and held[0] is event:
        return held[1]
    root = build(event)
    object.__setattr__(root, _SHARED, True)
    return _roots.remember(id(event), (event, root))[1]


class SharedFrameExecutor(StrawberryGraphQLCoreExecutionContext):
    """Runs a subscription event whose root is shared once per document and variables."""

    _document_key: tuple | None = None
    _compiled: Callable[[Any], dict | None] | None = None  # its projection, once asked

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # The operation's own executor (per-event copies are copies, not built anew): the
        # subscription's resolver runs in the same task and hands it to the hub.
        _operation_executor.set(self)

    def frame_data(self, root: Any) -> list | None:
        """`root`'s shared result for this document, executed and encoded once per
        (document, variables) for every subscriber: [its data, as JSON text, its messages];
        None when it is not a shareable frame (an error, which is each subscriber's own to
        see, or an asynchronous resolver)."""
        if self._document_key is None:
            self._document_key = self._key()
        key = (id(root), self._document_key)
        held = _frames.get(key)
        if held is not None and held[0] is root:
            result = held[1]
        else:
            result = (
                self._projected(key, root)
                or super().build_per_event_executor(root).execute_operation()
            )
            if self.is_awaitable(result):
                if hasattr(result, "close"):
                    result.close()  # not run: the subscriber's own path runs it
                return None
        encoded = _held(result.data)
        if encoded is None:
            return None
        if encoded[1] is None:
            encoded[1] = json.dumps(encoded[0])
        return encoded

    def build_per_event_executor(self, payload: Any):
        if self._document_key is None:
            self._document_key = self._key()
        if getattr(payload, _SHARED, False):
            key = (id(payload), self._document_key)
            held = _frames.get(key)
            if held is not None and held[0] is payload:
                # The frame already ran for another subscriber: no per-event copy of this
                # executor to build (graphql-core copies it for every event otherwise).
                return _RanFrame(held[1])
            result = self._projected(key, payload)
            if result is not None:
                return _RanFrame(result)
        return super().build_per_event_executor(payload)

    def _projected(self, key: tuple, root: Any) -> ExecutionResult | None:
        """`root`'s frame read off it by this document's projection, remembered; None where
        the executor must run it."""
        data = self._projection()(root)
        if data is None:
            return None
        _executed.inc()
        return self._remember(key, root, ExecutionResult(data, None))

    def _projection(self) -> Callable[[Any], dict | None]:
        """This document's projection, compiled once per schema, middleware, document and
        variables."""
        projection = self._compiled
        if projection is None:
            middleware = self.middleware_manager
            kinds = tuple(type(m) for m in middleware.middlewares) if middleware else ()
            key = (id(self.schema), kinds, self._document_key)
            if key not in _projections:
                _projections.remember(key, (self.schema, _compile(self)))
            projection = self._compiled = _projections[key][1] or _no_projection
        return projection

    def _key(self) -> tuple:
        operation = self.operation
        source = operation.loc.source.body if operation.loc else print_ast(operation)
        name = operation.name.value if operation.name else None
        variables = json.dumps(self.variable_values.coerced, sort_keys=True, default=str)
        return (source, name, variables)

    def execute_operation(self, serially: bool | None = None):
        root = self.root_value
        if self._document_key is None or not getattr(root, _SHARED, False):
            return super().execute_operation(serially)
        key = (id(root), self._document_key)
        held = _frames.get(key)
        if held is not None and held[0] is root:
            return held[1]
        result = super().execute_operation(serially)
        _executed.inc()
        if self.is_awaitable(result):
            return self._remember_later(key, root, result)
        return self._remember(key, root, result)

    async def _remember_later(self, key, root, result) -> ExecutionResult:
        return self._remember(key, root, await result)

    @staticmethod
    def _remember(key, root, result: ExecutionResult) -> ExecutionResult:
        if not result.errors and isinstance(result.data, dict):
            # (an error is each subscriber's own to see: it is logged and masked per operation)
            _frames.remember(key, (root, result))
            _encoded.remember(id(result.data), [result.data, None, {}])
        return result


def _no_projection(root: Any) -> None:
    return None


class _NeedsExecutor(Exception):
    """The document, or this event's value, is one only the executor completes as the
    GraphQL spec says (a resolver, an abstract type, @defer, a null where none may be)."""


def _compile(executor: SharedFrameExecutor) -> Callable[[Any], dict | None] | None:
    """A subscription document's frame as plain attribute reads over the shared root, or None.

    A frame executed by graphql-core costs about 80 us for two fields (execute_field,
    complete_value, a resolve info and the middleware for each), most of a lone subscriber's
    latency; the same data read off the root costs a few. Only documents whose every field
    is a plain attribute of its object (Strawberry's default resolver) are compiled, each
    leaf coerced by its type as graphql-core coerces it; the selection is collected by
    graphql-core itself, with this group's variables (@skip, @include, fragments). Where an
    event's value is one the executor would report an error for, the projection says None
    and the executor runs that event. The middleware must be one that leaves such values
    as they are (strawberry-django's optimizer acts on querysets only): a field-level hook
    with effects of its own (a tracing span) keeps the executor."""
    operation = executor.operation
    if operation.operation is not OperationType.SUBSCRIPTION or not _plain_middleware(executor):
        return None
    schema = executor.schema
    root_type = schema.subscription_type
    try:
        collected = collect_fields(
            schema, executor.fragments, executor.variable_values, root_type, operation
        )
        if collected.new_defer_usages or len(collected.grouped_field_set) != 1:
            raise _NeedsExecutor
        ((key, details),) = collected.grouped_field_set.items()
        field = _field_of(root_type, details)
        definition = field.extensions.get(GraphQLCoreConverter.DEFINITION_BACKREF)
        if not getattr(definition, "is_subscription", False):
            raise _NeedsExecutor
        # The root field's per-event resolver hands the event's root on (Strawberry's).
        complete = _completion(executor, field.type, details)
    except Exception:  # noqa: BLE001 - _NeedsExecutor, or a document only the executor
        return None  # can report on (its fragments' arguments, its depth)

    def project(root: Any) -> dict | None:
        try:
            return {key: complete(root)}
        except Exception:  # noqa: BLE001 - the executor runs the event and reports it
            return None

    return project


def _plain_middleware(executor: SharedFrameExecutor) -> bool:
    middleware = executor.middleware_manager
    return middleware is None or all(
        isinstance(m, DjangoOptimizerExtension) for m in middleware.middlewares
    )


def _field_of(parent: GraphQLObjectType, details: list) -> Any:
    _check_plain_selection(details)
    field = parent.fields.get(details[0].node.name.value)
    if field is None:
        raise _NeedsExecutor
    return field


def _check_plain_selection(details: list) -> None:
    """A field's selections carry nothing but @skip and @include, already applied by
    graphql-core's collection (no @defer, no fragment arguments)."""
    for detail in details:
        directives = {d.name.value for d in detail.node.directives or ()}
        if detail.defer_usage or detail.fragment_variable_values or directives - _COLLECTED:
            raise _NeedsExecutor


_COLLECTED = {"skip", "include"}


def _completion(
    executor: SharedFrameExecutor, return_type: GraphQLOutputType, details: list
) -> Callable[[Any], Any]:
    """How a value of `return_type` completes for the fields `details`: graphql-core's
    complete_value for the plain cases, _NeedsExecutor for the rest (an error to report,
    an awaitable to await, an iterable that is not a list)."""
    is_awaitable = executor.is_awaitable

    def present(value: Any) -> Any:
        if isinstance(value, Exception) or is_awaitable(value):
            raise _NeedsExecutor
        return None if value is Undefined else value

    if isinstance(return_type, GraphQLNonNull):
        inner = _completion(executor, return_type.of_type, details)

        def non_null(value: Any) -> Any:
            completed = inner(value)
            if completed is None:
                raise _NeedsExecutor
            return completed

        return non_null
    if isinstance(return_type, GraphQLList):
        item = _completion(executor, return_type.of_type, details)

        def items(value: Any) -> Any:
            value = present(value)
            if value is None:
                return None
            if not isinstance(value, list | tuple):
                raise _NeedsExecutor  # (a one-shot iterator would be used up here)
            return [item(v) for v in value]

        return items
    if isinstance(return_type, GraphQLScalarType | GraphQLEnumType):
        coerce = return_type.coerce_output_value

        def leaf(value: Any) -> Any:
            value = present(value)
            if value is None:
                return None
            coerced = coerce(value)
            if coerced is Undefined or coerced is None:
                raise _NeedsExecutor
            return coerced

        return leaf
    if isinstance(return_type, GraphQLObjectType):
        return _object_completion(executor, return_type, details, present)
    raise _NeedsExecutor  # an interface or a union: its runtime type is the executor's


def _object_completion(
    executor: SharedFrameExecutor,
    object_type: GraphQLObjectType,
    details: list,
    present: Callable[[Any], Any],
) -> Callable[[Any], Any]:
    collected = collect_subfields(
        executor.schema,
        executor.fragments,
        executor.variable_values,
        executor.operation,
        object_type,
        details,
    )
    if collected.new_defer_usages:
        raise _NeedsExecutor
    reads: list[tuple[str, Callable | None, Callable[[Any], Any]]] = []
    for key, field_details in collected.grouped_field_set.items():
        if field_details[0].node.name.value == "__typename":
            _check_plain_selection(field_details)
            reads.append((key, None, _constant(object_type.name)))
            continue
        field = _field_of(object_type, field_details)
        if not _plain_attribute(field):
            raise _NeedsExecutor
        reads.append((key, field.resolve, _completion(executor, field.type, field_details)))
    is_type_of = object_type.is_type_of

    def complete(value: Any) -> Any:
        value = present(value)
        if value is None:
            return None
        if is_type_of is not None:
            fits = is_type_of(value, None)
            if fits is not True:
                if hasattr(fits, "close"):
                    fits.close()  # an asynchronous check, not awaited here
                raise _NeedsExecutor
        return {
            key: completion(value if read is None else read(value))
            for key, read, completion in reads
        }

    return complete


def _plain_attribute(field: Any) -> bool:
    """Whether a field reads an attribute of its object and nothing else: a plain Strawberry
    field with no resolver, permission or extension (Strawberry's basic field), through its
    default resolver."""
    definition = field.extensions.get(GraphQLCoreConverter.DEFINITION_BACKREF)
    return (
        type(definition) is StrawberryField
        and definition.is_basic_field
        and getattr(field.resolve, "_is_default", False)
    )


def _constant(value: Any) -> Callable[[Any], Any]:
    return lambda _: value


class FrameWriter(Protocol):
    """Where the hub writes a subscriber's frames itself (a websocket operation, an HTTP
    stream): the message around a shared frame (`frame_data`'s), labelled with the event's
    seq where the subscription labels its events (an SSE id), written at once, or False when the connection cannot take it now (it is behind, or closing: the
    subscriber's own path sends what it missed)."""

    def write(self, frame: list, seq: int | None) -> bool: ...


# Set by a transport for the task that runs one operation, and by the executor it runs.
frame_writer: ContextVar[FrameWriter | None] = ContextVar("frame_writer", default=None)
_operation_executor: ContextVar[SharedFrameExecutor | None] = ContextVar(
    "operation_executor", default=None
)


def hub_delivery(
    build: Callable[[dict[str, Any]], Any], *, labelled: bool = False
) -> "HubDelivery | None":
    """For a subscription resolver whose roots `build` makes from the event alone: how the
    hub writes an event to this subscriber directly (True when written), or None where the
    transport cannot take frames from the hub (the subscriber's own path then runs).
    `labelled`: the subscription labels its events with their seq (an SSE id)."""
    writer, executor = frame_writer.get(), _operation_executor.get()
    if writer is None or executor is None:
        return None
    return HubDelivery(build, executor, writer, labelled)


class HubDelivery:
    """One subscriber's way to take an event from the hub: its group (subscribers whose
    frame for an event is the same: the same document and variables over the same kind of
    root), the group's frame for an event, and its writer. The hub makes each group's frame
    once per event and hands it to every subscriber of the group (`write`)."""

    __slots__ = ("_build", "_executor", "group", "labelled", "write_frame", "writer")

    def __init__(self, build, executor: SharedFrameExecutor, writer: FrameWriter, labelled: bool):
        if executor._document_key is None:
            executor._document_key = executor._key()
        self._build, self._executor, self.writer, self.labelled = build, executor, writer, labelled
        self.write_frame = writer.write  # (bound once: the hub calls it for every event)
        self.group = (build, executor._document_key)

    def frame(self, event: dict[str, Any]) -> list | None:
        return self._executor.frame_data(shared_root(event, self._build))

    def write(self, frame: list | None, event: dict[str, Any]) -> bool:
        return frame is not None and self.writer.write(
            frame, event["seq"] if self.labelled else None
        )

    def __call__(self, event: dict[str, Any]) -> bool:
        return self.write(self.frame(event), event)


class _RanFrame:
    """Stands for the per-event executor of a frame that already ran: hands out its result."""

    __slots__ = ("result",)

    def __init__(self, result: ExecutionResult):
        self.result = result

    def execute_operation(self, serially: bool | None = None) -> ExecutionResult:
        return self.result


_WS_KEYS = {"id", "type", "payload"}
_WS_PAYLOAD = {"data", "extensions"}


def _held(data: Any) -> list | None:
    held = _encoded.get(id(data)) if isinstance(data, dict) else None
    return held if held is not None and held[0] is data else None


def shared_message(
    response: dict, framing: Any, build: Callable[[], bytes], encode: Callable[[Any], str]
) -> bytes:
    """A transport's whole message for `response` (`build()`), made once per shared frame
    and the same bytes for every subscriber whose message is the same: the same `framing`
    (the transport, the SSE id) and the same rest of the response (its extensions, e.g. the
    document's cost, encoded). Built each time for a response that is not a shared frame's."""
    held = _held(response.get("data"))
    if held is None:
        return build()
    rest = {k: v for k, v in response.items() if k != "data"}
    key = (framing, encode(rest) if rest else None)
    messages = held[2]
    message = messages.get(key)
    if message is None:
        message = messages[key] = build()
        subscription_frames.labels(step="framed").inc()
    return message


def encode_frame(message: Any, encode: Callable[[Any], str]) -> str:
    """`message` as JSON, its shared frame's data encoded once for every subscriber.

    The message is a websocket frame (`{"id", "type", "payload": {"data", ...}}`), a
    multipart part (`{"payload": {...}}`) or an SSE event's response (`{"data", ...}`).
    """
    payload = message.get("payload") if isinstance(message, dict) else None
    response = payload if isinstance(payload, dict) else message
    data = response.get("data") if isinstance(response, dict) else None
    held = _held(data)
    if held is None:
        return encode(message)
    if held[1] is None:
        held[1] = encode(data)
    if response is not message and message.keys() == _WS_KEYS and response.keys() <= _WS_PAYLOAD:
        # A websocket's next/data frame, by far the most sent: at most its operation's
        # extensions (the document's cost) to encode.
        extensions = response.get("extensions")
        tail = "" if extensions is None else f',"extensions":{encode(extensions)}'
        return (
            f'{{"id":{json.dumps(message["id"])},"type":"{message["type"]}",'
            f'"payload":{{"data":{held[1]}{tail}}}}}'
        )
    body = _splice(response, held[1], encode)
    if response is message:
        return body
    return _splice(message, body, encode, key="payload")


def _splice(outer: dict, inner_text: str, encode: Callable[[Any], str], key: str = "data") -> str:
    rest = {k: v for k, v in outer.items() if k != key}
    head = encode(rest)[:-1]
    return f'{head}{"," if rest else ""}"{key}":{inner_text}}}'
