"""CRM sync against the sandbox CRM over real HTTP: upserts keyed by external id, one bad
record counted without failing the run, re-runs that change nothing, the beat schedule."""

import os
import signal
from datetime import UTC, datetime

import pytest
from celery import current_app
from celery.result import AsyncResult
from django.conf import settings
from django.utils import timezone

from domains.crm.models import Customer, SyncLog, SyncStatus
from domains.crm.services import customers_sync_scheduled, customers_upsert
from domains.sandbox.crm import crm_sandbox_configure, crm_sandbox_throttle
from testbed.waiting import job_finished, wait_until

SYNC = """
mutation($full: Boolean, $hours: Int) { customersSync(fullSync: $full, sinceHours: $hours) {
  syncLog { id kind status } job { id kind status } errors { field code message } } }
"""
LOGS = """
{ syncLogs(first: 10) { totalCount edges { node { kind status created updated skipped errors errorDetails } } } }
"""
CUSTOMERS = """
query($id: String) { customers(first: 2, filters: {externalId: $id}) { totalCount edges { node { externalId email company } } } }
"""


def _sync(client, **variables) -> SyncLog:
    started = client.data(SYNC, variables)["customersSync"]
    assert started["errors"] == [], started["errors"]
    sync_log = SyncLog.objects.order_by("-pk").first()
    job = job_finished(sync_log.job_id, timeout=120)
    assert job.status == "SUCCESS", job.error
    sync_log.refresh_from_db()
    return sync_log


def _counts(sync_log: SyncLog) -> tuple[int, int, int, int]:
    return sync_log.created, sync_log.updated, sync_log.skipped, sync_log.errors


@pytest.mark.e2e
def test_thousand_customers_one_malformed_then_rerun_updates_without_duplicates(
    live, staff_user, crm_sandbox
):
    crm_sandbox_configure(count=1_000, malformed=(500,))
    client = live.client(staff_user)

    first = _sync(client, full=True)

    assert (first.status, _counts(first)) == (SyncStatus.COMPLETED, (999, 0, 0, 1))
    assert first.error_details == [
        {"externalId": "crm-0000500", "error": "invalid email 'not an email'"}
    ]
    assert Customer.objects.count() == 999
    assert not Customer.objects.filter(external_id="crm-0000500").exists()
    job = first.job
    job.refresh_from_db()
    assert (job.current, job.total, job.result["created"]) == (1_000, 1_000, 999)

    crm_sandbox_configure(count=1_000, malformed=(500,), revise=True)  # every customer edited
    second = _sync(client, full=True)

    assert _counts(second) == (0, 999, 0, 1)
    assert Customer.objects.count() == 999
    assert Customer.objects.filter(company__endswith="(rev 1)").count() == 999

    third = _sync(client, full=True)

    assert _counts(third) == (0, 0, 999, 1)
    logs = client.data(LOGS)["syncLogs"]
    assert logs["totalCount"] == 3
    assert [e["node"]["updated"] for e in logs["edges"]] == [0, 999, 0]
    found = client.data(CUSTOMERS, {"id": "crm-0000007"})["customers"]
    assert found["totalCount"] == 1
    assert found["edges"][0]["node"]["email"] == "customer7@crm.example.com"


@pytest.mark.e2e
def test_incremental_sync_reads_only_customers_changed_within_the_window(
    live, staff_user, crm_sandbox
):
    crm_sandbox_configure(count=300)  # last changed long ago
    client = live.client(staff_user)

    quiet = _sync(client, full=False, hours=24)
    crm_sandbox_configure(count=300, revise=True)  # changed in the last 300 seconds
    busy = _sync(client, full=False, hours=1)

    assert _counts(quiet) == (0, 0, 0, 0)
    assert _counts(busy) == (300, 0, 0, 0)
    assert busy.kind == "incremental"
    assert timezone.now() - busy.since > timezone.timedelta(minutes=59)


@pytest.mark.e2e
def test_a_throttled_page_reschedules_the_run_which_resumes_at_that_page(
    live, staff_user, crm_sandbox
):
    crm_sandbox_configure(count=1_500)  # two pages of 1,000
    crm_sandbox_throttle(page=2, times=1)  # the CRM answers 429, Retry-After: 1

    sync_log = _sync(live.client(staff_user), full=True)

    job = sync_log.job
    job.refresh_from_db()
    assert job.attempts == 1  # a reschedule is a retry, not a new attempt
    # Page 1 was not read again: nothing skipped, every customer created once.
    assert _counts(sync_log) == (1_500, 0, 0, 0)
    assert Customer.objects.count() == 1_500


@pytest.mark.e2e
def test_a_worker_killed_mid_sync_resumes_at_its_checkpoint_and_counts_once(
    live, staff_user, crm_sandbox
):
    crm_sandbox_configure(count=3_000, latency_ms=400)  # three slow pages of 1,000
    started = live.client(staff_user).data(SYNC, {"full": True})["customersSync"]
    sync_log = SyncLog.objects.get()
    wait_until(lambda: SyncLog.objects.get().next_page >= 2)  # page 1 committed
    job = sync_log.job
    job.refresh_from_db()

    os.kill(AsyncResult(str(job.task_id)).info["pid"], signal.SIGKILL)
    job = job_finished(job.pk, timeout=60)

    sync_log.refresh_from_db()
    assert started["errors"] == []
    assert (job.status, job.attempts) == ("SUCCESS", 2)
    assert _counts(sync_log) == (3_000, 0, 0, 0)  # page 1 neither re-read nor re-counted
    assert Customer.objects.count() == 3_000
    assert live.worker.alive()


@pytest.mark.e2e
def test_the_beat_entry_starts_a_sync_of_its_own(live, crm_sandbox):
    crm_sandbox_configure(count=50)

    current_app.send_task("crm.sync_scheduled", kwargs={"full_sync": True})
    wait_until(SyncLog.objects.exists)
    job_finished(SyncLog.objects.get().job_id)

    sync_log = SyncLog.objects.get()
    assert (sync_log.kind, sync_log.triggered_by, sync_log.created) == ("full", None, 50)


@pytest.mark.e2e
def test_a_scheduled_sync_is_skipped_while_one_that_covers_it_runs(live, crm_sandbox):
    crm_sandbox_configure(count=20)
    running = SyncLog.objects.create(kind="incremental", status=SyncStatus.RUNNING)

    skipped = customers_sync_scheduled(full_sync=False)
    full = customers_sync_scheduled(full_sync=True)  # an incremental run does not cover it

    assert skipped is None
    assert full.kind == "full"
    assert job_finished(full.job_id).status == "SUCCESS"
    assert list(SyncLog.objects.order_by("pk").values_list("pk", flat=True)) == [
        running.pk,
        full.pk,
    ]


def test_the_beat_schedule_names_both_syncs_with_their_times():
    schedule = current_app.conf.beat_schedule

    incremental, full = schedule["crm-sync-incremental"], schedule["crm-sync-full"]

    assert (incremental["task"], incremental["kwargs"]) == (
        "crm.sync_scheduled",
        {"full_sync": False},
    )
    assert (full["task"], full["kwargs"]) == ("crm.sync_scheduled", {"full_sync": True})
    assert incremental["schedule"].hour == set(range(24))  # hourly,
    assert incremental["schedule"].minute == {0}  # on the hour
    assert (full["schedule"].hour, full["schedule"].minute) == ({3}, {0})  # daily at 03:00
    assert settings.CELERY_BEAT_SCHEDULE is schedule or schedule == settings.CELERY_BEAT_SCHEDULE


def _record(i: int, **changes) -> dict:
    return {
        "id": f"ext-{i}",
        "email": f"c{i}@example.com",
        "firstName": "Ada",
        "lastName": "Lovelace",
        "phone": "",
        "company": "Initech",
        "updatedAt": datetime(2026, 5, 1, tzinfo=UTC).isoformat(),
        **changes,
    }


def test_upserts_are_keyed_by_external_id_and_a_rerun_changes_nothing(transactional_db):
    page = [_record(1), _record(2), _record(3, updatedAt="soon"), _record(4, id="")]

    first = customers_upsert(page, now=timezone.now())
    again = customers_upsert(page, now=timezone.now())
    edited = customers_upsert(
        [_record(1, company="Globex", updatedAt="2026-05-02T09:00:00+00:00")], now=timezone.now()
    )

    assert (first.created, first.updated, first.skipped, len(first.errors)) == (2, 0, 0, 2)
    assert (again.created, again.updated, again.skipped, len(again.errors)) == (0, 0, 2, 2)
    assert (edited.created, edited.updated) == (0, 1)
    assert Customer.objects.count() == 2
    assert Customer.objects.get(external_id="ext-1").company == "Globex"
