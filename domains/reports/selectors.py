from django.db.models import QuerySet

from domains.accounts.models import User
from domains.reports.models import Report


def report_list(*, viewer: User) -> QuerySet[Report]:
    """The viewer's own reports; staff see all."""
    if not viewer.is_authenticated:
        return Report.objects.none()
    if viewer.is_staff:
        return Report.objects.all()
    return Report.objects.filter(owner=viewer)
