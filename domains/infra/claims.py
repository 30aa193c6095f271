"""A claim: the one way a run takes a row for work that must happen once (a send).

One conditional UPDATE takes a row that is free, or one whose claim lapsed: a claim older
than its expiry belongs to a run that died (the expiry is past the longest the work may
run, its task's hard time limit), so another run may take the work over, as a job whose
lease lapsed is sent again by the watchdog. The holder then writes its outcome matching
its own claim's instant, so a run that was taken over cannot overwrite the new one's.
"""

from datetime import datetime, timedelta

from django.db.models import Q, QuerySet


def claim_take(
    rows: QuerySet, *, free: str, held: str, expiry: timedelta, now: datetime, **changes
) -> bool:
    """Whether this run took the rows: `free`, or `held` by a claim older than `expiry`."""
    return bool(
        rows.filter(Q(status=free) | Q(status=held, claimed_at__lt=now - expiry)).update(
            status=held, claimed_at=now, **changes
        )
    )


def claim_lapses_in(claimed_at: datetime, *, expiry: timedelta, now: datetime) -> float:
    """Seconds until another run's claim lapses (at least one): when to try again."""
    return max(1.0, (claimed_at + expiry - now).total_seconds())
