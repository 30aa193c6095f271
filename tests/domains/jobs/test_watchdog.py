"""The watchdog: jobs that can no longer progress are sent again, or ended with a reason."""

from datetime import timedelta

import pytest
from django.utils import timezone

from domains.jobs.attempts import job_attempt_start
from domains.jobs.models import Job, JobKind, JobStatus
from domains.jobs.services import job_create, job_dispatch, job_watchdog_sweep
from domains.jobs.tasks import JobTaskName
from domains.reports.models import Report, ReportStatus

pytestmark = pytest.mark.django_db(transaction=True)

PAST = timezone.now() - timedelta(hours=1)


def _report_job(user) -> Job:
    job = job_create(kind=JobKind.SALES_REPORT, owner=user)
    report = Report.objects.create(
        owner=user, job=job, parameters={"startDate": "2026-01-01", "endDate": "2026-01-31"}
    )
    # The outbox keeps the task and the dispatcher admitted it, but the send is never run
    # (as when the broker was down).
    Job.objects.filter(pk=job.pk).update(
        task_name=JobTaskName.REPORTS_GENERATE_SALES,
        task_kwargs={"report_id": report.pk},
        admitted_at=timezone.now(),
    )
    job.refresh_from_db()
    return job


def test_a_job_whose_send_failed_is_sent_by_the_next_sweep(user):
    job = _report_job(user)

    assert job_watchdog_sweep()["sent"] == 1

    job.refresh_from_db()
    assert job.dispatched_at is not None
    assert job_watchdog_sweep()["sent"] == 0


def test_a_running_job_whose_lease_lapsed_is_sent_again_and_claimable(user):
    job = _report_job(user)
    job_attempt_start(job_id=job.pk)[1].started()
    Job.objects.filter(pk=job.pk).update(lease_expires_at=PAST, dispatched_at=PAST)

    assert job_watchdog_sweep()["revived"] == 1

    job.refresh_from_db()
    assert job.revivals == 1
    assert job.dispatched_at > PAST  # sent again; its delivery may claim the lapsed lease


def test_a_job_past_its_revivals_ends_failure_with_its_record(user, settings):
    settings.JOB_MAX_REVIVALS = 2
    job = _report_job(user)
    job_attempt_start(job_id=job.pk)[1].started()
    Job.objects.filter(pk=job.pk).update(lease_expires_at=PAST, revivals=2)

    assert job_watchdog_sweep()["given_up"] == 1

    job.refresh_from_db()
    assert job.status == JobStatus.FAILURE
    assert "stopped making progress" in job.error
    report = Report.objects.get(job=job)
    assert (report.status, report.error_message) == (ReportStatus.FAILED, job.error)


def test_a_pending_job_waiting_in_the_queue_within_its_grace_is_left_alone(user):
    job = _report_job(user)
    Job.objects.filter(pk=job.pk).update(dispatched_at=timezone.now())

    assert job_watchdog_sweep() == {"sent": 0, "revived": 0, "given_up": 0, "admitted": 0}


def test_dispatch_keeps_the_task_in_the_row(user):
    job = job_create(kind=JobKind.SALES_REPORT, owner=user)
    job_dispatch(job=job, task_name=JobTaskName.REPORTS_GENERATE_SALES, report_id=7)
    job.refresh_from_db()
    assert (job.task_name, job.task_kwargs) == ("reports.generate_sales", {"report_id": 7})
