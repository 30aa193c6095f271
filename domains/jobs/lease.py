"""A running job's lease: renewed by every write of its row while its worker runs it; a
lapsed lease means nobody does (the watchdog and a redelivery may take the job on)."""

import time
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from domains.jobs.models import ACTIVE_STATUSES, Job


def lease_until(extra_seconds: float = 0) -> datetime:
    """When a lease taken now lapses (`extra_seconds` more, e.g. for a retry's wait)."""
    return timezone.now() + timedelta(seconds=settings.JOB_LEASE_SECONDS + extra_seconds)


# When this process last renewed each job's lease (every row write renews it).
_lease_renewed_at: dict[int, float] = {}


def job_lease_renewed(job_id: int) -> None:
    """This process renewed the job's lease just now."""
    _lease_renewed_at[job_id] = time.monotonic()


def job_lease_renewed_ago(job_id: int) -> float:
    """Seconds since this process last renewed the job's lease (inf: never)."""
    return time.monotonic() - _lease_renewed_at.get(job_id, float("-inf"))


def job_lease_forget(job_id: int) -> None:
    """This process no longer runs the job."""
    _lease_renewed_at.pop(job_id, None)


def job_lease_renew(*, job_id: int, extra_seconds: float = 0) -> bool:
    """Keep a running job's lease while its worker is busy (and `extra_seconds` more, for
    a part that waits to be retried); False once the job ended."""
    job_lease_renewed(job_id)
    return bool(
        Job.objects.filter(pk=job_id, status__in=ACTIVE_STATUSES).update(
            lease_expires_at=lease_until(extra_seconds)
        )
    )
