from django.db.models import QuerySet

from domains.accounts.models import User
from domains.analytics.models import MetricsSnapshot


def metrics_snapshot_list(*, viewer: User) -> QuerySet[MetricsSnapshot]:
    """Staff only: anyone else sees none."""
    if not (viewer.is_authenticated and viewer.is_staff):
        return MetricsSnapshot.objects.none()
    return MetricsSnapshot.objects.all()
