"""A delivery of a job's task claims the job: it counts the attempt and holds the lease."""

from django.db.models import F, Q
from django.utils import timezone

from domains.infra.metrics import jobs_started
from domains.jobs.lease import lease_until
from domains.jobs.models import ACTIVE_STATUSES, Job, JobStatus
from domains.jobs.reporter import JobReporter


def job_attempt_start(
    *, job_id: int, redelivered: bool = False, retry: bool = False
) -> tuple[Job, JobReporter] | None:
    """Claim a delivery of a job's task: count the attempt, hold the lease.

    A delivery may claim a job that is pending or waiting for its retry, one whose lease
    lapsed (its worker stopped), or any running job when the broker says the message was
    redelivered (its worker was lost) or when it is a retry (sent by the run before it,
    which may not have recorded RETRY yet). Anything else is a duplicate of a delivery that is
    alive, or of a job that ended: None, and the caller drops it. A Celery retry is not
    another attempt (retries have their own budget); a redelivery is.
    """
    claimable = Q(status__in=[JobStatus.PENDING, JobStatus.RETRY]) | Q(
        lease_expires_at__lt=timezone.now()
    )
    if redelivered or retry:
        # The delivery before it is gone (its worker was lost, or it sent this retry and
        # ended): this one carries the job on, whatever state that one left.
        claimable |= Q(status__in=ACTIVE_STATUSES)
    claimed = Job.objects.filter(claimable, pk=job_id, status__in=ACTIVE_STATUSES).update(
        attempts=F("attempts") + (0 if retry and not redelivered else 1),
        lease_expires_at=lease_until(),
    )
    if not claimed:
        return None
    job = Job.objects.get(pk=job_id)
    if job.attempts == 1 and not retry:
        jobs_started.labels(kind=job.kind).inc()
    return job, JobReporter(job)
