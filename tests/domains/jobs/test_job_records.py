"""A record that a job works on ends one way: through the jobs domain's end transition.

Every job-backed model derives from `JobBacked`, every kind with a record has exactly one
such model and at most one handler, of the one form (the record, its job's end); the end
transition sets the record's status and reason for every kind, and a record that
vanished leaves the job to end with its own reason.
"""

import ast
import typing
from pathlib import Path

import pytest
from django.apps import apps
from django.conf import settings

from domains.accounts.models import ApiToken
from domains.jobs.ending import JobEnd, job_end, job_end_handlers
from domains.jobs.models import IdempotencyKey, Job, JobBacked, JobKind, JobStatus
from domains.jobs.services import job_cancel, job_create
from domains.webhooks.models import WebhookDelivery
from tests.domains.jobs.records import JOB_RECORDS

pytestmark = pytest.mark.django_db(transaction=True)

DOMAINS = Path(settings.BASE_DIR) / "domains"
# Rows about a job, many per job, that it does not work on: its webhook deliveries (one
# per endpoint), its access tokens and the idempotency key that started it.
NOT_RECORDS = {WebhookDelivery, ApiToken, IdempotencyKey}


RECORDS = JOB_RECORDS

# (status, error_message) of each kind's record once its job failed, and once cancelled
# while pending. A notification has no status of its own (its deliveries do: None here).
REASON = "The supplier refused the request."
FAILED = {
    JobKind.SALES_REPORT: ("failed", REASON),
    JobKind.PAYMENT: ("failed", REASON),
    JobKind.IMAGE_PROCESSING: ("failed", REASON),
    JobKind.ORDER_WORKFLOW: ("failed", REASON),
    JobKind.CUSTOMER_SYNC: ("failed", REASON),
    JobKind.METRICS_SNAPSHOT: ("failed", REASON),
    JobKind.NOTIFICATION: (None, REASON),
    JobKind.EMAIL: ("failed", REASON),
}
CANCELLED = {
    JobKind.SALES_REPORT: ("cancelled", ""),
    JobKind.PAYMENT: ("failed", "The payment was cancelled; no charge was made."),
    JobKind.IMAGE_PROCESSING: ("cancelled", ""),
    JobKind.ORDER_WORKFLOW: ("failed", "The checkout was cancelled."),
    JobKind.CUSTOMER_SYNC: ("cancelled", ""),
    JobKind.METRICS_SNAPSHOT: ("cancelled", ""),
    JobKind.NOTIFICATION: (None, ""),
    JobKind.EMAIL: ("cancelled", ""),
}


def _said(record) -> tuple[str | None, str]:
    record.refresh_from_db()
    return getattr(record, "status", None), record.error_message


def _job_models() -> set[type]:
    """Every model whose `job` names the Job it is the record of."""
    return {
        model
        for model in apps.get_models()
        if any(f.name == "job" and f.related_model is Job for f in model._meta.get_fields())
    } - NOT_RECORDS


def test_every_job_backed_model_derives_from_the_abstract_model():
    models = _job_models()

    assert models == {r.model for r in job_end_handlers().values()}
    assert [m.__name__ for m in models if not issubclass(m, JobBacked)] == []


def test_every_kind_with_a_record_has_one_model_and_handlers_of_one_form():
    records = job_end_handlers()

    assert set(records) == set(JobKind) - {JobKind.PRODUCT_SYNC}
    assert sorted(m.job_kind for m in _job_models()) == sorted(records), "one model per kind"
    for kind, record in records.items():
        assert record.model.job_kind == kind
        if record.handler is None:
            continue
        hints = typing.get_type_hints(record.handler)
        first, *rest = [name for name in hints if name != "return"]
        assert (hints[first], rest, hints["return"]) == (record.model, ["end"], type(None))
        assert hints["end"] is JobEnd


def _failed_status_writes() -> set[tuple[str, str]]:
    """(module, function) of each `.update(status=<a record's status>.FAILED/CANCELLED)`."""
    enums = {
        type(model.job_end_statuses[JobStatus.FAILURE]).__name__
        for model in _job_models()
        if model.job_end_statuses
    }
    found = set()
    for path in DOMAINS.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef):
                continue
            for call in ast.walk(function):
                if not (isinstance(call, ast.Call) and getattr(call.func, "attr", "") == "update"):
                    continue
                for keyword in call.keywords:
                    value = keyword.value
                    if (
                        keyword.arg == "status"
                        and isinstance(value, ast.Attribute)
                        and value.attr in ("FAILED", "CANCELLED")
                        and isinstance(value.value, ast.Name)
                        and value.value.id in enums
                    ):
                        found.add((str(path.relative_to(DOMAINS)), function.name))
    return found


def test_no_domain_marks_its_record_failed_outside_the_end_transition():
    # The one exception is money: a payment whose job ended with its charge's outcome
    # unknown is settled later by the gateway's answer (its reconciliation), not by a job.
    assert _failed_status_writes() == {("payments/services.py", "_settle_failed")}


@pytest.mark.parametrize("kind", list(RECORDS))
def test_a_failed_job_fails_its_record_with_the_reason(user, kind):
    job = job_create(kind=kind, owner=user)
    record = RECORDS[kind](user, job)

    assert job_end(job_id=job.pk, status=JobStatus.FAILURE, error=REASON)

    assert _said(record) == FAILED[kind]


@pytest.mark.parametrize("kind", list(RECORDS))
def test_a_cancelled_job_ends_its_record_cancelled_or_failed_with_its_reason(user, kind):
    job = job_create(kind=kind, owner=user)
    record = RECORDS[kind](user, job)

    job_cancel(job=job)

    assert _said(record) == CANCELLED[kind]


@pytest.mark.parametrize("kind", list(RECORDS))
def test_a_vanished_record_leaves_its_job_to_end_failed_with_its_reason(user, kind):
    job = job_create(kind=kind, owner=user)
    record = RECORDS[kind](user, job)
    type(record).objects.filter(pk=record.pk).delete()

    assert job_end(job_id=job.pk, status=JobStatus.FAILURE, error="The report no longer exists.")

    job.refresh_from_db()
    assert (job.status, job.error) == (JobStatus.FAILURE, "The report no longer exists.")
    assert not job_end(job_id=job.pk, status=JobStatus.FAILURE), "a job ends once"
