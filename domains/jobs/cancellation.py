"""How a running job notices a cancel: the one mechanism every domain's work shares.

The worker kit watches the job it runs (`cancel_watched`); code that waits on something
outside (the integrations client: between attempts, in its backoff, and while a call is
in flight) asks `cancel_point`, waits with `cancel_wait` instead of a blind sleep, and
runs a blocking call through `cancellable_call`. Each raises JobCancelled once the job's
cancel was accepted, which the kit turns into the job's CANCELLED end, and the job's
record undoes what was done, as after a failure. Outside a watched job (the server, a
compensation task) they do nothing: compensation is never interrupted.

A cancel is seen through the job's snapshot in Redis (`job_cancel_publish` sets it as the
cancel commits), or the row when Redis cannot answer.
"""

import contextvars
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from typing import TypeVar

import redis

from domains.infra.redis import progress_client
from domains.jobs.events import snapshot_key
from domains.jobs.models import Job
from domains.jobs.reporter import JobCancelled

T = TypeVar("T")

# How often a waiting job looks for a cancel (seconds): one Redis read each time.
CHECK_EVERY = 0.25

_watched: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "cancel_watched_job", default=None
)


@contextmanager
def cancel_watched(job_id: int) -> Iterator[None]:
    """While the block runs, waits and outside calls stop at the job's cancel."""
    token = _watched.set(job_id)
    try:
        yield
    finally:
        _watched.reset(token)


@contextmanager
def cancel_deferred() -> Iterator[None]:
    """A call whose outcome could not be learned afterwards (a message handed to a
    provider) is waited for: inside the block a cancel does not stop the wait, and the
    job stops at its next step instead, knowing what the call did."""
    token = _watched.set(None)
    try:
        yield
    finally:
        _watched.reset(token)


def job_cancel_seen(job_id: int) -> bool:
    """Whether a cancel of the job was accepted (the snapshot's flag, else the row's)."""
    try:
        return bool(progress_client().hexists(snapshot_key(job_id), "cancel"))
    except redis.RedisError:
        return Job.objects.filter(pk=job_id, cancel_requested_at__isnull=False).exists()


def cancel_point() -> None:
    """Raise JobCancelled if the watched job's cancel was accepted."""
    job_id = _watched.get()
    if job_id is not None and job_cancel_seen(job_id):
        raise JobCancelled


def cancel_wait(seconds: float) -> None:
    """Sleep `seconds`, or until the watched job's cancel (JobCancelled)."""
    deadline = time.monotonic() + seconds
    cancel_point()
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, CHECK_EVERY))
        cancel_point()


def cancellable_call(call: Callable[[], T]) -> T:
    """`call()`'s result; in a watched job, a cancel stops the wait for it (JobCancelled).

    The call then runs on a thread of its own (in the caller's context: its trace and log
    fields) while the caller waits in short steps. A call left behind by a cancel finishes
    there unheard, bounded by its own timeouts: what it did is settled as a lost answer
    is (a payment's charge is looked up by its key, and refunded).
    """
    if _watched.get() is None:
        return call()
    cancel_point()
    future: Future[T] = Future()
    context = contextvars.copy_context()

    def run() -> None:
        try:
            future.set_result(context.run(call))
        except BaseException as error:  # noqa: BLE001  (handed to the waiting caller)
            future.set_exception(error)

    threading.Thread(target=run, name="cancellable-call", daemon=True).start()
    while True:
        try:
            return future.result(timeout=CHECK_EVERY)
        except FutureTimeout:
            cancel_point()
