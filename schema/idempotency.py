"""Idempotent starts at the edge: every mutation that starts a job takes the client's key
(`idempotencyKey`, or the IETF `Idempotency-Key` header) through one field extension,
`IdempotentStart`, which names the request for domains.jobs.idempotency and answers a
repeat with the first request's payload (see docs/API.md, "Idempotent starts")."""

import dataclasses
import hashlib
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any
from uuid import UUID

import strawberry
from django.core.files import File
from django.http import HttpRequest
from strawberry import UNSET, relay
from strawberry.annotation import StrawberryAnnotation
from strawberry.extensions import FieldExtension
from strawberry.types.arguments import StrawberryArgument
from strawberry.types.base import StrawberryContainer
from strawberry.types.field import StrawberryField
from strawberry.types.info import Info
from strawberry.types.lazy_type import LazyType

from domains.jobs.idempotency import (
    IdempotencyError,
    IdempotencyErrorCode,
    IdempotentRequest,
    idempotency_digest,
    idempotent_start,
)
from domains.jobs.models import Job
from schema.base import viewer
from schema.errors import domain_errors_of

HEADER = "Idempotency-Key"
KEY = "idempotency_key"
DESCRIPTION = "Your key for this start (or the Idempotency-Key header): see Idempotent starts."


def idempotency_key_field() -> Any:
    """The optional `idempotencyKey` of a start mutation's input."""
    return strawberry.field(default=None, description=DESCRIPTION)


class IdempotentStart(FieldExtension):
    """On a mutation that starts a job: the same key and input answer with the same job.

    The key is the mutation's `idempotencyKey` argument (added here), or its input's field
    of that name, or the request's Idempotency-Key header. The payload of a repeat is
    built from the job: `job`, and the record whose `job` it is in the payload's other
    field (`report`, `payment`...), so each mutation needs nothing but this extension.
    """

    def apply(self, field: StrawberryField) -> None:
        self.payload = field.type
        self.in_input = any(argument.python_name == "input" for argument in field.arguments)
        if not self.in_input and all(a.python_name != KEY for a in field.arguments):
            field.arguments = [
                *field.arguments,
                StrawberryArgument(
                    python_name=KEY,
                    graphql_name=None,
                    type_annotation=StrawberryAnnotation(str | None),
                    description=DESCRIPTION,
                    default=None,
                ),
            ]

    def resolve(self, next_, source: Any, info: Info, **kwargs: Any) -> Any:
        key = getattr(kwargs["input"], KEY, None) if self.in_input else kwargs.pop(KEY, None)
        user = viewer(info)
        if not user.is_authenticated:
            return next_(source, info, **kwargs)  # its permission refuses it
        return domain_errors_of(self.payload, lambda: self._start(key, next_, source, info, kwargs))

    def _start(self, key: str | None, next_, source: Any, info: Info, kwargs: dict) -> Any:
        key = _the_key(key, info)
        request = (
            None
            if key is None
            else IdempotentRequest(
                owner=viewer(info),
                operation=info.field_name,
                key=key,
                digest=idempotency_digest(_plain(kwargs)),
                what=self._what(),
            )
        )
        return idempotent_start(
            request, start=lambda: next_(source, info, **kwargs), replay=self._replay
        )

    def _record_fields(self) -> list[dataclasses.Field]:
        return [f for f in dataclasses.fields(self.payload) if f.name not in ("job", "errors")]

    def _what(self) -> str:
        records = self._record_fields()
        return records[0].name.replace("_", " ") if records else "job"

    def _replay(self, job: Job) -> Any:
        """The first request's payload: its job, and the record it works on."""
        records = {
            f.name: _record(_model(self.payload, f.name), job) for f in self._record_fields()
        }
        return self.payload(job=job, **records)


def _record(model: type, job: Job) -> Any:
    """The record `job` works on; once the job was retried, the record its retry took over
    (a checkout's order, an image: their one `job` moves to the retry)."""
    while job is not None:
        record = model._default_manager.filter(job=job).first()
        if record is not None:
            return record
        job = Job.objects.filter(retry_of=job).order_by("pk").first()
    return None


def _the_key(argument: str | None, info: Info) -> str | None:
    """The argument's key or the header's; refused when both differ, or when the header
    would name several starts at once (an operation with several root fields)."""
    request = getattr(info.context, "request", None)
    header = request.headers.get(HEADER) if isinstance(request, HttpRequest) else None
    if header is None:
        return argument
    if argument is not None and argument != header:
        raise IdempotencyError(
            f"The {HEADER} header and idempotencyKey differ: send one key.",
            code=IdempotencyErrorCode.INVALID_IDEMPOTENCY_KEY,
            field="idempotencyKey",
        )
    if argument is None and len(info.operation.selection_set.selections) > 1:
        raise IdempotencyError(
            f"The {HEADER} header names one start: send idempotencyKey with each field.",
            code=IdempotencyErrorCode.INVALID_IDEMPOTENCY_KEY,
            field="idempotencyKey",
        )
    return header


def _model(payload: type, name: str) -> type:
    """The Django model behind the payload's field `name` (its strawberry_django type)."""
    kind = payload.__strawberry_definition__.get_field(name).type
    while isinstance(kind, StrawberryContainer):
        kind = kind.of_type
    if isinstance(kind, LazyType):
        kind = kind.resolve_type()
    return kind.__strawberry_django_definition__.model


def _plain(value: Any) -> Any:
    """The mutation's arguments after coercion as JSON values, without the key: a file
    counts by its content's sha256."""
    if isinstance(value, File):
        return {"sha256": _file_sha256(value)}
    if isinstance(value, relay.GlobalID):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, date | datetime | Decimal | UUID):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items() if k != KEY and v is not UNSET}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _file_sha256(upload: File) -> str:
    digest = hashlib.sha256()
    upload.seek(0)
    for chunk in upload.chunks():
        digest.update(chunk)
    upload.seek(0)
    return digest.hexdigest()
