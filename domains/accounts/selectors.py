from django.db.models import QuerySet

from domains.accounts.models import User


def user_list(*, viewer: User) -> QuerySet[User]:
    """Users the viewer may see: staff see everyone, others only themselves."""
    if not viewer.is_authenticated:
        return User.objects.none()
    if viewer.is_staff:
        return User.objects.all()
    return User.objects.filter(pk=viewer.pk)
