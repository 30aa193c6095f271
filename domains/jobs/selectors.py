from django.db.models import QuerySet

from domains.accounts.models import User
from domains.jobs.models import Job


def job_list(*, viewer: User) -> QuerySet[Job]:
    """The viewer's own jobs; staff see every job."""
    if not viewer.is_authenticated:
        return Job.objects.none()
    if viewer.is_staff:
        return Job.objects.all()
    return Job.objects.filter(owner=viewer)
