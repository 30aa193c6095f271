"""What a log line can say about where it was written: the request's id (set by
web.middleware.RequestIdMiddleware) and the id of the job a task works on (set
by the job task base, workers/base.py). A module of its own, importing nothing, so that the
log formatter (config/logging.py) reads them before Django's apps are loaded."""

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")
job_id_var: ContextVar[int | None] = ContextVar("job_id", default=None)


@contextmanager
def job_logged(job_id: int) -> Iterator[None]:
    """Every line logged in the block carries `job_id`."""
    token = job_id_var.set(job_id)
    try:
        yield
    finally:
        job_id_var.reset(token)
