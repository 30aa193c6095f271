"""The one staff check. A staff-only service calls it first; the schema's `IsStaff`
permission class (schema/permissions.py) calls it before the resolver, so every refusal
reads the same: PermissionDenied, answered as the operation's top-level error."""

from domains.errors import PermissionDenied

STAFF_ONLY_MESSAGE = "User is not a staff member."


def staff_required(viewer) -> None:
    """Refuse anyone but an active staff user (an anonymous viewer or a job token too)."""
    if not (viewer is not None and viewer.is_authenticated and viewer.is_staff):
        raise PermissionDenied(STAFF_ONLY_MESSAGE)
