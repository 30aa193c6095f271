from django.db.models import QuerySet

from domains.accounts.models import User
from domains.payments.models import Payment


def payment_list(*, viewer: User) -> QuerySet[Payment]:
    """Payments of the viewer's orders; staff see all."""
    if not viewer.is_authenticated:
        return Payment.objects.none()
    if viewer.is_staff:
        return Payment.objects.all()
    return Payment.objects.filter(order__customer=viewer)
