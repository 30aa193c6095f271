"""The retry policy, over real HTTP: what is retried, what is handed back, what is final."""

import logging

import pytest

from domains.integrations.client import (
    RequestRejected,
    ResilientClient,
    RetryLater,
    retry_after_seconds,
)
from tests.domains.integrations.scripted_server import Answer


def client_for(outside, service_name, **options):
    options = {"backoff_base": 0.01, "max_attempts": 3, **options}
    return ResilientClient(service_name, outside.url, api_key="sk_test", **options)


def test_a_2xx_body_comes_back_with_bearer_and_idempotency_key(outside, service_name):
    outside.then(Answer(body={"id": "ch_1"}))
    body = client_for(outside, service_name).post("/charges", json={"a": 1}, idempotency_key="k1")
    assert body == {"id": "ch_1"}
    headers = outside.requests[0]["headers"]
    assert headers["Authorization"] == "Bearer sk_test"
    assert headers["Idempotency-Key"] == "k1"


def test_5xx_is_retried_until_success(outside, service_name):
    outside.then(Answer(500), Answer(503), Answer(body={"ok": 1}))
    assert client_for(outside, service_name).get("/x") == {"ok": 1}
    assert outside.calls == 3


def test_a_timeout_is_retried_then_handed_back_to_the_task(outside, service_name, caplog):
    outside.default = Answer(delay=0.5)
    client = client_for(outside, service_name, timeout=(1, 0.1), max_attempts=2)
    with caplog.at_level(logging.WARNING), pytest.raises(RetryLater) as raised:
        client.get("/slow")
    assert outside.calls == 2
    assert "timed out" in str(raised.value)
    assert raised.value.retry_after >= 0
    assert [r.error for r in caplog.records if r.msg == "outside.call"] == ["timeout", "timeout"]


def test_a_refused_connection_is_transient(service_name):
    client = ResilientClient(service_name, "http://127.0.0.1:9", max_attempts=2, backoff_base=0.01)
    with pytest.raises(RetryLater, match="could not connect"):
        client.get("/")


def test_429_hands_retry_after_back_without_retrying_in_process(outside, service_name):
    outside.then(Answer(429, headers={"Retry-After": "7"}))
    with pytest.raises(RetryLater) as raised:
        client_for(outside, service_name).get("/busy")
    assert raised.value.retry_after == 7
    assert outside.calls == 1


@pytest.mark.parametrize("status", [400, 401, 404, 409, 422])
def test_other_4xx_are_final(outside, service_name, status):
    outside.then(Answer(status, body={"error": "bad"}))
    with pytest.raises(RequestRejected) as raised:
        client_for(outside, service_name).post("/charges", json={})
    assert (raised.value.status, raised.value.body) == (status, {"error": "bad"})
    assert outside.calls == 1


def test_retry_after_accepts_seconds_dates_and_garbage():
    assert retry_after_seconds("3") == 3
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0  # in the past
    assert retry_after_seconds("soon", default=2) == 2
    assert retry_after_seconds(None) == 1
