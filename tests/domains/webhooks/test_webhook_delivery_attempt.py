"""Attempts against a real receiver on loopback: signed by the Standard Webhooks library's
rules, one webhook-id on every attempt, retried on the delays, then SUCCEEDED or FAILED;
nothing sent to a target that fails its check at send time."""

from datetime import timedelta

import pytest
from django.utils import timezone

from domains.jobs.ending import job_end
from domains.notifications.models import OutgoingEmail
from domains.webhooks.models import WebhookDelivery, WebhookEndpoint
from domains.webhooks.services import (
    webhook_deliveries_sweep,
    webhook_delivery_attempt,
    webhook_delivery_retry,
    webhook_endpoint_create,
)
from testbed.webhooks import refusing_first, verified

pytestmark = pytest.mark.django_db(transaction=True)


def _delivery(owner, url, running_job, events=("JOB_SUCCEEDED",)) -> WebhookDelivery:
    webhook_endpoint_create(viewer=owner, url=url, events=events)
    job = running_job(owner)
    job_end(job_id=job.pk, status="SUCCESS", result={"ok": True})
    return WebhookDelivery.objects.select_related("endpoint").get(job=job)


def _due_now(delivery: WebhookDelivery) -> None:
    """The retry's wait has passed."""
    WebhookDelivery.objects.filter(pk=delivery.pk, status="PENDING").update(
        next_attempt_at=timezone.now()
    )


def test_a_message_refused_twice_is_taken_on_the_third_attempt_with_one_id(
    user, receiver, running_job
):
    receiver.answer = refusing_first(2)
    delivery = _delivery(user, receiver.url, running_job)

    outcomes = [webhook_delivery_attempt(delivery_id=delivery.pk)]
    for _ in range(3):
        _due_now(delivery)
        outcomes.append(webhook_delivery_attempt(delivery_id=delivery.pk))

    assert outcomes == ["http_error", "http_error", "success", "skipped"]
    arrivals = receiver.arrivals
    assert len(arrivals) == 3
    assert {a.webhook_id for a in arrivals} == {delivery.webhook_id}
    for arrival in arrivals:
        assert verified(delivery.endpoint.secret, arrival) == delivery.payload
    assert receiver.taken == {delivery.webhook_id: 1}
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("SUCCEEDED", 3)
    assert (delivery.last_response_status, delivery.last_error) == (204, "")
    assert delivery.delivered_at is not None
    assert delivery.next_attempt_at is None


def test_a_refused_attempt_waits_for_its_delay(user, receiver, running_job, settings):
    settings.WEBHOOK_RETRY_DELAYS = [300]
    receiver.answer = refusing_first(5)
    delivery = _delivery(user, receiver.url, running_job)
    before = timezone.now()

    webhook_delivery_attempt(delivery_id=delivery.pk)

    delivery.refresh_from_db()
    assert delivery.status == "PENDING"
    assert (delivery.last_response_status, delivery.last_error) == (503, "HTTP 503")
    assert delivery.next_attempt_at >= before + timedelta(seconds=300)
    assert webhook_delivery_attempt(delivery_id=delivery.pk) == "skipped"  # not due yet
    assert len(receiver.arrivals) == 1


def test_a_message_refused_past_its_retries_fails_and_can_be_retried_once_more(
    user, receiver, running_job
):
    receiver.answer = refusing_first(4)
    delivery = _delivery(user, receiver.url, running_job)

    for _ in range(4):  # the first attempt and three retries ("1,1,1")
        _due_now(delivery)
        webhook_delivery_attempt(delivery_id=delivery.pk)

    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == ("FAILED", 4, None)

    webhook_delivery_retry(delivery=delivery)
    assert webhook_delivery_attempt(delivery_id=delivery.pk) == "success"
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("SUCCEEDED", 5)
    assert {a.webhook_id for a in receiver.arrivals} == {delivery.webhook_id}


def test_only_a_failed_delivery_is_retried(user, receiver, running_job):
    delivery = _delivery(user, receiver.url, running_job)

    with pytest.raises(Exception) as refused:
        webhook_delivery_retry(delivery=delivery)

    assert refused.value.code == "NOT_RETRYABLE"


def test_a_redirect_is_not_followed_and_only_a_kilobyte_of_the_answer_is_kept(
    user, receiver, running_job
):
    receiver.answer = lambda webhook_id, attempt: 302
    receiver.redirect_to = "http://169.254.169.254/latest/meta-data/"
    receiver.response_body = b"x" * 5000
    delivery = _delivery(user, receiver.url, running_job)

    assert webhook_delivery_attempt(delivery_id=delivery.pk) == "http_error"

    delivery.refresh_from_db()
    assert delivery.last_response_status == 302
    assert "redirects are not followed" in delivery.last_error
    assert delivery.last_response_body == "x" * 1024
    assert len(receiver.arrivals) == 1


def test_a_target_no_longer_allowed_is_refused_at_send_without_a_request(
    user, receiver, running_job, settings
):
    delivery = _delivery(user, receiver.url, running_job)
    settings.WEBHOOK_ALLOW_PRIVATE = False  # e.g. production, on an endpoint made before

    assert webhook_delivery_attempt(delivery_id=delivery.pk) == "refused"

    delivery.refresh_from_db()
    assert "private or loopback" in delivery.last_error
    assert (delivery.last_response_status, delivery.status) == (None, "PENDING")
    assert receiver.arrivals == []


@pytest.mark.parametrize(
    "url", ["http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/hooks"]
)
def test_a_refused_address_is_never_connected_to(user, running_job, settings, url):
    """Rows written directly (as if the rules changed after registration): the check
    happens before any connection, on the literal address."""
    delivery = _delivery(user, "http://127.0.0.1:9/hooks", running_job)
    settings.WEBHOOK_ALLOW_PRIVATE = False
    WebhookEndpoint.objects.filter(pk=delivery.endpoint_id).update(url=url)

    assert webhook_delivery_attempt(delivery_id=delivery.pk) == "refused"

    delivery.refresh_from_db()
    assert "Webhooks may not be sent to" in delivery.last_error


def test_an_attempt_claimed_by_another_run_is_not_sent_twice(user, receiver, running_job):
    delivery = _delivery(user, receiver.url, running_job)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        status="SENDING", claimed_at=timezone.now()
    )

    assert webhook_delivery_attempt(delivery_id=delivery.pk) == "skipped"
    assert receiver.arrivals == []


def test_an_attempt_whose_worker_died_is_sent_by_the_sweep_and_taken(
    user, receiver, running_job, settings
):
    delivery = _delivery(user, receiver.url, running_job)
    lapsed = timezone.now() - settings.WEBHOOK_CLAIM_TIMEOUT - timedelta(seconds=1)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        status="SENDING", claimed_at=lapsed, attempts=1
    )

    assert webhook_deliveries_sweep()["sent"] == 1
    assert webhook_delivery_attempt(delivery_id=delivery.pk) == "success"

    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("SUCCEEDED", 2)
    assert receiver.taken == {delivery.webhook_id: 1}


def test_the_sweep_sends_what_was_never_sent_and_leaves_what_was_just_sent(
    user, receiver, running_job
):
    delivery = _delivery(user, receiver.url, running_job)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(dispatched_at=None)  # a lost send

    assert webhook_deliveries_sweep()["sent"] == 1
    assert webhook_deliveries_sweep()["sent"] == 0  # sent within its grace
    later = timezone.now() + timedelta(minutes=10)
    assert webhook_deliveries_sweep(now=later)["sent"] == 1  # its message was lost


def test_an_endpoint_failing_for_five_days_is_disabled_and_its_owner_emailed(
    user, receiver, running_job
):
    receiver.answer = lambda webhook_id, attempt: 500
    delivery = _delivery(user, receiver.url, running_job)
    webhook_delivery_attempt(delivery_id=delivery.pk)
    endpoint = WebhookEndpoint.objects.get()
    assert endpoint.is_active
    assert endpoint.failing_since is not None
    WebhookEndpoint.objects.update(failing_since=timezone.now() - timedelta(days=5, seconds=1))

    _due_now(delivery)
    webhook_delivery_attempt(delivery_id=delivery.pk)

    endpoint.refresh_from_db()
    assert not endpoint.is_active
    assert endpoint.disabled_at is not None
    email = OutgoingEmail.objects.get(template="webhook_endpoint_disabled")
    assert (email.to_address, email.context["url"]) == (user.email, receiver.url)


def test_a_success_clears_the_failing_streak(user, receiver, running_job):
    receiver.answer = refusing_first(1)
    delivery = _delivery(user, receiver.url, running_job)
    webhook_delivery_attempt(delivery_id=delivery.pk)
    assert WebhookEndpoint.objects.get().failing_since is not None

    _due_now(delivery)
    webhook_delivery_attempt(delivery_id=delivery.pk)

    assert WebhookEndpoint.objects.get().failing_since is None


def _scrape(settings) -> dict[tuple, float]:
    from django.test import Client
    from prometheus_client.parser import text_string_to_metric_families

    settings.METRICS_TOKEN = "scrape-secret"
    text = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-secret").content.decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_count_deliveries_by_status_and_attempts_by_outcome(
    user, receiver, running_job, settings
):
    receiver.answer = refusing_first(2)
    before = _scrape(settings)

    delivery = _delivery(user, receiver.url, running_job)
    for _ in range(3):
        _due_now(delivery)
        webhook_delivery_attempt(delivery_id=delivery.pk)

    after = _scrape(settings)
    moved = {
        key[1]: after.get(key, 0) - before.get(key, 0)
        for key in after
        if key[0] in ("jobstream_webhook_deliveries_total", "jobstream_webhook_attempts_total")
    }
    assert moved[(("status", "created"),)] == 1
    assert moved[(("status", "succeeded"),)] == 1
    assert moved.get((("status", "failed"),), 0) == 0
    assert moved[(("outcome", "http_error"),)] == 2
    assert moved[(("outcome", "success"),)] == 1
