"""The base of every domain error: a message for the user and a stable code for clients.

Each domain keeps its codes in `domains/<x>/errors.py` (`OrderErrorCode`, ...), each code
defined once; the codes several domains answer live here. The schema exposes each domain's
codes, with these, as a GraphQL enum (schema/errors.py).
"""

from enum import StrEnum


class CommonErrorCode(StrEnum):
    """Codes that operations of any domain may answer."""

    NOT_FOUND = "NOT_FOUND"  # not there, or not the viewer's to see (the two look alike)
    INVALID = "INVALID"  # a value that fails its field's rules (the message says which)
    NOT_RETRYABLE = "NOT_RETRYABLE"  # a job's or a delivery's work cannot start again
    HTTP_ONLY = "HTTP_ONLY"  # needs an HTTP request (a session, a file URL): not a websocket


class DomainError(Exception):
    """A rule the caller broke. The schema layer turns it into a UserError."""

    def __init__(self, message: str, *, code: StrEnum | str, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.code = str(code)
        self.field = field

    def __reduce__(self):
        # Celery pickles a task's exception to report it; the keyword-only code needs this.
        return _restored, (type(self), self.message, self.code, self.field)


def _restored(cls: type[DomainError], message: str, code: str, field: str | None) -> DomainError:
    error = cls.__new__(cls)
    DomainError.__init__(error, message, code=code, field=field)
    return error


class NotFound(DomainError):
    """The object does not exist, or is not the viewer's to see (the two look alike)."""

    def __init__(self, message: str = "Not found.", *, field: str | None = "id"):
        super().__init__(message, code=CommonErrorCode.NOT_FOUND, field=field)


class PermissionDenied(DomainError):
    """The viewer may not run this operation. Not a payload error: the schema answers it as
    the operation's top-level error with the code PERMISSION_DENIED, as it answers its
    permission classes' refusals (one shape, schema/permissions.py)."""

    code = "PERMISSION_DENIED"

    def __init__(self, message: str = "You do not have permission to do this."):
        super().__init__(message, code=self.code)


class ServiceUnavailable(Exception):
    """A service the request needs (Redis, a database connection) cannot be had right now.

    Raised before anything is written, or from inside a transaction that then rolls back:
    the client may simply try again. The API answers it as a top-level error with code
    SERVICE_UNAVAILABLE and HTTP 503, never as a masked internal error.
    """

    code = "SERVICE_UNAVAILABLE"
    message = "The service is briefly unavailable; nothing was changed. Try again in a moment."

    def __init__(self, service: str):
        super().__init__(f"{service} is unavailable")
        self.service = service
