"""The dispatcher's rules, without a worker: what it admits, in what order, and what a
waiting job says. Tasks are sent (to the test broker) under names no worker runs, so that
what is admitted stays admitted until the test ends it."""

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from domains.infra.redis import progress_client, sync_client
from domains.jobs.dispatcher import ALWAYS_FRESH_PLACES, dispatcher_run, jobs_waiting_counts
from domains.jobs.ending import job_end
from domains.jobs.events import snapshot_key
from domains.jobs.models import Job, JobKind, JobStatus
from domains.jobs.services import job_cancel, job_create, job_dispatch, job_watchdog_sweep
from testbed.factories import make_user

pytestmark = pytest.mark.django_db(transaction=True)

REPORT = "reports.never_run_by_a_worker"  # the bulk lane
PAYMENT = "payments.never_run_by_a_worker"  # the interactive lane


@pytest.fixture(autouse=True)
def _limits(settings):
    settings.JOB_MAX_RUNNING_PER_USER = 2
    settings.JOB_MAX_RUNNING_PER_USER_BY_KIND = {}
    settings.JOB_LANE_SLOTS = {"interactive": 10, "bulk": 10, "staff": 10}
    settings.JOB_QUEUE_PLACES_INTERVAL = 0  # every pass writes every place


def _queue(owner, *, kind=JobKind.SALES_REPORT, task=REPORT) -> Job:
    with transaction.atomic():
        job = job_create(kind=kind, owner=owner)
        job_dispatch(job=job, task_name=task)
    job.refresh_from_db()
    return job


def _admitted(jobs: list[Job]) -> list[bool]:
    return [Job.objects.get(pk=job.pk).admitted_at is not None for job in jobs]


def _end(job: Job) -> None:
    assert job_end(job_id=job.pk, status=JobStatus.SUCCESS)


def test_a_user_runs_at_most_the_limit_and_the_rest_wait_saying_why(user):
    jobs = [_queue(user) for _ in range(5)]

    assert _admitted(jobs) == [True, True, False, False, False]
    waiting = [Job.objects.get(pk=job.pk) for job in jobs[2:]]
    assert [job.queue_position for job in waiting] == [1, 2, 3]
    assert {job.waiting_reason for job in waiting} == {"2 of your jobs are running; the limit is 2"}
    assert all(job.dispatched_at is None for job in waiting)  # nothing on the broker


def test_a_kind_limit_holds_that_kind_back_and_not_the_others(user, settings):
    settings.JOB_MAX_RUNNING_PER_USER = 4
    settings.JOB_MAX_RUNNING_PER_USER_BY_KIND = {"SALES_REPORT": 1}

    first, second = _queue(user), _queue(user)
    payment = _queue(user, kind=JobKind.PAYMENT, task=PAYMENT)

    assert _admitted([first, second, payment]) == [True, False, True]
    assert Job.objects.get(pk=second.pk).waiting_reason == (
        "1 of your sales report jobs is running; the limit is 1"
    )


def test_an_ended_job_frees_its_slot_for_the_next(user):
    jobs = [_queue(user) for _ in range(3)]

    _end(jobs[0])

    assert _admitted(jobs) == [True, True, True]
    third = Job.objects.get(pk=jobs[2].pk)
    assert (third.queue_position, third.waiting_reason) == (None, "")
    assert third.dispatched_at is not None


def test_users_take_turns_not_arrival_order(user, other_user, settings):
    settings.JOB_MAX_RUNNING_PER_USER = 10
    settings.JOB_LANE_SLOTS = {"interactive": 10, "bulk": 1, "staff": 10}
    flood = [_queue(user) for _ in range(4)]
    single = _queue(other_user)

    assert _admitted([*flood, single]) == [True, False, False, False, False]
    assert Job.objects.get(pk=single.pk).queue_position == 1  # ahead of the flood's rest
    assert [Job.objects.get(pk=job.pk).queue_position for job in flood[1:]] == [2, 3, 4]

    _end(flood[0])

    assert _admitted([*flood, single]) == [True, False, False, False, True]
    _end(single)
    assert _admitted(flood) == [True, True, False, False]


def test_a_third_user_joins_the_rotation(user, other_user, settings):
    settings.JOB_MAX_RUNNING_PER_USER = 10
    settings.JOB_LANE_SLOTS = {"interactive": 10, "bulk": 1, "staff": 10}
    third = make_user(email="third@example.com")
    a = [_queue(user) for _ in range(3)]
    b = [_queue(other_user) for _ in range(3)]
    c = [_queue(third) for _ in range(3)]
    order = []
    for _ in range(8):
        running = Job.objects.get(admitted_at__isnull=False, status=JobStatus.PENDING)
        order.append(running.owner_id)
        _end(running)

    assert order == [user.pk, other_user.pk, third.pk] * 2 + [user.pk, other_user.pk]
    assert _admitted(c) == [True, True, True]
    assert _admitted(a) == _admitted(b) == [True, True, True]


def test_interactive_work_never_waits_behind_a_full_bulk_lane(user, other_user, settings):
    settings.JOB_MAX_RUNNING_PER_USER = 10
    settings.JOB_LANE_SLOTS = {"interactive": 2, "bulk": 1, "staff": 1}
    reports = [_queue(user) for _ in range(3)]

    payment = _queue(other_user, kind=JobKind.PAYMENT, task=PAYMENT)
    sync = _queue(None, kind=JobKind.CUSTOMER_SYNC, task="crm.never_run_by_a_worker")

    assert _admitted([*reports, payment, sync]) == [True, False, False, True, True]
    assert Job.objects.get(pk=reports[1].pk).waiting_reason == (
        "Every bulk worker slot is busy (the lane's slot is in use)."
    )
    assert jobs_waiting_counts() == {("SALES_REPORT", "bulk"): 2}


def test_a_waiting_job_is_cancelled_at_once_and_never_sent(user):
    jobs = [_queue(user) for _ in range(3)]

    job_cancel(job=jobs[2])

    job = Job.objects.get(pk=jobs[2].pk)
    assert (job.status, job.admitted_at, job.dispatched_at) == (JobStatus.CANCELLED, None, None)
    _end(jobs[0])
    assert Job.objects.filter(admitted_at__isnull=False).count() == 2  # nothing left to admit


def test_the_watchdog_leaves_a_waiting_job_alone_however_long_it_waits(user, settings):
    settings.JOB_PENDING_GRACE_SECONDS = 0
    jobs = [_queue(user) for _ in range(3)]
    long_ago = timezone.now() - timedelta(hours=1)
    Job.objects.filter(pk=jobs[2].pk).update(created_at=long_ago)
    Job.objects.filter(pk__in=[jobs[0].pk, jobs[1].pk]).update(
        dispatched_at=timezone.now() + timedelta(hours=1)  # sent, within their grace
    )

    counts = job_watchdog_sweep()

    assert (counts["revived"], counts["given_up"], counts["admitted"]) == (0, 0, 0)
    waiting = Job.objects.get(pk=jobs[2].pk)
    assert (waiting.status, waiting.revivals, waiting.admitted_at) == (JobStatus.PENDING, 0, None)


def test_the_watchdog_admits_what_no_pass_admitted(user):
    jobs = [_queue(user) for _ in range(3)]
    # The jobs ended while no pass ran (a process died between the end and its pass).
    Job.objects.filter(pk__in=[jobs[0].pk, jobs[1].pk]).update(status=JobStatus.SUCCESS)

    assert job_watchdog_sweep()["admitted"] == 1

    assert _admitted(jobs) == [True, True, True]


def test_a_waiting_jobs_place_is_on_its_stream(user):
    jobs = [_queue(user) for _ in range(4)]
    snapshot = lambda job: json.loads(progress_client().hget(snapshot_key(job.pk), "event"))  # noqa: E731

    before = snapshot(jobs[3])
    _end(jobs[0])
    after = snapshot(jobs[3])

    assert (before["status"], before["queue_position"]) == ("PENDING", 2)
    assert (after["status"], after["queue_position"]) == ("PENDING", 1)
    assert after["seq"] > before["seq"]
    assert after["waiting_reason"] == "2 of your jobs are running; the limit is 2"


def test_passes_at_once_in_many_threads_admit_no_more_than_the_limit(user, settings):
    settings.JOB_MAX_RUNNING_PER_USER = 3
    for _ in range(12):  # queued without a pass: the threads' passes race for them
        job = job_create(kind=JobKind.SALES_REPORT, owner=user)
        Job.objects.filter(pk=job.pk).update(task_name=REPORT)

    def one_pass() -> int:
        try:
            return dispatcher_run()
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=6) as pool:
        admitted = list(pool.map(lambda _: one_pass(), range(6)))

    assert sum(admitted) == 3
    assert Job.objects.filter(admitted_at__isnull=False).count() == 3


@pytest.fixture
def places_fresh_for_an_hour(settings):
    settings.JOB_QUEUE_PLACES_INTERVAL = 3600
    sync_client().delete("jobs:dispatcher:places")
    yield
    sync_client().delete("jobs:dispatcher:places")  # other tests' passes write theirs


def test_places_past_the_front_are_written_at_most_each_interval_a_new_jobs_at_once(
    user, places_fresh_for_an_hour
):
    fresh = ALWAYS_FRESH_PLACES
    jobs = [_queue(user) for _ in range(fresh + 4)]  # the first pass writes every place
    places = lambda: [Job.objects.get(pk=job.pk).queue_position for job in jobs]  # noqa: E731
    assert places()[2:] == list(range(1, fresh + 3))

    _end(jobs[0])  # the third is admitted: the front moves up, the rest not yet
    newcomer = _queue(user)

    assert places()[3:] == [*range(1, fresh + 1), fresh + 2]
    assert Job.objects.get(pk=newcomer.pk).queue_position == fresh + 2
    job_watchdog_sweep()  # the sweep writes every place
    assert places()[3:] == list(range(1, fresh + 2))


def test_a_users_interactive_job_goes_before_their_own_older_backlog(user):
    # Before: each freed slot went to the user's oldest waiting job, so their payment
    # waited behind every report they had queued before it.
    running = [_queue(user), _queue(user)]
    backlog = [_queue(user) for _ in range(3)]
    payment = _queue(user, kind=JobKind.PAYMENT, task=PAYMENT)
    assert _admitted([*running, *backlog, payment]) == [True, True, False, False, False, False]

    _end(running[0])

    assert _admitted([*backlog, payment]) == [False, False, False, True]


def test_a_job_cancelled_while_a_pass_reads_is_neither_admitted_nor_sent(user, monkeypatch):
    from domains.jobs import dispatcher

    first = _queue(user)
    waiting = _queue(user, kind=JobKind.PAYMENT, task=PAYMENT)
    # Both wait for the next pass.
    Job.objects.filter(pk__in=[first.pk, waiting.pk]).update(admitted_at=None, dispatched_at=None)
    choose = dispatcher._admissions

    def cancelled_meanwhile(*args, **kwargs):
        chosen = choose(*args, **kwargs)
        # As a cancel committed in another process between the pass's read and its write.
        Job.objects.filter(pk=waiting.pk).update(status=JobStatus.CANCELLED)
        return chosen

    monkeypatch.setattr(dispatcher, "_admissions", cancelled_meanwhile)
    dispatcher_run()

    waiting.refresh_from_db()
    assert (waiting.status, waiting.admitted_at, waiting.dispatched_at) == (
        JobStatus.CANCELLED,
        None,
        None,
    )
    assert Job.objects.get(pk=first.pk).admitted_at is not None
