"""A job's end writes its webhook deliveries in the same transaction: one per endpoint
that asked for that end, none when the end does not happen, never two."""

import base64

import pytest
from django.db import transaction

from domains.jobs.ending import job_end
from domains.jobs.models import Job, JobStatus
from domains.webhooks.models import WebhookDelivery
from domains.webhooks.services import webhook_endpoint_create

pytestmark = pytest.mark.django_db(transaction=True)


def _endpoint(owner, events=("JOB_SUCCEEDED", "JOB_FAILED"), **options):
    return webhook_endpoint_create(
        viewer=owner, url="http://127.0.0.1:9/hooks", events=events, **options
    )


def test_the_end_of_a_job_writes_one_delivery_per_endpoint_that_asked_for_it(
    user, other_user, staff_user, running_job
):
    mine = _endpoint(user)
    _endpoint(user, events=["JOB_CANCELLED"])  # not this end
    _endpoint(other_user)  # not this user's job
    every_job = _endpoint(staff_user, all_jobs=True)
    _endpoint(staff_user)  # the staff's own jobs only
    job = running_job(user)

    assert job_end(job_id=job.pk, status=JobStatus.SUCCESS, result={"rows": 3})

    deliveries = WebhookDelivery.objects.order_by("endpoint_id")
    assert [d.endpoint_id for d in deliveries] == [mine.pk, every_job.pk]
    job.refresh_from_db()
    delivery = deliveries[0]
    assert delivery.event_type == "JOB_SUCCEEDED"
    assert (delivery.status, delivery.attempts) == ("PENDING", 0)
    assert delivery.webhook_id.startswith("msg_")
    assert delivery.webhook_id != deliveries[1].webhook_id
    finished = job.finished_at.isoformat().replace("+00:00", "Z")
    assert delivery.payload == {
        "type": "job.succeeded",
        "timestamp": finished,
        "data": {
            "job": {
                "id": base64.b64encode(f"Job:{job.pk}".encode()).decode(),
                "kind": "SALES_REPORT",
                "status": "SUCCESS",
                "error": None,
                "result": {"rows": 3},
                "finishedAt": finished,
            }
        },
    }


@pytest.mark.parametrize(
    ("status", "event", "message_type"),
    [
        (JobStatus.FAILURE, "JOB_FAILED", "job.failed"),
        (JobStatus.CANCELLED, "JOB_CANCELLED", "job.cancelled"),
        (JobStatus.TIMEOUT, "JOB_TIMED_OUT", "job.timed_out"),
    ],
)
def test_each_end_has_its_event(user, running_job, status, event, message_type):
    _endpoint(user, events=["JOB_FAILED", "JOB_CANCELLED", "JOB_TIMED_OUT"])
    job = running_job(user)

    job_end(job_id=job.pk, status=status, error="It broke.")

    delivery = WebhookDelivery.objects.get()
    assert (delivery.event_type, delivery.payload["type"]) == (event, message_type)
    assert delivery.payload["data"]["job"]["status"] == status


def test_an_end_that_is_rolled_back_writes_no_delivery(user, running_job):
    _endpoint(user)
    job = running_job(user)

    def end_then_fail():
        with transaction.atomic():
            job_end(job_id=job.pk, status=JobStatus.SUCCESS)
            raise RuntimeError("the transaction around the end fails")

    with pytest.raises(RuntimeError):
        end_then_fail()

    assert Job.objects.get(pk=job.pk).status == "STARTED"
    assert not WebhookDelivery.objects.exists()


def test_a_job_ends_once_so_it_is_told_once(user, running_job):
    _endpoint(user)
    job = running_job(user)

    assert job_end(job_id=job.pk, status=JobStatus.SUCCESS)
    assert not job_end(job_id=job.pk, status=JobStatus.FAILURE)

    assert WebhookDelivery.objects.count() == 1


def test_an_inactive_endpoint_gets_nothing(user, running_job):
    endpoint = _endpoint(user)
    endpoint.is_active = False
    endpoint.save()
    job = running_job(user)

    job_end(job_id=job.pk, status=JobStatus.SUCCESS)

    assert not WebhookDelivery.objects.exists()


def test_purging_a_job_takes_its_deliveries(user, running_job):
    _endpoint(user)
    job = running_job(user)
    job_end(job_id=job.pk, status=JobStatus.SUCCESS)

    Job.objects.filter(pk=job.pk).delete()

    assert not WebhookDelivery.objects.exists()
