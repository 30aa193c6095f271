"""notificationSend refuses what it cannot send, with a code, and writes nothing."""

import pytest

from domains.errors import DomainError
from domains.jobs.models import Job
from domains.notifications.models import Notification
from domains.notifications.services import notification_send
from testbed.factories import make_user


@pytest.mark.parametrize(
    ("changes", "code", "field"),
    [
        ({"channels": []}, "NO_CHANNELS", "channels"),
        ({"notification_type": "   "}, "INVALID", "notificationType"),
        ({"notification_type": "x" * 65}, "INVALID", "notificationType"),
        ({"data": {"body": "x" * 5_000}}, "DATA_TOO_LARGE", "data"),
        ({"recipient_id": 10**9}, "NOT_FOUND", "userId"),
    ],
)
def test_bad_input_is_refused_with_a_code_and_nothing_is_written(
    transactional_db, changes, code, field
):
    staff, user = make_user(is_staff=True), make_user()
    arguments = {
        "viewer": staff,
        "recipient_id": user.pk,
        "notification_type": "order_shipped",
        "channels": ["EMAIL"],
        "data": {},
        **changes,
    }

    with pytest.raises(DomainError) as refused:
        notification_send(**arguments)

    assert (refused.value.code, refused.value.field) == (code, field)
    assert (Notification.objects.count(), Job.objects.count()) == (0, 0)


def test_a_non_staff_viewer_is_refused_by_the_service_too(transactional_db):
    user = make_user()

    with pytest.raises(DomainError) as refused:
        notification_send(
            viewer=user, recipient_id=user.pk, notification_type="t", channels=["EMAIL"]
        )

    assert refused.value.code == "PERMISSION_DENIED"
    assert Notification.objects.count() == 0
