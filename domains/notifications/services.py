"""Notifications: sending one over several channels in parallel, and a user's preferences.

A notification has a delivery row per channel asked for. Channels the user turned off or
has no address on get their result ("disabled", "no_token", "no_address") before anything
is sent; each remaining delivery is claimed by one conditional UPDATE and sent once.
"""

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from domains.accounts.models import User
from domains.accounts.permissions import staff_required
from domains.errors import CommonErrorCode, NotFound
from domains.infra.claims import claim_lapses_in, claim_take
from domains.integrations.client import RequestRejected, RetryLater
from domains.jobs.cancellation import cancel_deferred
from domains.jobs.ending import JobEnd
from domains.jobs.models import JobKind, JobStatus
from domains.jobs.services import job_create, job_dispatch
from domains.jobs.tasks import JobTaskName
from domains.notifications.errors import NotificationError, NotificationErrorCode
from domains.notifications.models import Channel, DeliveryStatus, Notification, NotificationDelivery
from domains.notifications.providers import provider

logger = logging.getLogger(__name__)

MAX_DATA_BYTES = 4_096
MAX_PUSH_TOKEN = 255
PREFERENCE_FIELDS = {
    Channel.EMAIL: "email_notifications",
    Channel.SMS: "sms_notifications",
    Channel.PUSH: "push_notifications",
}
SETTLED_BEFORE_SENDING = frozenset(
    {DeliveryStatus.DISABLED, DeliveryStatus.NO_TOKEN, DeliveryStatus.NO_ADDRESS}
)
NO_ADDRESS = {
    Channel.EMAIL: DeliveryStatus.NO_ADDRESS,
    Channel.SMS: DeliveryStatus.NO_ADDRESS,
    Channel.PUSH: DeliveryStatus.NO_TOKEN,
}


def notification_send(
    *,
    viewer: User,
    recipient_id: int,
    notification_type: str,
    channels: Sequence[Channel | str],
    data: Mapping[str, Any] | None = None,
) -> Notification:
    """Staff: notify a user over `channels`; the fan-out task is sent on commit."""
    staff_required(viewer)
    notification_type = notification_type.strip()
    if not notification_type or len(notification_type) > 64:
        raise NotificationError(
            "Enter a notification type of 1 to 64 characters.",
            code=CommonErrorCode.INVALID,
            field="notificationType",
        )
    wanted = list(dict.fromkeys(Channel(c) for c in channels))
    if not wanted:
        raise NotificationError(
            "Choose at least one channel.", code=NotificationErrorCode.NO_CHANNELS, field="channels"
        )
    data = dict(data or {})
    if len(json.dumps(data, default=str)) > MAX_DATA_BYTES:
        raise NotificationError(
            f"The data may be at most {MAX_DATA_BYTES} bytes of JSON.",
            code=NotificationErrorCode.DATA_TOO_LARGE,
            field="data",
        )
    recipient = User.objects.filter(pk=recipient_id, is_active=True).first()
    if recipient is None:
        raise NotFound("No such user.", field="userId")
    with transaction.atomic(durable=True):
        job = job_create(kind=JobKind.NOTIFICATION, owner=viewer, total=len(wanted))
        notification = Notification.objects.create(
            recipient=recipient,
            sent_by=viewer,
            notification_type=notification_type,
            data=data,
            channels=[str(c) for c in wanted],
            job=job,
        )
        NotificationDelivery.objects.bulk_create(
            [NotificationDelivery(notification=notification, channel=c) for c in wanted]
        )
        job_dispatch(
            job=job, task_name=JobTaskName.NOTIFICATIONS_FAN_OUT, notification_id=notification.pk
        )
    logger.info("notification.requested", extra={"notification_id": notification.pk})
    return notification


def notification_fan_out_start(*, notification: Notification) -> tuple[list[int], dict[str, str]]:
    """Settle the channels that will not be sent; say which deliveries are to be sent.

    Returns their ids, and the results of the settled ones ({"sms": "disabled", ...}).
    Safe to run again (a redelivered task): settled channels keep their result, and the
    ones sent or being sent are listed again, since their task answers with their status
    rather than sending twice; so every run gathers the same results.
    """
    Notification.objects.filter(pk=notification.pk, dispatched_at__isnull=True).update(
        dispatched_at=timezone.now()
    )
    user = notification.recipient
    for delivery in notification.deliveries.filter(status=DeliveryStatus.PENDING):
        channel = Channel(delivery.channel)
        if not getattr(user, PREFERENCE_FIELDS[channel]):
            reason = DeliveryStatus.DISABLED
        elif not provider(channel).address(user):
            reason = NO_ADDRESS[channel]
        else:
            continue
        NotificationDelivery.objects.filter(pk=delivery.pk, status=DeliveryStatus.PENDING).update(
            status=reason
        )
    to_send, settled = [], {}
    for delivery in notification.deliveries.all():
        if delivery.status in SETTLED_BEFORE_SENDING:
            settled[delivery.channel.lower()] = delivery.status
        else:
            to_send.append(delivery.pk)
    return to_send, settled


def _result(delivery: NotificationDelivery) -> dict[str, str]:
    return {"channel": delivery.channel.lower(), "status": delivery.status}


def delivery_send(*, delivery_id: int) -> dict[str, str]:
    """Send one channel of a notification, once; returns {"channel", "status"}.

    Raises RetryLater when the provider may take it later (the claim is handed back), or
    while another run holds its claim: until the claim lapses (that run died), when this
    run takes the send over.
    """
    now = timezone.now()
    expiry = settings.NOTIFICATION_CLAIM_TIMEOUT
    claimed = claim_take(
        NotificationDelivery.objects.filter(pk=delivery_id),
        free=DeliveryStatus.PENDING,
        held=DeliveryStatus.SENDING,
        expiry=expiry,
        now=now,
    )
    delivery = NotificationDelivery.objects.select_related("notification__recipient").get(
        pk=delivery_id
    )
    if not claimed:
        if delivery.status == DeliveryStatus.SENDING:
            raise RetryLater(
                delivery.channel.lower(),
                "being sent by another run",
                retry_after=claim_lapses_in(delivery.claimed_at, expiry=expiry, now=now),
            )
        return _result(delivery)
    ours = NotificationDelivery.objects.filter(
        pk=delivery_id, status=DeliveryStatus.SENDING, claimed_at=now
    )
    notification = delivery.notification
    try:
        with cancel_deferred():  # a message handed over cannot be called back: learn its fate
            message_id = provider(delivery.channel).send(
                user=notification.recipient, notification=notification
            )
    except RequestRejected as error:
        return delivery_fail(delivery_id=delivery_id, error=f"{error} {error.body}")
    except RetryLater:
        # It may go through later: give the claim back for the retry.
        ours.update(status=DeliveryStatus.PENDING, claimed_at=None)
        raise
    ours.update(
        status=DeliveryStatus.SENT, provider_message_id=message_id[:128], sent_at=timezone.now()
    )
    logger.info("notification.delivered", extra={"delivery_id": delivery_id})
    return {"channel": delivery.channel.lower(), "status": DeliveryStatus.SENT}


def delivery_fail(*, delivery_id: int, error: str) -> dict[str, str]:
    NotificationDelivery.objects.filter(
        pk=delivery_id, status__in=[DeliveryStatus.PENDING, DeliveryStatus.SENDING]
    ).update(status=DeliveryStatus.FAILED, error_message=error[:1000])
    logger.warning("notification.delivery_failed", extra={"delivery_id": delivery_id})
    return _result(NotificationDelivery.objects.get(pk=delivery_id))


def notification_results_record(
    *, notification: Notification, results: Sequence[Mapping[str, str]], settled: Mapping[str, str]
) -> dict[str, str]:
    """Gather every channel's result onto the notification: {"email": "sent", ...}."""
    gathered = {**settled, **{r["channel"]: r["status"] for r in results}}
    ordered = {
        c.lower(): gathered[c.lower()] for c in notification.channels if c.lower() in gathered
    }
    Notification.objects.filter(pk=notification.pk).update(results=ordered)
    return ordered


def notification_preferences_update(
    *,
    viewer: User,
    email: bool | None = None,
    sms: bool | None = None,
    push: bool | None = None,
    push_token: str | None = None,
) -> User:
    """The viewer's own channel switches and device token; None leaves a value as it is."""
    changes: dict[str, Any] = {}
    for channel, value in ((Channel.EMAIL, email), (Channel.SMS, sms), (Channel.PUSH, push)):
        if value is not None:
            changes[PREFERENCE_FIELDS[channel]] = value
    if push_token is not None:
        push_token = push_token.strip()
        if len(push_token) > MAX_PUSH_TOKEN:
            raise NotificationError(
                f"A push token has at most {MAX_PUSH_TOKEN} characters.",
                code=CommonErrorCode.INVALID,
                field="pushToken",
            )
        changes["push_token"] = push_token
    if changes:
        User.objects.filter(pk=viewer.pk).update(**changes)
        viewer.refresh_from_db(fields=list(changes))
    return viewer


def notification_job_ended(notification: Notification, end: JobEnd) -> None:
    """A fan-out whose job ended before every channel went: the channels not yet sent are
    cancelled, or failed with the reason."""
    if end.status == JobStatus.SUCCESS:
        return
    cancelled = end.status == JobStatus.CANCELLED
    NotificationDelivery.objects.filter(
        notification=notification, status=DeliveryStatus.PENDING
    ).update(
        status=DeliveryStatus.CANCELLED if cancelled else DeliveryStatus.FAILED,
        error_message="" if cancelled else end.reason[:1000],
    )
