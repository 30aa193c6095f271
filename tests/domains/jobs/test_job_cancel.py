"""The cancel rules, without GraphQL or a worker: a cancel is accepted (and the job never
ends SUCCESS after it) or refused with a code saying why; it shows at once; and a job that
waits on an outside service stops waiting."""

import socket
import threading

import pytest
from django.db import connection, transaction

from domains.errors import DomainError
from domains.infra.redis import sync_client
from domains.integrations.client import ResilientClient
from domains.jobs.attempts import job_attempt_start
from domains.jobs.cancellation import (
    cancel_deferred,
    cancel_wait,
    cancel_watched,
    cancellable_call,
    job_cancel_seen,
)
from domains.jobs.events import decode, log_key
from domains.jobs.models import Job, JobKind, JobStatus
from domains.jobs.reporter import JobCancelled, JobReporter
from domains.jobs.services import job_cancel, job_create, job_point_of_no_return
from tests.fixtures.redis import redis_at, unreachable_redis_url

pytestmark = pytest.mark.django_db(transaction=True)


def _running_job(user):
    job = job_create(kind=JobKind.CUSTOMER_SYNC, owner=user)
    _, reporter = job_attempt_start(job_id=job.pk)
    reporter.started()
    reporter.progress(current=1, total=10, force=True)
    return job, reporter


def _logged(job):
    return [decode(fields["e"]) for _, fields in sync_client().xrange(log_key(job.pk))]


def _refusal(job) -> DomainError:
    with pytest.raises(DomainError) as refused:
        job_cancel(job=job)
    return refused.value


def test_a_cancel_accepted_before_the_success_ends_the_job_cancelled(user):
    job, reporter = _running_job(user)

    job_cancel(job=job)
    ended = reporter.succeeded({"synced": 10})

    job.refresh_from_db()
    assert ended
    assert job.status == JobStatus.CANCELLED
    assert job.result is None
    assert _logged(job)[-1]["status"] == JobStatus.CANCELLED


def test_a_success_before_the_cancel_refuses_it(user):
    job, reporter = _running_job(user)
    reporter.succeeded({"synced": 10})

    refused = _refusal(job)

    job.refresh_from_db()
    assert refused.code == "ALREADY_FINISHED"
    assert (job.status, job.cancel_requested_at) == (JobStatus.SUCCESS, None)


def test_past_its_point_of_no_return_a_job_refuses_a_cancel_saying_why(user):
    job, reporter = _running_job(user)
    job_point_of_no_return(job_id=job.pk, reason="the order is confirmed.")

    refused = _refusal(job)
    reporter.succeeded()

    job.refresh_from_db()
    assert refused.code == "NOT_CANCELLABLE"
    assert refused.message == "The job can no longer be cancelled: the order is confirmed."
    assert (job.status, job.cancel_requested_at) == (JobStatus.SUCCESS, None)


def test_a_cancel_accepted_first_stops_the_point_of_no_return_and_what_came_with_it(user):
    job, _ = _running_job(user)
    job_cancel(job=job)

    def confirm() -> None:
        with transaction.atomic():
            Job.objects.filter(pk=job.pk).update(stage="confirming")  # the irreversible step
            job_point_of_no_return(job_id=job.pk, reason="the order is confirmed.")

    with pytest.raises(JobCancelled):
        confirm()

    job.refresh_from_db()
    assert (job.stage, job.cancel_refused_because) == ("", "")


def test_a_cancel_of_a_running_job_shows_at_once_on_its_row_and_its_stream(user):
    job, _ = _running_job(user)
    before = _logged(job)

    answered = job_cancel(job=job)

    events = _logged(job)
    assert answered.cancel_requested_at is not None
    assert answered.status == JobStatus.PROGRESS, "still stopping"
    assert len(events) == len(before) + 1
    told = events[-1]
    assert told["cancel_requested_at"] == answered.cancel_requested_at.isoformat()
    assert (told["status"], told["current"], told["seq"]) == (
        JobStatus.PROGRESS,
        1,
        before[-1]["seq"] + 1,
    )
    assert all(e["cancel_requested_at"] is None for e in before)


def test_every_event_after_the_cancel_carries_it(user):
    job, _ = _running_job(user)
    part = JobReporter(Job.objects.get(pk=job.pk))  # another part of the job, still busy
    answered = job_cancel(job=job)

    with pytest.raises(JobCancelled):
        part.progress(current=2, total=10, force=True)

    last = _logged(job)[-1]
    assert (last["current"], last["cancel_requested_at"]) == (
        2,
        answered.cancel_requested_at.isoformat(),
    )


def test_asking_again_while_it_stops_changes_nothing(user):
    job, _ = _running_job(user)
    first = job_cancel(job=job)
    events = len(_logged(job))

    again = job_cancel(job=job)

    assert again.cancel_requested_at == first.cancel_requested_at
    assert len(_logged(job)) == events


def test_a_pending_job_cancelled_ends_at_once_saying_when_it_was_asked(user):
    job = job_create(kind=JobKind.CUSTOMER_SYNC, owner=user)

    answered = job_cancel(job=job)

    (event,) = _logged(job)
    assert answered.status == JobStatus.CANCELLED
    assert event["status"] == JobStatus.CANCELLED
    assert event["cancel_requested_at"] == answered.cancel_requested_at.isoformat()


def _cancelled_from_another_thread(job):
    """Cancel `job` once the caller is waiting (as the API does, from another process)."""
    done = threading.Event()

    def cancel():
        try:
            job_cancel(job=Job.objects.get(pk=job.pk))
        finally:
            connection.close()  # this thread's own
            done.set()

    return threading.Timer(0.3, cancel), done


def test_a_wait_in_a_job_stops_at_its_cancel(user):
    job, _ = _running_job(user)
    timer, _ = _cancelled_from_another_thread(job)
    timer.start()

    with cancel_watched(job.pk), pytest.raises(JobCancelled):
        cancel_wait(120)  # a blind sleep would return, two minutes on


def test_a_call_in_flight_in_a_job_stops_being_waited_for_at_its_cancel(user):
    job, _ = _running_job(user)
    never_answers = threading.Event()
    timer, _ = _cancelled_from_another_thread(job)
    timer.start()

    try:
        with cancel_watched(job.pk), pytest.raises(JobCancelled):
            cancellable_call(lambda: never_answers.wait(120))
    finally:
        never_answers.set()


def test_outside_a_job_a_call_is_made_as_it_is(user):
    job, _ = _running_job(user)
    job_cancel(job=job)  # not the job of this code: nothing watches it

    assert cancellable_call(lambda: "answered") == "answered"


def test_the_integrations_client_stops_a_job_blocked_on_a_silent_service(user):
    """A service that takes the connection and never answers: the client's read would
    block for its whole timeout, then retry; a cancel stops it at once, no retry sent."""
    job, _ = _running_job(user)
    silent = socket.create_server(("127.0.0.1", 0))
    port = silent.getsockname()[1]
    client = ResilientClient(
        "silent", f"http://127.0.0.1:{port}", timeout=(3, 120), max_attempts=3, backoff_base=0
    )
    outcome: list[BaseException | object] = []

    def call():
        with cancel_watched(job.pk):
            try:
                outcome.append(client.get("/anything"))
            except BaseException as error:
                outcome.append(error)

    caller = threading.Thread(target=call)
    caller.start()
    first, _ = silent.accept()  # the first attempt is in flight
    job_cancel(job=job)
    caller.join(timeout=30)

    silent.settimeout(1)
    with pytest.raises(TimeoutError):
        silent.accept()  # no second attempt
    first.close()
    silent.close()
    assert not caller.is_alive()
    assert len(outcome) == 1
    assert isinstance(outcome[0], JobCancelled), outcome


def test_a_cancel_is_seen_through_the_row_when_redis_cannot_answer(user):
    job, _ = _running_job(user)
    job_cancel(job=job)

    with redis_at(unreachable_redis_url()):
        seen = job_cancel_seen(job.pk)

    assert seen


def test_a_call_whose_outcome_could_not_be_learned_later_is_waited_for(user):
    """A message handed to a provider cannot be called back: the job stops after it."""
    job, _ = _running_job(user)
    job_cancel(job=job)

    with cancel_watched(job.pk), cancel_deferred():
        answered = cancellable_call(lambda: "handed over")

    assert answered == "handed over"
