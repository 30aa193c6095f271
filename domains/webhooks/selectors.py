from django.db.models import QuerySet

from domains.accounts.models import User
from domains.webhooks.models import WebhookDelivery, WebhookEndpoint


def webhook_endpoint_list(*, viewer: User, own_only: bool = False) -> QuerySet[WebhookEndpoint]:
    """The viewer's own endpoints; staff may read every one (`own_only`: theirs alone)."""
    if not viewer.is_authenticated:
        return WebhookEndpoint.objects.none()
    if viewer.is_staff and not own_only:
        return WebhookEndpoint.objects.all()
    return WebhookEndpoint.objects.filter(owner=viewer)


def webhook_delivery_list(*, viewer: User) -> QuerySet[WebhookDelivery]:
    """Deliveries to the viewer's own endpoints; staff see all. A job's owner does not see
    the deliveries of a staff endpoint that follows every job."""
    if not viewer.is_authenticated:
        return WebhookDelivery.objects.none()
    if viewer.is_staff:
        return WebhookDelivery.objects.all()
    return WebhookDelivery.objects.filter(endpoint__owner=viewer)
