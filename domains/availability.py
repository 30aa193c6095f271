"""Which failures mean "a service is unavailable, try again" rather than a bug.

A Redis that refuses or does not answer, a broker that cannot take a task, a database
connection that cannot be had in time (pool exhausted, server refusing clients) or an
operation the database aborted (deadlock, lock timeout): nothing the request did stays
written, and the same request can succeed a moment later.
"""

import redis
from django.db import OperationalError as DatabaseOperationalError
from kombu.exceptions import OperationalError as BrokerOperationalError

from domains.errors import ServiceUnavailable

_UNAVAILABLE: tuple[tuple[type[BaseException], str], ...] = (
    (redis.ConnectionError, "redis"),
    (redis.TimeoutError, "redis"),
    (BrokerOperationalError, "broker"),
    (DatabaseOperationalError, "database"),
)


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
        error = error.__cause__ or error.__context__
    return None
