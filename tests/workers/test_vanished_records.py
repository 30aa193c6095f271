"""A record that vanished under a task ends its work FAILURE with a reason that names it,
through a real worker: a job's part through its canvas's error callback, a follow-up on
its outbox row (done: nothing is left to settle, so it is not sent again)."""

import pytest
from celery.exceptions import Ignore
from django.db import transaction

from domains.jobs.attempts import job_attempt_start
from domains.jobs.models import FollowUp, JobKind, JobStatus
from domains.jobs.outbox import followup_queue
from domains.jobs.services import job_create
from domains.jobs.tasks import JobTaskName
from testbed.waiting import job_finished, wait_until
from workers.analytics import aggregate_snapshot, user_metrics
from workers.chords import start_chain
from workers.notifications import deliver, gather_results

pytestmark = pytest.mark.e2e
GONE = 10**9  # no row has this id


# Each part of a canvas whose record is gone, and the job kind it serves. Before the one
# loader each raised DoesNotExist, masked as "an internal error".
PARTS = {
    "analytics.user_metrics": (
        JobKind.METRICS_SNAPSHOT,
        lambda job_id: user_metrics.si(
            job_id=job_id, snapshot_id=GONE, first_id=1, last_id=4, total=4
        ),
        "The snapshot no longer exists.",
    ),
    "analytics.aggregate_snapshot": (
        JobKind.METRICS_SNAPSHOT,
        lambda job_id: aggregate_snapshot.si([], snapshot_id=GONE, job_id=job_id),
        "The snapshot no longer exists.",
    ),
    "notifications.deliver": (
        JobKind.NOTIFICATION,
        lambda job_id: deliver.si(job_id=job_id, delivery_id=GONE),
        "The notification delivery no longer exists.",
    ),
    "notifications.gather_results": (
        JobKind.NOTIFICATION,
        lambda job_id: gather_results.si([], notification_id=GONE, job_id=job_id, settled={}),
        "The notification no longer exists.",
    ),
}


@pytest.mark.parametrize("part", list(PARTS))
def test_a_part_whose_record_vanished_ends_the_job_failure_saying_so(live, staff_user, part):
    kind, signature, reason = PARTS[part]
    job = job_create(kind=kind, owner=staff_user)
    job_attempt_start(job_id=job.pk)[1].started()

    with pytest.raises(Ignore):  # the job is handed over to its canvas
        start_chain(job_id=job.pk, steps=[signature(job.pk)])

    job = job_finished(job.pk)
    assert (job.status, job.error) == (JobStatus.FAILURE, reason)


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
