"""What every schema module shares: the viewer, global-id parsing, text lookups."""

import dataclasses
from decimal import Decimal, DecimalException
from typing import Any

import strawberry
from django.http import HttpRequest
from strawberry import relay
from strawberry.exceptions import StrawberryInputCoercionError
from strawberry.schema.types.base_scalars import DecimalDefinition
from strawberry.types import Info
from strawberry_django import filter_field
from strawberry_django.auth.utils import get_current_user
from strawberry_django.fields.filter_types import BaseFilterLookup

from domains.errors import CommonErrorCode, DomainError, NotFound

# Past this many digits either side of the point no amount or price means anything, and a
# database column would overflow on it.
DECIMAL_MAX_DIGITS = 30


def _finite_decimal(value: object) -> Decimal:
    try:
        number = Decimal(str(value))
    except DecimalException:
        number = None
    if number is None or not number.is_finite() or abs(number.adjusted()) > DECIMAL_MAX_DIGITS:
        raise StrawberryInputCoercionError(
            f'Value cannot represent a Decimal: "{str(value)[:40]}". Send a finite number '
            'as a string, e.g. "12.50" (not NaN or Infinity).'
        )
    return number


# strawberry's Decimal takes "NaN" and "Infinity", which no database column holds: a filter
# on them failed in the database, as an internal error. The schema uses this one instead.
FINITE_DECIMAL = dataclasses.replace(DecimalDefinition, parse_value=_finite_decimal)


def viewer(info: Info) -> Any:
    return get_current_user(info)


def http_request(info: Info, what: str) -> HttpRequest:
    """The Django request behind `info`; a coded error over a websocket, which has none."""
    request = getattr(info.context, "request", None)
    if not isinstance(request, HttpRequest):
        raise DomainError(
            f"{what} is only available over HTTP: send this operation as a POST to /graphql/.",
            code=CommonErrorCode.HTTP_ONLY,
        )
    return request


def node_pk(global_id: relay.GlobalID | str, type_name: str, *, field: str = "id") -> int:
    """The primary key behind a global ID of `type_name`; NotFound for anything else."""
    try:
        if not isinstance(global_id, relay.GlobalID):
            global_id = relay.GlobalID.from_id(global_id)
        if global_id.type_name != type_name:
            raise ValueError(global_id.type_name)
        return int(global_id.node_id)
    except (ValueError, TypeError) as error:
        raise NotFound(f"Not a valid {type_name} id.", field=field) from error


def global_id(type_name: str, pk: int) -> relay.GlobalID:
    return relay.GlobalID(type_name, str(pk))


@strawberry.input(
    name="StrFilterLookup",
    description="Text lookups. No regular expressions: a pattern a client writes would run "
    "in the database (in-process on SQLite) for as long as it likes.",
)
class TextFilterLookup(BaseFilterLookup[str]):
    i_exact: str | None = filter_field(description="Case-insensitive exact match.")
    contains: str | None = filter_field(description="Case-sensitive containment test.")
    i_contains: str | None = filter_field(description="Case-insensitive containment test.")
    starts_with: str | None = filter_field(description="Case-sensitive starts-with.")
    i_starts_with: str | None = filter_field(description="Case-insensitive starts-with.")
    ends_with: str | None = filter_field(description="Case-sensitive ends-with.")
    i_ends_with: str | None = filter_field(description="Case-insensitive ends-with.")
