"""A cancel of a running job that has published nothing yet leaves its flag in a key that
expires (docs/redis-keys.md: every key has a bound)."""

import pytest
from django.conf import settings

from domains.infra.redis import progress_client
from domains.jobs.events import snapshot_key
from domains.jobs.models import Job, JobKind, JobStatus
from domains.jobs.services import job_cancel, job_create
from testbed.factories import make_user

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_cancel_flag_of_a_job_without_a_snapshot_expires():
    job = job_create(kind=JobKind.SALES_REPORT, owner=make_user())
    Job.objects.filter(pk=job.pk).update(status=JobStatus.STARTED)

    job_cancel(job=Job.objects.get(pk=job.pk))

    key = snapshot_key(job.pk)
    assert progress_client().hget(key, "cancel")  # the accepted cancel's time, for its worker
    assert 0 < progress_client().ttl(key) <= settings.JOB_SNAPSHOT_TTL.total_seconds()
