import pytest

from domains.jobs.models import Job, JobKind
from domains.jobs.services import job_create
from testbed.webhooks import Receiver


@pytest.fixture
def receiver():
    receiver = Receiver()
    yield receiver
    receiver.close()


@pytest.fixture
def running_job():
    def make(owner) -> Job:
        job = job_create(kind=JobKind.SALES_REPORT, owner=owner)
        Job.objects.filter(pk=job.pk).update(status="STARTED")
        return job

    return make


@pytest.fixture(autouse=True)
def _retries_wait_in_their_rows(settings):
    """Domain tests make each attempt themselves: no retry is handed to a broker."""
    settings.WEBHOOK_RETRY_DELAYS = [1, 1, 1]
    settings.WEBHOOK_COUNTDOWN_MAX = __import__("datetime").timedelta(0)


@pytest.fixture(scope="module", autouse=True)
def _no_worker_takes_these_deliveries():
    """These tests make each attempt themselves; a worker of this test process (the stack
    of an earlier test) stops taking deliveries meanwhile, so it cannot race them."""
    from celery import current_app

    workers = [w for reply in current_app.control.ping(timeout=0.5) or [] for w in reply]
    if workers:
        current_app.control.cancel_consumer("webhooks", destination=workers, reply=True)
    yield
    if workers:
        current_app.control.add_consumer("webhooks", destination=workers, reply=True)
