"""The breaker and the rate limit hold across processes because their state is in Redis."""

import multiprocessing
import time

import pytest
from django.db import connections

from domains.infra.redis import sync_client
from domains.integrations.client import Breaker, RateLimit, ResilientClient, RetryLater
from domains.integrations.guards import BreakerState
from tests.domains.integrations.scripted_server import Answer
from tests.fixtures.redis import redis_at, unreachable_redis_url


def _guarded(outside, service_name, *, threshold: int, reset: float):
    breaker = Breaker(failure_threshold=threshold, reset_timeout=reset)
    return breaker, ResilientClient(service_name, outside.url, max_attempts=1, breaker=breaker)


def test_the_breaker_opens_at_its_threshold_and_then_makes_no_calls(outside, service_name):
    breaker, client = _guarded(outside, service_name, threshold=3, reset=60)
    outside.default = Answer(500)
    for _ in range(3):
        with pytest.raises(RetryLater, match="HTTP 500"):
            client.get("/down")
    assert breaker.state(service_name) == BreakerState.OPEN

    with pytest.raises(RetryLater, match="circuit breaker is open") as raised:
        client.get("/down")
    assert outside.calls == 3
    assert 55 < raised.value.retry_after <= 60


def test_half_open_lets_one_probe_through_and_its_success_closes(outside, service_name):
    breaker, client = _guarded(outside, service_name, threshold=1, reset=0.2)
    outside.then(Answer(500))
    with pytest.raises(RetryLater):
        client.get("/x")
    time.sleep(0.3)
    assert breaker.state(service_name) == BreakerState.HALF_OPEN

    assert breaker.acquire(service_name) == (True, True, 0.0)  # one caller holds the probe
    allowed, is_probe, _ = breaker.acquire(service_name)
    assert (allowed, is_probe) == (False, False)  # everyone else waits
    breaker.release_probe(service_name)

    assert client.get("/x") == {"ok": True}
    assert breaker.state(service_name) == BreakerState.CLOSED
    assert outside.calls == 2


def test_a_failed_probe_opens_the_breaker_again(outside, service_name):
    breaker, client = _guarded(outside, service_name, threshold=1, reset=0.2)
    outside.default = Answer(502)
    with pytest.raises(RetryLater):
        client.get("/x")
    time.sleep(0.3)
    with pytest.raises(RetryLater, match="HTTP 502"):
        client.get("/x")  # the probe
    assert breaker.state(service_name) == BreakerState.OPEN
    with pytest.raises(RetryLater, match="circuit breaker is open"):
        client.get("/x")
    assert outside.calls == 2


def test_4xx_answers_do_not_count_against_the_breaker(outside, service_name):
    breaker, client = _guarded(outside, service_name, threshold=2, reset=60)
    outside.default = Answer(422)
    for _ in range(5):
        with pytest.raises(Exception, match="422"):
            client.get("/x")
    assert breaker.state(service_name) == BreakerState.CLOSED


def test_the_rate_limit_refuses_past_its_burst_and_says_when(outside, service_name):
    client = ResilientClient(
        service_name, outside.url, rate_limit=RateLimit(per_minute=60, burst=3)
    )
    began = time.monotonic()
    for _ in range(3):
        client.get("/x")
    with pytest.raises(RetryLater, match="rate limit reached") as raised:
        client.get("/x")
    # The next token comes a second after the bucket began refilling, at the first call.
    elapsed = time.monotonic() - began
    assert 1.0 - elapsed - 0.001 <= raised.value.retry_after <= 1.0  # to the millisecond
    assert outside.calls == 3


def _hammer(service: str, seconds: float, results) -> None:
    connections.close_all()  # none inherited (the parent closed them); nothing shared
    sync_client().connection_pool.reset()
    limit = RateLimit(per_minute=600, burst=5)
    allowed = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if limit.acquire(service) == 0:
            allowed += 1
    results.put(allowed)


def test_the_rate_limit_holds_across_four_processes(service_name):
    """10 calls a second with a burst of 5, four processes racing for them for 2 seconds:
    together they get at most burst + rate x window, where a per-process limit gets 4x."""
    window = 2.0
    # Closed before forking: a child closing an inherited database connection would end
    # the parent's too (it says goodbye to the server on the shared socket).
    connections.close_all()
    results = multiprocessing.get_context("fork").Queue()
    started = time.monotonic()
    workers = [
        multiprocessing.get_context("fork").Process(
            target=_hammer, args=(service_name, window, results)
        )
        for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    allowed = [results.get(timeout=30) for _ in workers]
    elapsed = time.monotonic() - started
    for worker in workers:
        worker.join()
    assert sum(allowed) <= 5 + 10 * elapsed + 1
    assert sum(allowed) >= 5 + 10 * window * 0.8  # the budget is used, not starved


def test_a_breaker_whose_redis_is_down_is_an_outage_and_makes_no_call(outside, service_name):
    _, client = _guarded(outside, service_name, threshold=3, reset=60)

    with (
        redis_at(unreachable_redis_url()),
        pytest.raises(RetryLater, match="Redis is unavailable") as raised,
    ):
        client.get("/x")

    assert raised.value.service == service_name
    assert raised.value.retry_after > 0
    assert outside.calls == 0


def test_a_rate_limit_whose_redis_is_down_is_an_outage_and_makes_no_call(outside, service_name):
    client = ResilientClient(
        service_name, outside.url, max_attempts=1, rate_limit=RateLimit(per_minute=60)
    )

    with redis_at(unreachable_redis_url()), pytest.raises(RetryLater, match="Redis is unavailable"):
        client.get("/x")

    assert outside.calls == 0
    assert client.get("/x") == {"ok": True}  # Redis back: the call goes
