"""Which failures mean "a service is unavailable, try again" rather than a bug.

A Redis that refuses or does not answer, a broker that cannot take a task, a database
connection that cannot be had in time (pool exhausted, server refusing clients) or an
operation the database aborted (deadlock, lock timeout): nothing the request did stays
written, and the same request can succeed a moment later. A database error that says
the statement itself cannot run (a pattern too complex, too many variables) is not an
outage: answered "try again", an obedient client would retry it for ever.
"""

import redis
from django.db import OperationalError as DatabaseOperationalError
from kombu.exceptions import OperationalError as BrokerOperationalError

from domains.errors import ServiceUnavailable

_UNAVAILABLE: tuple[tuple[type[BaseException], str], ...] = (
    (redis.ConnectionError, "redis"),
    (redis.TimeoutError, "redis"),
    (BrokerOperationalError, "broker"),
)
# PostgreSQL's SQLSTATE classes of a passing condition: connection exception, transaction
# rollback (deadlock, serialization), insufficient resources, operator intervention
# (shutdown, a cancelled statement), system error; and a lock not available.
_TRANSIENT_SQLSTATE_CLASSES = ("08", "40", "53", "57", "58")
_TRANSIENT_SQLSTATES = ("55P03",)
# SQLite's own: a writer holding the database, a file it cannot reach or write.
_TRANSIENT_SQLITE = ("locked", "unable to open", "disk i/o error", "disk is full", "busy")


def _database_unavailable(error: DatabaseOperationalError) -> bool:
    """Whether the database refused for a passing condition, not for the statement."""
    driver_error = error.__cause__ or error
    sqlstate = getattr(driver_error, "sqlstate", None)
    if sqlstate:
        return sqlstate[:2] in _TRANSIENT_SQLSTATE_CLASSES or sqlstate in _TRANSIENT_SQLSTATES
    if type(driver_error).__module__.startswith("sqlite3"):
        message = str(driver_error).lower()
        return any(part in message for part in _TRANSIENT_SQLITE)
    return True  # no SQLSTATE from PostgreSQL: the connection failed before any statement


def unavailable_service(error: BaseException | None) -> str | None:
    """The service whose unavailability caused `error` (itself or a cause), else None."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, ServiceUnavailable):
            return error.service
        for kind, service in _UNAVAILABLE:
            if isinstance(error, kind):
                return service
        if isinstance(error, DatabaseOperationalError):
            return "database" if _database_unavailable(error) else None
        error = error.__cause__ or error.__context__
    return None
