"""Error codes: each defined once, in its domain; each payload's `code` typed by its
domain's GraphQL enum; and one place (schema/errors.py) turning a DomainError into a
payload's errors, so no schema module catches one itself."""

import ast
import importlib
from enum import StrEnum
from pathlib import Path

from django.conf import settings
from graphql import GraphQLEnumType, GraphQLList, GraphQLNonNull, GraphQLObjectType

from domains.errors import DomainError
from domains.orders.errors import OrderErrorCode
from domains.payments.errors import PaymentError, PaymentErrorCode
from schema import schema
from schema.errors import payload_errors
from schema.orders import OrderCheckoutPayload

BASE = Path(settings.BASE_DIR)
THE_MAPPING = "schema/errors.py"
# Catches that are not a payload's errors, each with its reason.
NOT_PAYLOADS = {
    # A subscription has no payload: a job the viewer may not see refuses the stream.
    "jobs.py NotFound",
    # An automatic persisted query's registration over its budget: a top-level RATE_LIMITED.
    "persisted.py RateLimited",
}


def _domain_error_names() -> set[str]:
    """DomainError and every subclass of it the code defines (schema imports every domain)."""
    names, pending = set(), [DomainError]
    while pending:
        cls = pending.pop()
        names.add(cls.__name__)
        pending += cls.__subclasses__()
    return names


def _names(node: ast.expr | None) -> list[str]:
    if node is None:
        return ["<bare except>"]
    if isinstance(node, ast.Tuple):
        return [name for element in node.elts for name in _names(element)]
    if isinstance(node, ast.Attribute):
        return [node.attr]
    return [node.id] if isinstance(node, ast.Name) else []


def _catches(path: Path, errors: set[str]) -> list[str]:
    """Each `except` in the file that catches a domain error: `<file>:<line> <name>`."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        f"{path.name}:{handler.lineno} {name}"
        for handler in ast.walk(tree)
        if isinstance(handler, ast.ExceptHandler)
        for name in _names(handler.type)
        if name in errors
    ]


def _where(catch: str) -> str:
    """`jobs.py:357 NotFound` -> `jobs.py NotFound`: what NOT_PAYLOADS names."""
    place, name = catch.split()
    return f"{place.split(':')[0]} {name}"


def test_no_schema_module_maps_domain_errors_itself():
    errors = _domain_error_names()
    offenders = [
        catch
        for path in sorted((BASE / "schema").rglob("*.py"))
        if path.relative_to(BASE).as_posix() != THE_MAPPING
        for catch in _catches(path, errors)
        if _where(catch) not in NOT_PAYLOADS
    ]

    assert offenders == [], "raise it; @domain_errors (schema/errors.py) maps it"


def test_the_scan_finds_a_resolver_that_catches_one(tmp_path):
    sneaky = tmp_path / "sneaky.py"
    sneaky.write_text(
        "try:\n    order_checkout()\nexcept DomainError as error:\n    pass\n"
        "try:\n    x()\nexcept (KeyError, errors.OrderError):\n    pass\n"
        "try:\n    y()\nexcept KeyError:\n    pass\n"
    )

    assert _catches(sneaky, _domain_error_names()) == [
        "sneaky.py:3 DomainError",
        "sneaky.py:7 OrderError",
    ]


def _payloads():
    mutation = schema._schema.mutation_type
    for name, field in mutation.fields.items():
        payload = field.type.of_type if isinstance(field.type, GraphQLNonNull) else field.type
        yield name, payload


def test_every_mutation_answers_errors_whose_code_is_its_domains_enum():
    untyped = {}
    for name, payload in _payloads():
        errors = payload.fields.get("errors") if isinstance(payload, GraphQLObjectType) else None
        if errors is None:
            untyped[name] = "no errors field"
            continue
        item = errors.type
        while isinstance(item, GraphQLNonNull | GraphQLList):
            item = item.of_type
        code = item.fields["code"].type
        if not (isinstance(code, GraphQLNonNull) and isinstance(code.of_type, GraphQLEnumType)):
            untyped[name] = str(code)
        elif not code.of_type.name.endswith("ErrorCode"):
            untyped[name] = code.of_type.name

    assert untyped == {}
    assert len(list(_payloads())) > 20


def _code_enums() -> dict[str, type[StrEnum]]:
    """Every code enum the domains define: domains/errors.py and domains/<x>/errors.py."""
    modules = ["domains.errors"] + [
        f"domains.{path.parent.name}.errors" for path in sorted(BASE.glob("domains/*/errors.py"))
    ]
    enums = {}
    for module in map(importlib.import_module, modules):
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, StrEnum)
                and value.__module__ == module.__name__
            ):
                enums[f"{module.__name__}.{value.__name__}"] = value
    return enums


def test_each_code_is_defined_once():
    enums = _code_enums()
    owners: dict[str, list[str]] = {}
    for name, enum in enums.items():
        for code in enum:
            owners.setdefault(code.value, []).append(name)

    assert {code: names for code, names in owners.items() if len(names) > 1} == {}
    assert len(enums) >= 10


def test_a_checkout_answers_a_payment_code_in_its_own_enum():
    error = PaymentError("The order is already paid.", code=PaymentErrorCode.ALREADY_PAID)

    [item] = payload_errors(OrderCheckoutPayload, [error])

    assert (item.field, item.message, item.code) == (
        None,
        "The order is already paid.",
        "ALREADY_PAID",
    )
    assert type(item.code).__name__ == "OrderErrorCode"
    assert "ALREADY_PAID" not in OrderErrorCode.__members__  # defined once: in payments
