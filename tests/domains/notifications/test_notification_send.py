"""Fan-out: one notification, its channels sent in parallel, each result gathered into
the one Job; a user's preferences decide what is sent at all."""

import time
from datetime import timedelta

import pytest
from celery import current_app
from django.db import transaction
from django.utils import timezone

from domains.jobs.models import Job, JobKind
from domains.jobs.services import job_create, job_dispatch
from domains.jobs.tasks import JobTaskName
from domains.notifications.models import Channel, DeliveryStatus, Notification, NotificationDelivery
from domains.sandbox.messaging import INVALID_PUSH_TOKEN, RATE_LIMITED_NUMBER, sent_messages
from schema.base import global_id
from testbed.factories import make_user
from testbed.stack import kill_running
from testbed.waiting import job_finished
from tests.domains.notifications.conftest import CLAIM_SECONDS
from tests.fixtures.redis import job_terminal_statuses

pytestmark = pytest.mark.e2e

SEND = """
mutation($input: NotificationSendInput!) { notificationSend(input: $input) {
  notification { id channels } job { id kind status } errors { field code message } } }
"""
PREFERENCES = """
mutation($input: NotificationPreferencesUpdateInput!) { notificationPreferencesUpdate(input: $input) {
  preferences { email sms push hasPushToken } errors { field code } } }
"""
ALL_CHANNELS = ["EMAIL", "SMS", "PUSH"]


def _send(client, user, channels=ALL_CHANNELS, **data):
    started = client.data(
        SEND,
        {
            "input": {
                "userId": str(global_id("User", user.pk)),
                "notificationType": "order_shipped",
                "channels": channels,
                "data": {"title": "Your order shipped", "body": "It is on its way.", **data},
            }
        },
    )["notificationSend"]
    assert started["errors"] == [], started["errors"]
    return Notification.objects.get(recipient=user)


def test_disabled_sms_and_missing_push_token_are_results_and_email_is_sent(live, smtp, staff_user):
    user = make_user(phone="+15550001001", sms_notifications=False, push_token="")

    notification = _send(live.client(staff_user), user)
    job = job_finished(notification.job_id)

    assert (job.status, job.kind) == ("SUCCESS", "NOTIFICATION")
    assert job.result == {"email": "sent", "sms": "disabled", "push": "no_token"}
    assert Job.objects.filter(kind="NOTIFICATION").count() == 1
    [message] = smtp.wait_for(user.email)
    assert message["Subject"] == "Your order shipped"
    assert sent_messages("sms", to="+15550001001") == []
    notification.refresh_from_db()
    assert notification.results == job.result
    assert dict(notification.deliveries.values_list("channel", "status")) == {
        "EMAIL": DeliveryStatus.SENT,
        "SMS": DeliveryStatus.DISABLED,
        "PUSH": DeliveryStatus.NO_TOKEN,
    }


def test_every_channel_reaches_its_provider_once(live, smtp, staff_user):
    user = make_user(phone="+15550001002", push_token="device-abc-1002")

    notification = _send(live.client(staff_user), user)
    job = job_finished(notification.job_id)

    assert job.result == {"email": "sent", "sms": "sent", "push": "sent"}
    assert len(smtp.wait_for(user.email)) == 1
    [sms] = sent_messages("sms", to="+15550001002")
    assert sms["body"] == "It is on its way."
    [push] = sent_messages("push", token="device-abc-1002")
    assert (push["title"], push["data"]["body"]) == ("Your order shipped", "It is on its way.")


def test_a_refused_channel_fails_alone_and_the_others_still_gather(live, smtp, staff_user):
    user = make_user(phone="+15550001003", push_token=INVALID_PUSH_TOKEN)

    notification = _send(live.client(staff_user), user)
    job = job_finished(notification.job_id)

    assert job.status == "SUCCESS"
    assert job.result == {"email": "sent", "sms": "sent", "push": "failed"}
    push = notification.deliveries.get(channel="PUSH")
    assert "400" in push.error_message


def test_preferences_are_the_viewers_own_and_decide_the_next_send(live, smtp, staff_user):
    user = make_user(phone="+15550001004")
    own = live.client(user)

    updated = own.data(PREFERENCES, {"input": {"email": False, "pushToken": "device-own-1004"}})[
        "notificationPreferencesUpdate"
    ]
    notification = _send(live.client(staff_user), user)
    job = job_finished(notification.job_id)

    assert updated == {
        "preferences": {"email": False, "sms": True, "push": True, "hasPushToken": True},
        "errors": [],
    }
    assert job.result == {"email": "disabled", "sms": "sent", "push": "sent"}
    assert smtp.sent_to(user.email) == []


def test_a_push_token_too_long_is_refused_and_nothing_changes(live, user):
    body = live.client(user).data(PREFERENCES, {"input": {"sms": False, "pushToken": "x" * 300}})

    assert body["notificationPreferencesUpdate"]["errors"] == [
        {"field": "pushToken", "code": "INVALID"}
    ]
    user.refresh_from_db()
    assert (user.sms_notifications, user.push_token) == (True, "")


def test_a_channel_the_provider_keeps_throttling_is_retried_then_failed(live, smtp, staff_user):
    user = make_user(phone=RATE_LIMITED_NUMBER)  # the sandbox answers 429, Retry-After: 1

    notification = _send(live.client(staff_user), user, channels=["EMAIL", "SMS"])
    job = job_finished(notification.job_id, timeout=60)

    assert job.status == "SUCCESS"
    assert job.result == {"email": "sent", "sms": "failed"}
    sms = notification.deliveries.get(channel="SMS")
    assert "rate limited" in sms.error_message
    assert len(smtp.sent_to(user.email)) == 1


def test_a_redelivered_fan_out_sends_each_channel_once(live, smtp, staff_user):
    user = make_user(phone="+15550001005", push_token="device-1005")
    smtp.delay = 0.3  # slow enough that the two runs overlap

    notification = _send(live.client(staff_user), user)
    current_app.send_task(  # the same task again, as a redelivery after a lost worker
        "notifications.fan_out",
        kwargs={"job_id": notification.job_id, "notification_id": notification.pk},
    )
    job = job_finished(notification.job_id)
    time.sleep(3)  # give a duplicate time to show up (none may come)

    assert job.result == {"email": "sent", "sms": "sent", "push": "sent"}
    assert len(smtp.sent_to(user.email)) == 1
    assert len(sent_messages("sms", to="+15550001005")) == 1
    assert len(sent_messages("push", token="device-1005")) == 1


def test_a_channel_past_its_time_limit_is_a_failed_result_not_left_sending(live, smtp, staff_user):
    user = make_user(phone="+15550001009", push_token="")
    smtp.delay = 6  # the relay hangs past the worker's 3-second soft limit for a channel

    notification = _send(live.client(staff_user), user, channels=["EMAIL", "SMS"])
    job = job_finished(notification.job_id, timeout=30)

    assert job.status == "SUCCESS"
    assert job.result == {"email": "failed", "sms": "sent"}
    email = notification.deliveries.get(channel="EMAIL")
    assert email.status == DeliveryStatus.FAILED
    assert "time limit" in email.error_message


def test_a_worker_killed_mid_delivery_ends_the_notification_once_and_nothing_loops(
    live, smtp, staff_user
):
    user = make_user()
    smtp.delay = 2  # the email channel is being sent when its worker is killed

    notification = _send(live.client(staff_user), user, channels=["EMAIL"])
    kill_running("notifications.deliver")
    job = job_finished(notification.job_id, timeout=90)

    assert job_terminal_statuses(job.pk) == ["SUCCESS"], "ended once"
    # The killed run's claim lapsed and the redelivery took the send over: sent, at least
    # once (the relay may have taken the killed run's message: its outcome was unknown).
    assert job.result == {"email": "sent"}
    assert notification.deliveries.get().status == DeliveryStatus.SENT
    assert 1 <= len(smtp.sent_to(user.email)) <= 2
    assert live.worker.alive()


def test_a_claim_whose_run_died_lapses_and_the_delivery_is_sent_once(live, smtp, staff_user):
    user = make_user()
    job = job_create(kind=JobKind.NOTIFICATION, owner=staff_user, total=1)
    notification = Notification.objects.create(
        recipient=user,
        sent_by=staff_user,
        notification_type="order_shipped",
        data={"title": "Your order shipped", "body": "It is on its way."},
        channels=["EMAIL"],
        job=job,
    )
    claimed_at = timezone.now()  # a run claimed the delivery, then died before sending
    delivery = NotificationDelivery.objects.create(
        notification=notification,
        channel=Channel.EMAIL,
        status=DeliveryStatus.SENDING,
        claimed_at=claimed_at,
    )

    with transaction.atomic():
        job_dispatch(
            job=job, task_name=JobTaskName.NOTIFICATIONS_FAN_OUT, notification_id=notification.pk
        )
    job = job_finished(job.pk, timeout=60)
    time.sleep(2)  # give a duplicate time to show up (none may come)

    delivery.refresh_from_db()
    assert job_terminal_statuses(job.pk) == ["SUCCESS"], "ended once"
    assert job.result == {"email": "sent"}
    assert delivery.status == DeliveryStatus.SENT
    assert delivery.claimed_at >= claimed_at + timedelta(seconds=CLAIM_SECONDS), "once lapsed"
    assert len(smtp.sent_to(user.email)) == 1
