"""/metrics: the server's and the workers' figures added up, moved by exactly what ran;
refused to anyone but staff and the scrape token."""

import asyncio

import httpx
import pytest
from django.db import transaction
from django.test import Client
from django.utils import timezone
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.parser import text_string_to_metric_families

from domains.infra.metrics import LoopBatchedHistogram
from domains.jobs.models import Job, JobKind, JobStatus
from domains.jobs.services import job_cancel, job_create, job_dispatch
from testbed.factories import make_token
from testbed.waiting import job_finished

GENERATE = """mutation($input: SalesReportInput!) {
  salesReportGenerate(input: $input) { job { id } errors { code } }
}"""


def _scrape(live, staff_user) -> dict[tuple, float]:
    response = httpx.get(
        f"{live.server.url}/metrics",
        headers={"Authorization": f"Bearer {make_token(staff_user)}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def _moved(before: dict, after: dict, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0) - before.get(key, 0)


@pytest.mark.e2e
def test_the_job_counters_move_by_exactly_what_ran(live, user, staff_user):
    before = _scrape(live, staff_user)
    client = live.client(user)
    today = timezone.localdate().isoformat()
    for _ in range(2):
        answer = client.data(GENERATE, {"input": {"startDate": today, "endDate": today}})
        assert answer["salesReportGenerate"]["errors"] == []
    for job in Job.objects.filter(kind=JobKind.SALES_REPORT):
        assert job_finished(job.pk).status == JobStatus.SUCCESS
    # One that never starts: cancelled while pending, in this process.
    job_cancel(job=job_create(kind=JobKind.PRODUCT_SYNC, owner=staff_user))

    after = _scrape(live, staff_user)

    report, sync = {"kind": "SALES_REPORT"}, {"kind": "PRODUCT_SYNC"}
    assert _moved(before, after, "jobstream_jobs_started_total", **report) == 2
    assert _moved(before, after, "jobstream_jobs_started_total", **sync) == 0
    finished = "jobstream_jobs_finished_total"
    assert _moved(before, after, finished, **report, status="SUCCESS") == 2
    assert _moved(before, after, finished, **report, status="FAILURE") == 0
    assert _moved(before, after, finished, **sync, status="CANCELLED") == 1
    assert _moved(before, after, "jobstream_job_duration_seconds_count", **report) == 2
    wait = {**report, "lane": "bulk"}
    assert _moved(before, after, "jobstream_job_wait_seconds_count", **wait) == 2  # admitted
    assert ("jobstream_queue_depth", (("queue", "celery"),)) in after
    assert ("jobstream_queue_depth", (("queue", "bulk"),)) in after
    assert after[("jobstream_breaker_state", (("service", "gateway"),))] in (0, 1, 2)


def test_metrics_are_refused_to_anonymous_and_ordinary_callers(settings, user):
    settings.METRICS_TOKEN = "scrape-secret"
    client = Client()

    assert client.get("/metrics").status_code == 401
    bearer = {"HTTP_AUTHORIZATION": f"Bearer {make_token(user)}"}
    assert client.get("/metrics", **bearer).status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong").status_code == 403
    client.force_login(user)
    assert client.get("/metrics").status_code == 403

    scraped = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-secret")
    assert scraped.status_code == 200
    assert scraped["Content-Type"].startswith("text/plain")
    assert b"jobstream_queue_depth{" in scraped.content


def test_with_metrics_off_the_scrape_token_gets_a_404_saying_so(settings, db):
    settings.METRICS_TOKEN = "scrape-secret"
    settings.METRICS_ENABLED = False

    answer = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-secret")

    assert answer.status_code == 404
    assert b"METRICS_ENABLED=0" in answer.content


def test_a_loop_batched_histogram_holds_what_observing_each_amount_would():
    registry = CollectorRegistry()
    plain = Histogram("plain_lag", "", buckets=(0.01, 0.1, 1), registry=registry)
    batched = Histogram("batched_lag", "", buckets=(0.01, 0.1, 1), registry=registry)
    amounts = [0.0, 0.01, 0.05, 0.1, 0.5, 3.0, 0.001, 0.05]

    async def observe_batched():
        tally = LoopBatchedHistogram(batched, moment=0.01)
        for amount in amounts:
            tally.observe(amount)
        await asyncio.sleep(0.05)  # after its moment (the loop runs timers in time order)

    for amount in amounts:
        plain.observe(amount)
    asyncio.run(observe_batched())

    def samples(histogram, name):
        (family,) = histogram.collect()
        return [
            (s.name.removeprefix(name), s.labels, s.value)
            for s in family.samples
            if not s.name.endswith("_created")
        ]

    assert samples(batched, "batched_lag") == samples(plain, "plain_lag")


def test_a_loop_batched_histogram_loses_nothing_to_a_loop_that_ended_or_to_none():
    registry = CollectorRegistry()
    batched = Histogram("stranded_lag", "", buckets=(0.1, 1), registry=registry)
    tally = LoopBatchedHistogram(batched, moment=60)  # its timer never fires here

    async def observe(amount):
        tally.observe(amount)

    asyncio.run(observe(0.5))  # the loop ends with the batch pending
    asyncio.run(observe(0.05))  # another loop: the stranded batch is written first
    tally.observe(2.0)  # no loop at all: written at once

    (family,) = batched.collect()
    counts = {s.labels["le"]: s.value for s in family.samples if s.name.endswith("_bucket")}
    assert counts == {"0.1": 1.0, "1.0": 2.0, "+Inf": 3.0}


@pytest.mark.django_db(transaction=True)
def test_the_jobs_waiting_for_a_slot_are_counted_by_kind_and_lane(settings, user):
    settings.METRICS_TOKEN = "scrape-secret"
    settings.JOB_MAX_RUNNING_PER_USER = 1
    for kind, task in [(JobKind.SALES_REPORT, "reports.never_run_by_a_worker")] * 3 + [
        (JobKind.PAYMENT, "payments.never_run_by_a_worker")
    ]:
        with transaction.atomic():
            job_dispatch(job=job_create(kind=kind, owner=user), task_name=task)

    scraped = Client().get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-secret")

    samples = {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(scraped.content.decode())
        for sample in family.samples
        if sample.name == "jobstream_jobs_waiting"
    }
    assert samples[(("kind", "SALES_REPORT"), ("lane", "bulk"))] == 2  # one runs
    assert samples[(("kind", "PAYMENT"), ("lane", "interactive"))] == 1  # the user's cap
    assert samples[(("kind", "IMAGE_PROCESSING"), ("lane", "bulk"))] == 0
