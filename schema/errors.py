"""Domain errors in payloads: each domain's codes as a GraphQL enum (Saleor's
`OrderErrorCode`), each domain's error type `{ field message code }` coded by it, and the
one place that turns a `DomainError` into a payload's `errors`: `@domain_errors`.

A mutation's resolver raises; it never catches a DomainError itself (a test holds every
schema module to that). PermissionDenied is not a payload error: it stays the operation's
top-level error with the code PERMISSION_DENIED, the shape of the permission classes'
refusals (schema/permissions.py).
"""

import functools
import typing
from collections.abc import Callable, Iterable
from enum import StrEnum
from typing import Any

import strawberry

from domains.accounts.errors import AccountErrorCode
from domains.catalog.errors import CatalogErrorCode
from domains.crm.errors import CrmErrorCode
from domains.errors import CommonErrorCode, DomainError, PermissionDenied
from domains.jobs.errors import IdempotencyErrorCode, JobErrorCode
from domains.media.errors import ImageErrorCode
from domains.notifications.errors import NotificationErrorCode
from domains.orders.errors import OrderErrorCode
from domains.payments.errors import PaymentErrorCode
from domains.reports.errors import ReportErrorCode
from domains.webhooks.errors import WebhookErrorCode


def error_code_enum(name: str, *codes: type[StrEnum] | StrEnum, description: str) -> type[StrEnum]:
    """The GraphQL enum `name`: NOT_FOUND (any operation that takes an id answers it), then
    `codes`, whole enums or single codes (a domain's own, the common ones it answers, those
    of the domains its operations call), each value once."""
    members = [CommonErrorCode.NOT_FOUND]
    for code in codes:
        members += list(code) if isinstance(code, type) else [code]
    values = dict.fromkeys(member.value for member in members)
    enum = StrEnum(name, [(value, value) for value in values])
    return strawberry.enum(enum, name=name, description=description)


def error_type(name: str, code: type[StrEnum], *, description: str) -> type:
    """The object type `name { field: String, message: String!, code: <code>! }`."""
    namespace = {
        "__annotations__": {"field": str | None, "message": str, "code": code},
        "__module__": __name__,
    }
    return strawberry.type(type(name, (), namespace), name=name, description=description)


def payload_errors(payload: type, errors: Iterable[DomainError]) -> list[Any]:
    """`errors` as the items of `payload.errors`: field and message as raised, the code as
    a value of the payload's enum (ValueError for a code the enum lacks: a defect)."""
    [item] = typing.get_args(payload.__annotations__["errors"])
    code_enum = item.__annotations__["code"]
    return [item(field=e.field, message=e.message, code=code_enum(e.code)) for e in errors]


def domain_errors(resolver: Callable[..., Any]) -> Callable[..., Any]:
    """The mutation's DomainError, raised anywhere below its resolver, becomes its
    payload's `errors` (the payload is the resolver's return annotation); PermissionDenied
    propagates, to be the operation's top-level PERMISSION_DENIED."""
    payload = resolver.__annotations__["return"]

    @functools.wraps(resolver)
    def resolve(*args: Any, **kwargs: Any) -> Any:
        return domain_errors_of(payload, lambda: resolver(*args, **kwargs))

    return resolve


def domain_errors_of(payload: type, call: Callable[[], Any]) -> Any:
    """`call()`, or `payload` with the DomainError it raised as its `errors` (for a field
    extension, which runs around the resolver: schema/idempotency.py)."""
    try:
        return call()
    except PermissionDenied:
        raise
    except DomainError as error:
        return payload(errors=payload_errors(payload, [error]))


def _domain(error: str, code: str, domain: str, *codes: type[StrEnum] | StrEnum) -> type:
    """The error type `error` of a domain's payloads, coded by the enum `code`."""
    enum = error_code_enum(
        code, *codes, description=f"Why {domain} operation was refused: a stable code."
    )
    return error_type(
        error,
        enum,
        description=f"A problem the user can fix in {domain} operation: which input "
        "(`field`, null when it is the whole request), what is wrong (`message`), and a "
        "stable `code` to switch on.",
    )


# One per domain. An enum lists the domain's own codes, the common ones it answers, and
# those of the domains its mutations call: a checkout answers payment codes, and so does a
# job retry (a checkout's or a payment's is refused with them). `UserError`, the name
# every payload's errors had before the enums, stays the accounts domain's.
# Every domain whose mutations start a job answers the idempotency key's refusals (STARTS).
STARTS = IdempotencyErrorCode
INVALID, NOT_RETRYABLE, HTTP_ONLY = (
    CommonErrorCode.INVALID,
    CommonErrorCode.NOT_RETRYABLE,
    CommonErrorCode.HTTP_ONLY,
)
UserError = _domain(
    "UserError", "AccountErrorCode", "an account", INVALID, HTTP_ONLY, AccountErrorCode
)
JobError = _domain(
    "JobError",
    "JobErrorCode",
    "a job",
    NOT_RETRYABLE,
    JobErrorCode,
    PaymentErrorCode,
    STARTS,
)
ReportError = _domain("ReportError", "ReportErrorCode", "a report", ReportErrorCode, STARTS)
CatalogError = _domain("CatalogError", "CatalogErrorCode", "a catalog", CatalogErrorCode, STARTS)
OrderError = _domain(
    "OrderError", "OrderErrorCode", "an order", OrderErrorCode, PaymentErrorCode, STARTS
)
PaymentError = _domain("PaymentError", "PaymentErrorCode", "a payment", STARTS, PaymentErrorCode)
ImageError = _domain("ImageError", "ImageErrorCode", "an image", ImageErrorCode, STARTS)
NotificationError = _domain(
    "NotificationError",
    "NotificationErrorCode",
    "a notification",
    INVALID,
    NotificationErrorCode,
    STARTS,
)
CrmError = _domain("CrmError", "CrmErrorCode", "a CRM", CrmErrorCode, STARTS)
AnalyticsError = _domain("AnalyticsError", "AnalyticsErrorCode", "an analytics", STARTS)
WebhookError = _domain(
    "WebhookError", "WebhookErrorCode", "a webhook", NOT_RETRYABLE, WebhookErrorCode
)
