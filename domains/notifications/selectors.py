from django.db.models import QuerySet

from domains.accounts.models import User
from domains.notifications.models import Notification


def notification_list(*, viewer: User) -> QuerySet[Notification]:
    """Staff see every notification; a user sees those sent to them."""
    if not viewer.is_authenticated:
        return Notification.objects.none()
    if viewer.is_staff:
        return Notification.objects.all()
    return Notification.objects.filter(recipient=viewer)
