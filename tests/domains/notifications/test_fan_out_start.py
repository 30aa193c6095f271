"""The fan-out's start, without Celery: preferences settle channels, and it starts once."""

from domains.jobs.models import Job
from domains.notifications.models import DeliveryStatus, Notification, NotificationDelivery
from domains.notifications.services import notification_fan_out_start
from testbed.factories import make_user


def _notification(user, channels) -> Notification:
    notification = Notification.objects.create(
        recipient=user,
        notification_type="t",
        channels=channels,
        job=Job.objects.create(kind="NOTIFICATION"),
    )
    NotificationDelivery.objects.bulk_create(
        [NotificationDelivery(notification=notification, channel=c) for c in channels]
    )
    return notification


def test_preferences_and_missing_addresses_settle_channels_before_sending(transactional_db):
    user = make_user(email_notifications=False, phone="", push_token="")
    notification = _notification(user, ["EMAIL", "SMS", "PUSH"])

    to_send, settled = notification_fan_out_start(notification=notification)

    assert to_send == []
    assert settled == {"email": "disabled", "sms": "no_address", "push": "no_token"}
    assert set(notification.deliveries.values_list("status", flat=True)) == {
        DeliveryStatus.DISABLED,
        DeliveryStatus.NO_ADDRESS,
        DeliveryStatus.NO_TOKEN,
    }


def test_a_second_start_plans_the_same_fan_out(transactional_db):
    user = make_user(phone="+15550002001", push_token="", sms_notifications=False)
    notification = _notification(user, ["EMAIL", "SMS", "PUSH"])

    first = notification_fan_out_start(notification=notification)
    NotificationDelivery.objects.filter(channel="EMAIL").update(status=DeliveryStatus.SENT)
    second = notification_fan_out_start(notification=notification)

    assert first == second
    assert first[1] == {"sms": "disabled", "push": "no_token"}
    assert first[0] == [notification.deliveries.get(channel="EMAIL").pk]
