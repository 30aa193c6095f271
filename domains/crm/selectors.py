from django.db.models import QuerySet

from domains.accounts.models import User
from domains.crm.models import Customer, SyncLog


def customer_list(*, viewer: User) -> QuerySet[Customer]:
    """Staff only: anyone else sees none."""
    if not (viewer.is_authenticated and viewer.is_staff):
        return Customer.objects.none()
    return Customer.objects.all()


def sync_log_list(*, viewer: User) -> QuerySet[SyncLog]:
    if not (viewer.is_authenticated and viewer.is_staff):
        return SyncLog.objects.none()
    return SyncLog.objects.all()
