"""The document limits: depth, aliases and cost, measured in one pass linear in the document,
and the arguments every list and node field shares (ids, page sizes, cursors) checked in it.

Each fragment is measured once and its measure reused at every spread, so a document whose
fragments spread each other twice over (2^n fields from n fragments in under 1 KB) costs
n steps to measure and is refused before graphql-core validates or executes it. The cost is
what the document would resolve with every spread expanded: one per field, and a field
given `first` or `last` multiplies its selection by that count.

The argument checks answer a client mistake with a coded error before any resolver runs:
Relay's own parsing of them happens inside the resolvers and the optimizer, where a bad
value surfaces as an unexpected error.
"""

import binascii
from base64 import b64decode
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    IntValueNode,
    ListValueNode,
    ObjectValueNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    StringValueNode,
    ValueNode,
    VariableNode,
    parse,
)
from strawberry.extensions import SchemaExtension

_PAGE_ARGUMENTS = ("first", "last")
_CURSOR_ARGUMENTS = ("after", "before")
_CURSOR_PREFIX = "arrayconnection"  # strawberry's list connections
# Far past any table's end, and far enough below 2**63 that the database's OFFSET and
# LIMIT arithmetic cannot overflow (a larger one answered "datatype mismatch").
MAX_CURSOR_OFFSET = 2**53
_FILTER_ARGUMENTS = ("filters",)
# A filter's text becomes a LIKE pattern or a bound value: SQLite refuses patterns over
# 50,000 bytes, and a database takes a bounded number of parameters per statement.
MAX_FILTER_TEXT = 1_000
MAX_FILTER_VALUES = 1_000


@dataclass(frozen=True)
class Measure:
    depth: int = 0
    aliases: int = 0
    cost: int = 0


class Refused(Exception):
    """The document is refused as a whole: the message says what to send instead."""

    def __init__(self, message: str, *, code: str, **figures: object):
        super().__init__(message)
        self.error = GraphQLError(message, extensions={"code": code, **figures})


def _decoded(value: str) -> tuple[str, str] | None:
    """The "Type:key" pair a global ID or cursor encodes, or None."""
    try:
        prefix, separator, key = b64decode(value, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return (prefix, key) if separator and prefix else None


class _Measurer:
    def __init__(
        self, document: DocumentNode, variables: Mapping[str, Any], cap: int, max_page: int
    ):
        self.fragments = {
            definition.name.value: definition
            for definition in document.definitions
            if isinstance(definition, FragmentDefinitionNode)
        }
        self.variables = variables
        self.cap = cap  # counts saturate here: a refused document needs no exact figure
        self.max_page = max_page
        self.measured: dict[str, Measure] = {}
        self.entered: set[str] = set()

    def _saturated(self, value: int) -> int:
        return min(value, self.cap)

    def _value(self, node: object) -> object:
        """A literal's or variable's value; None for any other kind (validation checks it)."""
        if isinstance(node, VariableNode):
            return self.variables.get(node.name.value)
        if isinstance(node, IntValueNode):
            return int(node.value)
        if isinstance(node, StringValueNode):
            return node.value
        return None

    def _page_size(self, field: FieldNode) -> int:
        """How many items the field may return; Refused for a page size or cursor out of shape."""
        size = 1
        for argument in field.arguments or ():
            name = argument.name.value
            value = self._value(argument.value)
            if name in _PAGE_ARGUMENTS and isinstance(value, int) and not isinstance(value, bool):
                if not 0 <= value <= self.max_page:
                    raise Refused(
                        f"`{name}` must be between 0 and {self.max_page}: ask for at most "
                        f"{self.max_page} items and page on with `after: pageInfo.endCursor`.",
                        code="INVALID_PAGE_SIZE",
                        argument=name,
                    )
                size = max(size, value)
            elif name in _CURSOR_ARGUMENTS and isinstance(value, str):
                decoded = _decoded(value)
                if (
                    decoded is None
                    or decoded[0] != _CURSOR_PREFIX
                    or not decoded[1].isascii()
                    or not decoded[1].isdigit()
                    or int(decoded[1]) > MAX_CURSOR_OFFSET
                ):
                    raise Refused(
                        f"`{name}` is not a cursor this API gave: send an edge's `cursor` or "
                        "`pageInfo.endCursor` from an earlier page, or leave it out.",
                        code="INVALID_CURSOR",
                        argument=name,
                    )
            elif name in _FILTER_ARGUMENTS:
                self._check_filter(argument.value)
            elif name == "id" and isinstance(value, str):
                decoded = _decoded(value)
                if decoded is None or not decoded[1].isdigit():
                    raise Refused(
                        f"{value[:40]!r} is not an id this API gave: send an object's `id` as "
                        "a query or mutation returned it (an opaque string such as "
                        "'Sm9iOjE=').",
                        code="INVALID_ID",
                        argument=name,
                    )
        return size

    def _check_filter(self, node: ValueNode) -> None:
        """Refused for a filter whose text or number of values is past what a database
        statement takes: the client gets a coded error, not a database failure."""
        values = 0
        pending: list[object] = [node]
        while pending:
            item = pending.pop()
            if isinstance(item, VariableNode):
                item = self.variables.get(item.name.value)
            if isinstance(item, ObjectValueNode):
                pending.extend(field.value for field in item.fields)
            elif isinstance(item, ListValueNode):
                pending.extend(item.values)
            elif isinstance(item, Mapping):
                pending.extend(item.values())
            elif isinstance(item, list):
                pending.extend(item)
            else:
                text = item.value if isinstance(item, StringValueNode) else item
                if isinstance(text, str) and len(text) > MAX_FILTER_TEXT:
                    raise Refused(
                        f"A filter's text may be at most {MAX_FILTER_TEXT:,} characters: "
                        "filter on a shorter part of it.",
                        code="FILTER_TOO_LARGE",
                        argument="filters",
                    )
                values += 1
                if values > MAX_FILTER_VALUES:
                    raise Refused(
                        f"A filter may hold at most {MAX_FILTER_VALUES:,} values: split it "
                        "over several requests.",
                        code="FILTER_TOO_LARGE",
                        argument="filters",
                    )

    def fragment(self, name: str) -> Measure:
        if name in self.measured:
            return self.measured[name]
        definition = self.fragments.get(name)
        if definition is None:
            return Measure()  # an unknown fragment: validation names it
        if name in self.entered:
            raise Refused(
                f"Fragment '{name}' spreads itself: fragments must not form a cycle.",
                code="FRAGMENT_CYCLE",
            )
        self.entered.add(name)
        measure = self.selections(definition.selection_set)
        self.measured[name] = measure
        return measure

    def selections(self, selection_set: SelectionSetNode | None) -> Measure:
        depth = aliases = cost = 0
        for selection in selection_set.selections if selection_set else ():
            if isinstance(selection, FieldNode):
                inner = self.selections(selection.selection_set)
                introspection = selection.name.value.startswith("__")
                depth = max(depth, 0 if introspection else inner.depth + 1)
                aliases += inner.aliases + (selection.alias is not None)
                cost += 1 + self._page_size(selection) * inner.cost
            else:
                if isinstance(selection, FragmentSpreadNode):
                    inner = self.fragment(selection.name.value)
                else:
                    assert isinstance(selection, InlineFragmentNode)
                    inner = self.selections(selection.selection_set)
                depth = max(depth, inner.depth)
                aliases += inner.aliases
                cost += inner.cost
        return Measure(depth, self._saturated(aliases), self._saturated(cost))


def document_measure(
    document: DocumentNode,
    *,
    variables: object = None,
    cap: int,
    max_page: int = 100,
) -> Measure:
    """The deepest, most aliased and costliest operation's figures; Refused for a fragment
    cycle or a malformed id, page size or cursor."""
    measurer = _Measurer(
        document, variables if isinstance(variables, Mapping) else {}, cap, max_page
    )
    measures = [
        measurer.selections(definition.selection_set)
        for definition in document.definitions
        if isinstance(definition, OperationDefinitionNode)
    ]
    for name in measurer.fragments:  # a cycle among unused fragments is refused too
        measurer.fragment(name)
    return Measure(
        depth=max((m.depth for m in measures), default=0),
        aliases=max((m.aliases for m in measures), default=0),
        cost=max((m.cost for m in measures), default=0),
    )


def operation_type(document: object, operation_name: object = None) -> OperationType | None:
    """The type of the operation a request would run; None when the document does not
    parse or names no single operation (the schema then answers with why)."""
    if not isinstance(document, str):
        return None
    try:
        parsed = parse(document, max_tokens=settings.GRAPHQL_MAX_TOKENS)
    except GraphQLError:
        return None
    operations = [d for d in parsed.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name is not None:
        operations = [o for o in operations if o.name and o.name.value == operation_name]
    return operations[0].operation if len(operations) == 1 else None


class DocumentLimits(SchemaExtension):
    """Refuses a document over the depth, alias or cost limit before it is validated.

    Must come before ValidationCache in the extension list: a refusal here stands as the
    operation's errors and validation is skipped. The measured cost is returned in the
    response's `extensions.cost`.
    """

    def __init__(self, *, max_depth: int, max_aliases: int, max_cost: int, max_page: int):
        self.max_depth = max_depth
        self.max_aliases = max_aliases
        self.max_cost = max_cost
        self.max_page = max_page
        self.cost: int | None = None

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        try:
            measure = document_measure(
                context.graphql_document,
                variables=context.variables,
                cap=self.max_cost + 1,
                max_page=self.max_page,
            )
            self.cost = measure.cost
            self.check(measure)
        except Refused as refused:
            context.pre_execution_errors = [refused.error]
        yield

    def check(self, measure: Measure) -> None:
        """Refused for a measure over a limit."""
        if measure.depth > self.max_depth:
            raise Refused(
                f"The operation exceeds maximum operation depth of {self.max_depth}: "
                "ask for fewer nested levels.",
                code="QUERY_TOO_DEEP",
                depth=measure.depth,
                maxDepth=self.max_depth,
            )
        if measure.aliases > self.max_aliases:
            raise Refused(
                f"The operation has {measure.aliases} aliases; at most {self.max_aliases} "
                "are allowed: split it into several requests.",
                code="TOO_MANY_ALIASES",
                aliases=measure.aliases,
                maxAliases=self.max_aliases,
            )
        if measure.cost > self.max_cost:
            raise Refused(
                f"The operation's cost is over {self.max_cost} (one per field, times the "
                "page size of each list, every fragment spread counted): ask for fewer "
                "fields or smaller pages.",
                code="QUERY_TOO_COSTLY",
                cost=measure.cost,
                maxCost=self.max_cost,
            )

    def get_results(self) -> dict[str, Any]:
        return {} if self.cost is None else {"cost": self.cost}
