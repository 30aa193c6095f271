"""Every JobKind x every way a job ends: the Job, its domain record and a live subscriber
(jobProgress over a websocket to the real server) agree, through the one transition, and
the subscriber completes.

The paths: the task's outcome (success; failure, a retry budget exhausted and a time
limit, each the exception the worker kit ends the job for, turned into its status and
reason by the kit's own policy), a cancel while pending (ended at once) and a cancel
while running (ended when the reporter sees the flag). The job is claimed and ended in
this process as a worker would; end-to-end tests through real workers live beside each
domain.
"""

import asyncio

import pytest
from billiard.exceptions import SoftTimeLimitExceeded

from domains.errors import DomainError
from domains.integrations.client import RetryLater
from domains.jobs.attempts import job_attempt_start
from domains.jobs.ending import job_end
from domains.jobs.models import Job, JobKind, JobStatus
from domains.jobs.reporter import JobCancelled
from domains.jobs.services import job_cancel, job_create
from domains.notifications.models import (
    NotificationDelivery,
)
from domains.reports.models import Report
from schema.base import global_id
from testbed.factories import make_token
from testbed.graphql import JOB_PROGRESS, Subscription
from tests.domains.jobs.records import JOB_RECORDS
from workers.analytics import generate_snapshot
from workers.base import GaveUp

pytestmark = pytest.mark.django_db(transaction=True)


def _status_reader(kind, user, job):
    """Builds the kind's record; returns what reads its status (a notification's is its
    delivery's; a product sync has no record)."""
    if kind not in JOB_RECORDS:
        return lambda: None
    record = JOB_RECORDS[kind](user, job)
    if kind == JobKind.NOTIFICATION:
        return lambda: NotificationDelivery.objects.get(notification=record).status
    return lambda: type(record).objects.get(pk=record.pk).status


RECORDS = dict.fromkeys([*JOB_RECORDS, JobKind.PRODUCT_SYNC])

# What each record says after its job ends each way (None: the path leaves it to the
# domain's own step, e.g. a payment's outcome is the gateway's, not the job's).
PATHS = ("succeeds", "fails", "retries_exhausted", "times_out")
CANCELS = ("cancelled_pending", "cancelled_running")


def _ends(succeeds, failed, cancelled) -> dict[str, str | None]:
    """What a record says after each path: its job succeeded, failed (a failure, a
    budget run out, a time limit), or was cancelled."""
    return (
        {"succeeds": succeeds}
        | dict.fromkeys(PATHS[1:], failed)
        | dict.fromkeys(CANCELS, cancelled)
    )


EXPECTED = {
    JobKind.SALES_REPORT: _ends("completed", "failed", "cancelled"),
    # A payment's success is the gateway's answer (recorded by the charge, not its job);
    # one never sent fails, so the order can be paid again.
    JobKind.PAYMENT: _ends("pending", "failed", "failed"),
    JobKind.IMAGE_PROCESSING: _ends("ready", "failed", "cancelled"),
    # The last step confirms the order; an order whose checkout did not end so fails.
    JobKind.ORDER_WORKFLOW: _ends("processing", "failed", "failed"),
    JobKind.CUSTOMER_SYNC: _ends("completed", "failed", "cancelled"),
    JobKind.PRODUCT_SYNC: _ends(None, None, None),
    JobKind.METRICS_SNAPSHOT: _ends("completed", "failed", "cancelled"),
    # Channels are sent (and recorded) by their parts; the ones not yet sent end with it.
    JobKind.NOTIFICATION: _ends("pending", "failed", "cancelled"),
    JobKind.EMAIL: _ends("queued", "failed", "cancelled"),
}
JOB_STATUS = {
    "succeeds": JobStatus.SUCCESS,
    "fails": JobStatus.FAILURE,
    "retries_exhausted": JobStatus.FAILURE,
    "times_out": JobStatus.TIMEOUT,
    "cancelled_pending": JobStatus.CANCELLED,
    "cancelled_running": JobStatus.CANCELLED,
}


# Any job task of the kit: how an exception ends a job is the kit's one policy.
KIT_TASK = generate_snapshot


def _exhausted_retries() -> GaveUp:
    """What the kit raises when a RetryLater comes past the task's retry budget."""
    KIT_TASK.push_request(retries=KIT_TASK.max_retries)
    try:
        KIT_TASK.retry_later(RetryLater("crm", "unavailable", retry_after=1), job_id=0)
    except GaveUp as gave_up:
        return gave_up
    finally:
        KIT_TASK.pop_request()
    raise AssertionError("the retry budget was not exhausted")


def _end(job: Job, path: str) -> None:
    if path == "cancelled_pending":
        job_cancel(job=job)
        return
    _, reporter = job_attempt_start(job_id=job.pk)
    reporter.started()
    reporter.progress(current=1, total=2, force=True)
    if path == "succeeds":
        reporter.succeeded({"ok": True})
        return
    if path == "cancelled_running":
        job_cancel(job=job)
        with pytest.raises(JobCancelled) as raised:
            reporter.progress(current=2, total=2, force=True)
        error: BaseException = raised.value
    else:
        error = {
            "fails": lambda: DomainError("The supplier refused the request.", code="REFUSED"),
            "retries_exhausted": _exhausted_retries,
            "times_out": SoftTimeLimitExceeded,
        }[path]()
    status, reason = KIT_TASK.end_status(job.pk, error)
    job_end(job_id=job.pk, status=status, error=reason, state=reporter.progress_state)


@pytest.mark.parametrize("path", list(JOB_STATUS))
@pytest.mark.parametrize("kind", list(JobKind))
def test_the_job_its_record_and_a_live_subscriber_agree(live, user, kind, path):
    job = job_create(kind=kind, owner=user)
    record_status = _status_reader(kind, user, job)
    token, job_gid = make_token(user), str(global_id("Job", job.pk))

    async def follow() -> tuple[list[dict], bool]:
        async with Subscription(
            live.server.ws_url,
            JOB_PROGRESS,
            {"id": job_gid},
            token=token,
        ) as subscription:
            events = [await subscription.next()]  # subscribed: the snapshot came first
            await asyncio.get_running_loop().run_in_executor(None, _end, job, path)
            events += await subscription.collect(timeout=20)
            return [e["jobProgress"] for e in events], subscription.completed

    events, completed = asyncio.run(follow())

    job.refresh_from_db()
    assert job.status == JOB_STATUS[path]
    assert completed, "the subscriber completes after the terminal event"
    assert (events[-1]["status"], events[-1]["seq"]) == (job.status, job.seq)
    assert (events[-1]["error"] or "") == job.error
    assert [e["seq"] for e in events] == sorted({e["seq"] for e in events})
    assert record_status() == EXPECTED[kind][path]
    assert not job_end(job_id=job.pk, status=JobStatus.FAILURE), "a job ends once"
    assert record_status() == EXPECTED[kind][path]


def test_the_kit_says_why_each_failing_path_ended(live, user):
    """The reasons a user reads: the refusal itself, the budget spent, the time limit."""
    reasons = {}
    for path in ("fails", "retries_exhausted", "times_out"):
        job = job_create(kind=JobKind.SALES_REPORT, owner=user)
        _end(job, path)
        job.refresh_from_db()
        reasons[path] = job.error

    assert reasons == {
        "fails": "The supplier refused the request.",
        "retries_exhausted": (
            "The crm service is unavailable: it still failed after "
            f"{KIT_TASK.max_retries + 1} tries (crm: unavailable)."
        ),
        "times_out": "The job ran past its time limit.",
    }


def test_a_handler_that_fails_leaves_the_job_running(user, monkeypatch):
    """The job and its record end together or not at all."""
    job = job_create(kind=JobKind.SALES_REPORT, owner=user)
    JOB_RECORDS[JobKind.SALES_REPORT](user, job)
    job_attempt_start(job_id=job.pk)[1].started()

    from domains.jobs import ending

    def broken(report, end):
        raise RuntimeError("the record could not be written")

    monkeypatch.setitem(
        ending._records, JobKind.SALES_REPORT, ending.JobRecord(model=Report, handler=broken)
    )
    with pytest.raises(RuntimeError):
        job_end(job_id=job.pk, status=JobStatus.SUCCESS)
    job.refresh_from_db()
    assert job.status == JobStatus.STARTED
