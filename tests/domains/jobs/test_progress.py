"""The progress reporter: one ordered stream per job, in Redis and in the row."""

import pytest

from domains.errors import DomainError
from domains.infra.redis import sync_client
from domains.jobs.attempts import job_attempt_start
from domains.jobs.events import decode, log_key, snapshot_key
from domains.jobs.models import Job, JobKind, JobStatus
from domains.jobs.parts import job_part_redelivered
from domains.jobs.reporter import JobAlreadyFinished, JobCancelled, JobReporter
from domains.jobs.services import job_cancel, job_create
from tests.fixtures.redis import redis_at, unreachable_redis_url

pytestmark = pytest.mark.django_db(transaction=True)


def _running_job(user=None):
    job = job_create(kind=JobKind.SALES_REPORT, owner=user)
    _, reporter = job_attempt_start(job_id=job.pk)
    reporter.started()
    return job, reporter


def _logged(job):
    return [decode(fields["e"]) for _, fields in sync_client().xrange(log_key(job.pk))]


def test_every_event_is_logged_in_order_and_the_snapshot_is_the_last(user):
    job, reporter = _running_job(user)
    for done in range(0, 101, 10):
        reporter.progress(current=done, total=100, stage="writing")
    reporter.succeeded({"rows": 100})

    events = _logged(job)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["status"] == JobStatus.STARTED
    assert events[-1]["status"] == JobStatus.SUCCESS
    assert events[-1]["result"] == {"rows": 100}
    snapshot = decode(sync_client().hget(snapshot_key(job.pk), "event"))
    assert snapshot == events[-1]
    job.refresh_from_db()
    assert (job.status, job.seq, job.progress) == (JobStatus.SUCCESS, snapshot["seq"], 1.0)


def test_progress_is_emitted_per_percent_not_per_call(user):
    job, reporter = _running_job(user)
    for done in range(10_000):
        reporter.progress(current=done, total=10_000)

    emitted = len(_logged(job)) - 1  # less the STARTED event
    assert 95 <= emitted <= 101


def test_row_writes_are_bounded_while_events_flow(user, settings, django_assert_max_num_queries):
    settings.JOB_DB_WRITE_INTERVAL = 3600
    job, reporter = _running_job(user)
    with django_assert_max_num_queries(0):
        for done in range(1, 1001):
            reporter.progress(current=done, total=1000)
    assert len(_logged(job)) > 90


def test_a_terminal_status_is_sticky(user):
    job, reporter = _running_job(user)
    assert reporter.succeeded("done")

    _, second_run = Job.objects.get(pk=job.pk), job_attempt_start(job_id=job.pk)
    assert second_run is None  # a redelivered task finds the job ended and claims nothing
    assert not reporter.failed("late failure")
    with pytest.raises(JobAlreadyFinished):
        reporter.progress(current=1, total=2, force=True)
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCESS


def test_cancelling_a_running_job_stops_it_at_its_next_progress(user):
    job, reporter = _running_job(user)
    job_cancel(job=job)

    with pytest.raises(JobCancelled):
        reporter.progress(current=1, total=10, force=True)


def test_cancelling_a_pending_job_ends_it_at_once(user):
    job = job_create(kind=JobKind.SALES_REPORT, owner=user)

    job_cancel(job=job)

    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED
    assert job_attempt_start(job_id=job.pk) is None


def test_cancelling_an_ended_job_is_a_user_error(user):
    job, reporter = _running_job(user)
    reporter.failed("boom")

    with pytest.raises(DomainError) as error:
        job_cancel(job=job)
    assert error.value.code == "ALREADY_FINISHED"


def test_each_delivery_counts_an_attempt(user):
    job = job_create(kind=JobKind.SALES_REPORT, owner=user)
    job_attempt_start(job_id=job.pk)
    claimed, _ = job_attempt_start(job_id=job.pk)
    assert claimed.attempts == 2


def test_part_redeliveries_are_counted_per_part(user):
    """A chord's parts do not claim the job; a lost worker's redeliveries count per part."""
    job = job_create(kind=JobKind.SALES_REPORT, owner=user)
    counts = [job_part_redelivered(job_id=job.pk, part_id="a") for _ in range(3)]
    assert counts == [2, 3, 4]  # the first delivery included
    assert job_part_redelivered(job_id=job.pk, part_id="b") == 2


def _parts(job, count: int) -> list[JobReporter]:
    """The reporters of a chord's parts: each made from the row when its part started."""
    return [JobReporter(Job.objects.get(pk=job.pk)) for _ in range(count)]


def test_a_part_behind_never_writes_the_rows_seq_backwards(user):
    job, reporter = _running_job(user)
    (cut_off,) = _parts(job, 1)
    for done in range(1, 6):
        reporter.progress(current=done, total=10, force=True)

    with redis_at(unreachable_redis_url()):  # its worker has lost Redis: it writes only the row
        cut_off.progress(current=6, total=10, force=True)

    job.refresh_from_db()
    assert job.seq == reporter.seq
    assert job.current == 6


def test_after_redis_lost_the_snapshot_the_rows_seq_is_the_floor(user):
    job, reporter = _running_job(user)
    (behind,) = _parts(job, 1)  # made before the others moved on
    for done in range(1, 6):
        reporter.progress(current=done, total=10, force=True)
    row_seq = Job.objects.get(pk=job.pk).seq
    sync_client().delete(snapshot_key(job.pk), log_key(job.pk))  # Redis restarted empty

    behind.progress(current=6, total=10, force=True)

    events = _logged(job)
    assert [e["seq"] for e in events] == [row_seq + 1]
    assert Job.objects.get(pk=job.pk).seq == row_seq + 1


def test_a_reporter_made_from_the_row_emits_after_it_when_the_snapshot_is_gone(user):
    job, reporter = _running_job(user)
    for done in range(1, 4):
        reporter.progress(current=done, total=10, force=True)
    sync_client().delete(snapshot_key(job.pk), log_key(job.pk))

    (fresh,) = _parts(job, 1)
    fresh.progress(current=4, total=10, force=True)

    assert [e["seq"] for e in _logged(job)] == [reporter.seq + 1]


def test_the_end_of_a_job_redis_never_heard_of_takes_the_next_seq(user):
    job = job_create(kind=JobKind.SALES_REPORT, owner=user)

    job_cancel(job=job)  # still pending: ended at once, its first event

    assert [(e["seq"], e["status"]) for e in _logged(job)] == [(1, JobStatus.CANCELLED)]
    assert Job.objects.get(pk=job.pk).seq == 1


def test_a_part_cannot_report_after_the_end_once_redis_lost_the_snapshot(user):
    job, reporter = _running_job(user)
    (part,) = _parts(job, 1)
    reporter.succeeded()
    sync_client().delete(snapshot_key(job.pk), log_key(job.pk))

    with pytest.raises(JobAlreadyFinished):
        part.progress(current=1, total=2, force=True)

    assert _logged(job) == []
