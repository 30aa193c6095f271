"""Who a request acts as: a user, nobody, or a job token's holder.

A job token (jobAccessTokenCreate) is handed to a browser or a phone to follow one job.
Its viewer is a JobTokenViewer: anonymous to every rule that asks for a user (so `me` is
null, every selector returns nothing, every permission that needs a user refuses), except
the one read a job token exists for: the jobs selector (domains/jobs/selectors.py) gives it
its one job, and the streams hold it to its owner's access. What it may not do is decided
here, once: the schema reads `job_scope` and `credential_holder_id`, never the token.
"""

from datetime import datetime
from typing import Any

from django.contrib.auth.models import AnonymousUser


class JobTokenViewer(AnonymousUser):
    """The viewer of a job token: reads job `job_id` for the token's owner, nothing else.

    Deliberately not a User (and `is_authenticated` False, `is_staff` False even for a
    staff owner): every check written for users refuses it by default, so no rule has to
    remember job tokens to keep them out.
    """

    def __init__(self, *, owner_id: int, job_id: int, token_id: int, expires_at: datetime):
        self.owner_id = owner_id
        self.job_id = job_id
        self.token_id = token_id
        self.expires_at = expires_at

    def __str__(self) -> str:
        return f"job token for job {self.job_id}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JobTokenViewer) and other.token_id == self.token_id

    def __hash__(self) -> int:
        return hash(("job-token", self.token_id))


def job_scope(viewer: Any) -> int | None:
    """The one job a scoped viewer may read; None for any other viewer."""
    return viewer.job_id if isinstance(viewer, JobTokenViewer) else None


def credential_holder_id(viewer: Any) -> int | None:
    """The user whose credentials the viewer holds (the user, or a job token's owner);
    None for an anonymous viewer. Streams are held to this user's access."""
    if isinstance(viewer, JobTokenViewer):
        return viewer.owner_id
    if viewer is not None and viewer.is_authenticated:
        return viewer.pk
    return None
