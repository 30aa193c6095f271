"""Retention: jobs_purge removes finished jobs older than the period with their event logs,
report files, image derivatives and job tokens, keeps the records the user owns (orders,
payments, the report row, the image's original) without the job link, and touches nothing
younger, nothing unfinished; a dry run counts the same and changes nothing."""

from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.utils import timezone

from domains.accounts.models import ApiToken
from domains.accounts.services import job_access_token_create
from domains.infra.metrics import purged_rows
from domains.infra.redis import progress_client
from domains.jobs.events import log_key, snapshot_key
from domains.jobs.models import FollowUp, Job, JobKind, JobStatus
from domains.jobs.retention import jobs_purge
from domains.jobs.services import job_create
from domains.media.models import Image, Thumbnail
from domains.orders.models import Order
from domains.payments.models import Payment
from domains.reports.models import Report
from testbed.factories import make_order, make_product, make_user

pytestmark = pytest.mark.django_db

RETENTION = timedelta(days=30)


def _finished(kind: str, owner, *, days_ago: float, status=JobStatus.SUCCESS) -> Job:
    job = job_create(kind=kind, owner=owner)
    ended = timezone.now() - timedelta(days=days_ago)
    Job.objects.filter(pk=job.pk).update(status=status, finished_at=ended)
    _event_log(job.pk)
    return job


def _event_log(job_id: int) -> None:
    client = progress_client()
    client.hset(snapshot_key(job_id), mapping={"seq": 1, "status": "SUCCESS"})
    client.xadd(log_key(job_id), {"e": "{}"}, id="1-0")
    for key in (snapshot_key(job_id), log_key(job_id)):
        client.expire(key, 3600)


def _report(job: Job) -> Report:
    name = default_storage.save(f"reports/purge-{job.pk}.csv", ContentFile(b"a,b\n1,2\n"))
    return Report.objects.create(owner=job.owner, status="completed", file=name, job=job)


def _image(job: Job) -> Image:
    base = f"images/purge-{job.pk}"
    image = Image.objects.create(
        owner=job.owner,
        status="ready",
        format="PNG",
        original=default_storage.save(f"{base}/original.png", ContentFile(b"png")),
        original_bytes=3,
        width=10,
        height=10,
        optimized=default_storage.save(f"{base}/optimized.webp", ContentFile(b"webp")),
        optimized_bytes=4,
        job=job,
    )
    for size, box in (("small", 150), ("medium", 400)):
        Thumbnail.objects.create(
            image=image,
            size_name=size,
            box=box,
            file=default_storage.save(f"{base}/{size}.webp", ContentFile(b"t")),
            width=box,
            height=box,
            byte_size=1,
        )
    return image


@pytest.fixture
def world():
    """Old finished jobs with everything they touched, and jobs that must stay."""
    user = make_user()
    old_report = _finished(JobKind.SALES_REPORT, user, days_ago=40)
    old_image = _finished(JobKind.IMAGE_PROCESSING, user, days_ago=31, status=JobStatus.FAILURE)
    old_payment = _finished(JobKind.PAYMENT, user, days_ago=90)
    young_report = _finished(JobKind.SALES_REPORT, user, days_ago=29)
    old_but_running = job_create(kind=JobKind.SALES_REPORT, owner=user)
    Job.objects.filter(pk=old_but_running.pk).update(
        status=JobStatus.STARTED, created_at=timezone.now() - timedelta(days=60)
    )
    order = make_order(customer=user, lines=[(make_product(), 1)])
    Order.objects.filter(pk=order.pk).update(job=old_payment)
    payment = Payment.objects.create(
        order=order,
        created_by=user,
        amount=Decimal("10.00"),
        currency="USD",
        method="tok_visa",
        idempotency_key="purge-test",
        status="succeeded",
        job=old_payment,
    )
    job_access_token_create(job=old_report, viewer=user)
    job_access_token_create(job=young_report, viewer=user)
    report, young, image = _report(old_report), _report(young_report), _image(old_image)
    return {
        "old": [old_report, old_image, old_payment],
        "young": [young_report, old_but_running],
        "report": report,
        "young_report": young,
        "image": image,
        "order": order,
        "payment": payment,
        "files": {
            "report": report.file.name,
            "young report": young.file.name,
            "original": image.original.name,
            "optimized": image.optimized.name,
            **{t.size_name: t.file.name for t in image.thumbnails.all()},
        },
    }


def _files(world) -> dict[str, bool]:
    return {what: default_storage.exists(name) for what, name in world["files"].items()}


def _logs(jobs) -> list[bool]:
    return [bool(progress_client().exists(log_key(job.pk))) for job in jobs]


EXPECTED_REMOVED = {
    "jobs": 3,
    "event logs": 3,
    "report files": 1,
    "image derivatives": 3,  # the optimized copy and two thumbnails
    "api tokens": 1,
}
EXPECTED_UNLINKED = {"orders": 1, "payments": 1, "images": 1, "reports": 1}


def test_a_dry_run_counts_what_would_go_and_changes_nothing(world):
    files_before = _files(world)

    counts = jobs_purge(older_than=RETENTION, dry_run=True)

    assert dict(counts.removed) == EXPECTED_REMOVED
    assert dict(counts.unlinked) == EXPECTED_UNLINKED
    assert Job.objects.count() == 5
    assert ApiToken.objects.count() == 2
    assert _files(world) == files_before
    assert _logs(world["old"]) == [True, True, True]


@pytest.mark.parametrize("batch_size", [1, 500])
def test_a_purge_removes_old_finished_jobs_with_what_only_they_needed(world, batch_size):
    counts = jobs_purge(older_than=RETENTION, batch_size=batch_size)

    assert dict(counts.removed) == EXPECTED_REMOVED
    assert set(Job.objects.values_list("pk", flat=True)) == {j.pk for j in world["young"]}
    assert _files(world) == {
        "report": False,
        "young report": True,
        "original": True,  # the user's upload
        "optimized": False,
        "small": False,
        "medium": False,
    }
    assert _logs(world["old"]) == [False, False, False]
    assert _logs(world["young"][:1]) == [True]
    assert list(ApiToken.objects.values_list("job_id", flat=True)) == [world["young"][0].pk]
    # what the user owns stays, unlinked
    report, image = (
        Report.objects.get(pk=world["report"].pk),
        Image.objects.get(pk=world["image"].pk),
    )
    assert (report.job_id, report.file.name) == (None, "")
    assert (image.job_id, image.optimized.name, image.thumbnails.count()) == (None, "", 0)
    assert Order.objects.get(pk=world["order"].pk).job_id is None
    assert Payment.objects.get(pk=world["payment"].pk).job_id is None
    assert Report.objects.get(pk=world["young_report"].pk).job_id == world["young"][0].pk


def test_a_purge_of_bounded_batches_takes_the_oldest_ids_first_and_the_next_one_goes_on(world):
    first = jobs_purge(older_than=RETENTION, batch_size=1, max_batches=1)
    rest = jobs_purge(older_than=RETENTION, batch_size=1, max_batches=10)

    assert first.removed["jobs"] == 1
    assert not Job.objects.filter(pk=world["old"][0].pk).exists()
    assert rest.removed["jobs"] == 2
    assert jobs_purge(older_than=RETENTION).removed == {}


def test_the_purge_counts_rows_for_metrics(world):
    before = purged_rows.labels(kind="jobs")._value.get()

    jobs_purge(older_than=RETENTION)

    assert purged_rows.labels(kind="jobs")._value.get() - before == 3


def test_the_command_prints_what_it_removed(world):
    dry, out = StringIO(), StringIO()

    call_command("jobs_purge", "--older-than-days", "30", "--dry-run", stdout=dry)
    assert Job.objects.count() == 5
    call_command("jobs_purge", "--older-than-days", "30", stdout=out)
    again = StringIO()
    call_command("jobs_purge", "--older-than-days", "30", stdout=again)

    assert dry.getvalue().splitlines() == [
        "Would remove (jobs finished more than 30 days ago):",
        "  api tokens: 1",
        "  event logs: 3",
        "  image derivatives: 3",
        "  jobs: 3",
        "  report files: 1",
        "Would keep, without their job link:",
        "  images: 1",
        "  orders: 1",
        "  payments: 1",
        "  reports: 1",
    ]
    assert out.getvalue() == dry.getvalue().replace("Would remove", "Removed").replace(
        "Would keep", "Kept"
    )
    assert again.getvalue() == "Nothing finished more than 30 days ago.\n"


def test_follow_ups_done_before_the_cutoff_go_and_those_owed_a_send_stay():
    long_ago = timezone.now() - timedelta(days=31)
    old_done = FollowUp.objects.create(task_name="t", key="old-done", done_at=long_ago)
    recent_done = FollowUp.objects.create(task_name="t", key="recent-done", done_at=timezone.now())
    owed = FollowUp.objects.create(task_name="t", key="owed")
    FollowUp.objects.filter(pk=owed.pk).update(created_at=long_ago)

    dry = jobs_purge(older_than=RETENTION, dry_run=True)
    assert dry.removed["follow-ups"] == 1
    assert FollowUp.objects.count() == 3

    counts = jobs_purge(older_than=RETENTION, batch_size=1)

    assert counts.removed["follow-ups"] == 1
    assert set(FollowUp.objects.values_list("pk", flat=True)) == {recent_done.pk, owed.pk}
    assert not FollowUp.objects.filter(pk=old_done.pk).exists()
