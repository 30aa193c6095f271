"""The one HTTP client for every outside service: timeouts, a few attempts of one call
with short jittered backoff on transient errors, Retry-After handed back to the task (a
worker never sleeps on it), no retry on other 4xx, and a Redis-held rate limit and circuit
breaker.

The attempts belong to one call (at most `max_attempts`, each wait under `backoff_cap`
and stopped by a cancel), as a connection's retransmits would; rescheduling the work is
not the client's: past its attempts, or told to wait (429, the breaker open, the rate
limit), it raises RetryLater, and the worker kit's one retry policy (workers.base) sends
the task again after that wait, within the task's budget.

A call either returns the JSON body of a 2xx answer or raises:
- RetryLater: try again in `retry_after` seconds (the task reschedules itself);
- RequestRejected: the service refused the request itself; retrying will not help.
Inside a job whose cancel was accepted it raises JobCancelled instead, at once: between
attempts, during the backoff, or while waiting for an answer (domains.jobs.cancellation).
"""

import email.utils
import logging
import random
import time
from functools import partial
from typing import Any

import redis
import requests

from domains.integrations.guards import Breaker, RateLimit
from domains.jobs.cancellation import cancel_wait, cancellable_call

__all__ = [
    "Breaker",
    "OutsideServiceError",
    "RateLimit",
    "RequestRejected",
    "ResilientClient",
    "RetryLater",
]

logger = logging.getLogger(__name__)

# How long a call waits when the guards' own Redis cannot be reached: an outage like any.
GUARDS_UNAVAILABLE_RETRY_AFTER = 5.0


class OutsideServiceError(Exception):
    def __init__(self, service: str, message: str):
        super().__init__(f"{service}: {message}")
        self.service = service


class RetryLater(OutsideServiceError):
    """A transient failure: the same request may succeed after `retry_after` seconds."""

    def __init__(self, service: str, message: str, *, retry_after: float):
        super().__init__(service, message)
        self.retry_after = retry_after


class RequestRejected(OutsideServiceError):
    """A 4xx answer other than 429: the request itself is wrong; never retried."""

    def __init__(self, service: str, status: int, body: Any):
        super().__init__(service, f"rejected with HTTP {status}")
        self.status = status
        self.body = body


class _Transient(Exception):
    """One attempt failed in a way another attempt may not."""


class ResilientClient:
    def __init__(
        self,
        service: str,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: tuple[float, float] = (3.05, 10.0),
        max_attempts: int = 3,
        backoff_base: float = 0.2,
        backoff_cap: float = 5.0,
        rate_limit: RateLimit | None = None,
        breaker: Breaker | None = None,
        session: requests.Session | None = None,
    ):
        self.service = service
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.rate_limit = rate_limit
        self.breaker = breaker
        self.session = session or requests.Session()
        if api_key:
            self.session.headers["Authorization"] = f"Bearer {api_key}"

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Any:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        for attempt in range(1, self.max_attempts + 1):
            try:
                # Inside a job, a cancel stops the wait for the answer (and the attempts).
                return cancellable_call(
                    partial(self._attempt, method, path, attempt, json, params, headers)
                )
            except _Transient as error:
                backoff = self._backoff(attempt)
                if attempt == self.max_attempts:
                    raise RetryLater(
                        self.service, f"{error} (after {attempt} attempts)", retry_after=backoff
                    ) from error
                cancel_wait(backoff)  # short and capped; long waits go back to the broker
        raise AssertionError("unreachable")

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs)

    def _attempt(self, method, path, attempt, json, params, headers) -> Any:
        probe = self._pass_guards()
        started = time.monotonic()
        outcome: dict[str, Any] = {
            "service": self.service,
            "method": method,
            "path": path,
            "attempt": attempt,
        }
        try:
            response = self.session.request(
                method,
                self.base_url + path,
                json=json,
                params=params,
                headers=headers,
                timeout=self.timeout,
            )
        except requests.Timeout as error:
            self._failed(probe, outcome, "timeout", started)
            raise _Transient("timed out") from error
        except requests.ConnectionError as error:
            self._failed(probe, outcome, "connection_error", started)
            raise _Transient("could not connect") from error

        outcome["status"] = response.status_code
        if response.status_code >= 500:
            self._failed(probe, outcome, "server_error", started)
            raise _Transient(f"answered HTTP {response.status_code}")
        # The service answered: whatever it said, it is up.
        if self.breaker:
            self._guard_note(self.breaker.record_success, outcome)
        self._log(logging.INFO, outcome, started)
        if response.status_code == 429:
            raise RetryLater(
                self.service,
                "rate limited by the service",
                retry_after=retry_after_seconds(response.headers.get("Retry-After")),
            )
        body = _body(response)
        if response.status_code >= 400:
            raise RequestRejected(self.service, response.status_code, body)
        return body

    def _pass_guards(self) -> bool:
        """Check the breaker, then the rate limit; True if this call is the breaker's probe.

        Their state lives in Redis: when Redis cannot be reached the call is not made, and
        the caller is told to come back (RetryLater), as for any outage."""
        try:
            return self._acquire_guards()
        except redis.RedisError as error:
            logger.warning("outside.guards_unavailable", extra={"service": self.service})
            raise RetryLater(
                self.service,
                "its rate limit and circuit breaker cannot be checked (Redis is unavailable)",
                retry_after=GUARDS_UNAVAILABLE_RETRY_AFTER,
            ) from error

    def _acquire_guards(self) -> bool:
        probe = False
        if self.breaker:
            allowed, probe, wait = self.breaker.acquire(self.service)
            if not allowed:
                raise RetryLater(self.service, "circuit breaker is open", retry_after=wait)
        if self.rate_limit:
            wait = self.rate_limit.acquire(self.service)
            if wait > 0:
                if probe:  # hand the probe back rather than hold it while waiting
                    self.breaker.release_probe(self.service)
                raise RetryLater(self.service, "rate limit reached", retry_after=wait)
        return probe

    def _failed(self, probe: bool, outcome: dict[str, Any], error: str, started: float) -> None:
        outcome["error"] = error
        if self.breaker and self._guard_note(
            lambda service: self.breaker.record_failure(service, probe=probe), outcome
        ):
            outcome["breaker"] = "opened"
        self._log(logging.WARNING, outcome, started)

    def _guard_note(self, record: Any, outcome: dict[str, Any]) -> Any:
        """Tell the breaker how a call went; what the call itself did stands even when
        Redis cannot take the note (a charge made is not turned into an error)."""
        try:
            return record(self.service)
        except redis.RedisError:
            outcome["breaker"] = "unrecorded"
            return None

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with full jitter."""
        return random.uniform(0, min(self.backoff_cap, self.backoff_base * 2 ** (attempt - 1)))

    @staticmethod
    def _log(level: int, outcome: dict[str, Any], started: float) -> None:
        outcome["elapsed_ms"] = round((time.monotonic() - started) * 1000, 1)
        logger.log(level, "outside.call", extra=outcome)


def retry_after_seconds(value: str | None, default: float = 1.0) -> float:
    """A Retry-After header (seconds or an HTTP date) as seconds from now."""
    if not value:
        return default
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        return max(email.utils.parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return default


def _body(response: requests.Response) -> Any:
    if not response.content:
        return {}
    try:
        return response.json()
    except ValueError:
        return response.text
