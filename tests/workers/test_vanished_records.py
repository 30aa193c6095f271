"""A record that vanished under a task ends its work FAILURE with a reason that names it,
through a real worker: a job's part through its canvas's error callback, a follow-up on
its outbox row (done: nothing is left to settle, so it is not sent again)."""

import pytest
from celery.exceptions import Ignore
from django.db import transaction

from domains.jobs.models import FollowUp, JobKind, JobStatus
from domains.jobs.outbox import followup_queue
from domains.jobs.progress import job_attempt_start
from domains.jobs.services import job_create
from domains.jobs.tasks import JobTaskName
from tests.fixtures.waiting import job_finished, wait_until
from workers.analytics import user_metrics
from workers.chords import start_chain

pytestmark = pytest.mark.e2e
GONE = 10**9  # no row has this id


def test_a_part_whose_snapshot_vanished_ends_the_job_failure_saying_so(live, staff_user):
    # Before the one loader: DoesNotExist, masked as "an internal error".
    job = job_create(kind=JobKind.METRICS_SNAPSHOT, owner=staff_user)
    job_attempt_start(job_id=job.pk)[1].started()
    part = user_metrics.si(job_id=job.pk, snapshot_id=GONE, first_id=1, last_id=4, total=4)

    with pytest.raises(Ignore):  # the job is handed over to its canvas
        start_chain(job_id=job.pk, steps=[part])

    job = job_finished(job.pk)
    assert (job.status, job.error) == (JobStatus.FAILURE, "The snapshot no longer exists.")


@pytest.mark.parametrize(
    ("task_name", "kwargs", "reason"),
    [
        # Before: logged, then done as if it had compensated.
        (JobTaskName.ORDERS_CHECKOUT_COMPENSATE, {"order_id": GONE}, "The order no longer exists."),
        # Before: `return False`, done as if the email had been sent earlier.
        (JobTaskName.ORDERS_SEND_CONFIRMATION, {"order_id": GONE}, "The order no longer exists."),
        # Before: logged, then done as if reconciled.
        (JobTaskName.PAYMENTS_RECONCILE, {"payment_id": GONE}, "The payment no longer exists."),
    ],
)
def test_a_followup_whose_record_vanished_is_done_saying_so(live, task_name, kwargs, reason):
    with transaction.atomic():
        followup = followup_queue(task_name=task_name, key=f"vanished:{task_name}", **kwargs)

    done = wait_until(
        lambda: FollowUp.objects.filter(pk=followup.pk, done_at__isnull=False).first(),
        message="the follow-up's run",
    )

    assert done.error == reason
    assert done.sends == 1, "not sent again"
