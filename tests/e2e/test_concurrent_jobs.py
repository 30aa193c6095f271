"""Every kind of job at once on one database: none fails because another one committed.

On SQLite (the embedded default) a connection that writes while a read of its own still
holds an older snapshot is refused at once ("database is locked"), whatever the busy
timeout: a report exporting beside any other commit used to end FAILURE. These start
reports next to every other kind of work, from several users, and assert that each job
ends as it should.
"""

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from domains.analytics.models import MetricsSnapshot, SnapshotStatus
from domains.crm.models import SyncLog, SyncStatus
from domains.infra.redis import sync_client
from domains.jobs.models import Job, JobStatus
from domains.orders.models import Order, OrderStatus
from domains.payments.models import Payment, PaymentStatus
from domains.reports.models import Report, ReportStatus
from domains.sandbox.crm import CONFIG_KEY, crm_sandbox_configure
from schema.base import global_id, node_pk
from testbed.factories import (
    make_category,
    make_order,
    make_product,
    make_sales_lines,
    make_user,
)
from testbed.stack import stack_alone
from testbed.waiting import job_finished, wait_until
from tests.fixtures.commerce import COMMERCE_ENV, stocked_product, with_clean_sandbox

pytestmark = pytest.mark.e2e

# Exports held to a few thousand rows a second, so that each lasts seconds and every other
# job commits while it reads; four worker processes, so that they really run at once.
REPORT_RATE = 4_000
LINES = 20_000
ENV = {**COMMERCE_ENV, "REPORT_MAX_ROWS_PER_SECOND": str(REPORT_RATE)}

REPORT = """
mutation($input: SalesReportInput!) {
  salesReportGenerate(input: $input) { report { id } job { id } errors { code message } }
}
"""
ORDER_CREATE = """
mutation($input: OrderCreateInput!) {
  orderCreate(input: $input) { order { id } errors { code message } }
}
"""
CHECKOUT = """
mutation($id: ID!) {
  orderCheckout(id: $id, paymentMethod: "tok_visa") { job { id } errors { code message } }
}
"""
PAY = """
mutation($input: PaymentProcessInput!) {
  paymentProcess(input: $input) { payment { id } job { id } errors { code message } }
}
"""
CANCEL = "mutation($id: ID!) { jobCancel(id: $id) { job { id } errors { code message } } }"
CANCEL_ALL = """
mutation($email: String!) {
  jobsCancel(filters: {kind: SALES_REPORT, ownerEmail: $email}) { count errors { code } }
}
"""
CRM_SYNC = "mutation { customersSync(fullSync: true) { job { id } errors { code message } } }"
CATALOG_SYNC = "mutation { productsSyncAll { job { id } errors { code message } } }"
METRICS = "mutation { metricsSnapshotGenerate { job { id } errors { code message } } }"


@pytest.fixture(scope="module")
def busy_stack(django_db_setup, django_db_blocker):
    with stack_alone("busy", concurrency=4, **ENV) as stack:
        yield stack


@pytest.fixture
def busy(busy_stack, transactional_db):
    return with_clean_sandbox(busy_stack)


@pytest.fixture
def slow_crm():
    """The sandbox CRM with three pages of customers, each a commit, slow to answer; reset after."""
    crm_sandbox_configure(count=3_000, latency_ms=500)
    yield
    sync_client().delete(CONFIG_KEY)


def _sales_day() -> datetime:
    """The day the reports cover: yesterday, so that the orders the tests place are not in them."""
    return timezone.now() - timedelta(days=1)


@pytest.fixture
def sales(user) -> int:
    """Confirmed sales lines, as many as an export takes seconds to write."""
    product = make_product(category=make_category(), price="4.50")
    return make_sales_lines(
        customer=user, products=[product], orders=LINES, created_at=_sales_day()
    )


def _started(client, query: str, variables: dict | None = None) -> int:
    """The job's id, of a mutation that starts one."""
    (payload,) = client.data(query, variables).values()
    assert payload["errors"] == [], payload["errors"]
    return node_pk(payload["job"]["id"], "Job")


def _report(client) -> int:
    day = _sales_day().date().isoformat()
    return _started(client, REPORT, {"input": {"startDate": day, "endDate": day}})


def _order(client, product) -> str:
    items = [{"productId": str(global_id("Product", product.pk)), "quantity": 1}]
    created = client.data(ORDER_CREATE, {"input": {"items": items}})["orderCreate"]
    assert created["errors"] == [], created["errors"]
    return created["order"]["id"]


def _payment_input(order: Order) -> dict:
    return {
        "input": {
            "orderId": str(global_id("Order", order.pk)),
            "method": "tok_visa",
            "idempotencyKey": f"concurrent-{order.pk}",
        }
    }


def _exporting(job_ids: list[int]) -> int:
    """The first of the reports whose export has written rows (its row says so)."""
    return wait_until(
        lambda: (
            Job.objects.filter(pk__in=job_ids, stage="writing", current__gt=0)
            .values_list("pk", flat=True)
            .first()
        ),
        timeout=180,
        message="a report exporting",
    )


def _outcomes(job_ids: list[int]) -> dict[int, tuple[str, str]]:
    """Each job's status and error, once every one has ended."""
    return {
        pk: (job_finished(pk, timeout=300).status, Job.objects.get(pk=pk).error) for pk in job_ids
    }


def test_reports_checkouts_and_a_payment_at_once_end_as_they_should(busy, staff_user, user, sales):
    lamp = stocked_product(price="12.00", available=10)
    to_pay = make_order(
        customer=user, lines=[(stocked_product(price="25.00"), 2)], status="pending"
    )
    staff, shopper = busy.client(staff_user), busy.client(user)
    carts = [_order(shopper, lamp) for _ in range(2)]

    with ThreadPoolExecutor(max_workers=6) as pool:
        reports = [pool.submit(_report, staff) for _ in range(3)]
        checkouts = [pool.submit(_started, shopper, CHECKOUT, {"id": cart}) for cart in carts]
        payment = pool.submit(_started, shopper, PAY, _payment_input(to_pay))
        reports = [f.result() for f in reports]
        others = [f.result() for f in checkouts] + [payment.result()]
    cancelled = _exporting(reports)
    answer = staff.data(CANCEL, {"id": str(global_id("Job", cancelled))})["jobCancel"]

    outcomes = _outcomes(reports + others)

    assert outcomes == {
        pk: ((JobStatus.CANCELLED, "") if pk == cancelled else (JobStatus.SUCCESS, ""))
        for pk in reports + others
    }
    assert answer["errors"] == []
    finished = Report.objects.filter(job_id__in=reports).exclude(job_id=cancelled)
    assert (
        sorted(finished.values_list("status", "row_count")) == [(ReportStatus.COMPLETED, sales)] * 2
    )
    assert Report.objects.get(job_id=cancelled).status == ReportStatus.CANCELLED
    assert Order.objects.filter(job_id__in=others, status=OrderStatus.CONFIRMED).count() == 2
    assert Payment.objects.get(order=to_pay).status == PaymentStatus.SUCCEEDED


def test_an_order_placed_during_an_export_leaves_the_report_to_succeed(
    busy, staff_user, user, sales
):
    report = _report(busy.client(staff_user))
    _exporting([report])

    _order(busy.client(make_user()), stocked_product(available=3))

    assert _outcomes([report]) == {report: (JobStatus.SUCCESS, "")}
    assert Report.objects.filter(job_id=report).values_list("status", "row_count").get() == (
        ReportStatus.COMPLETED,
        sales,
    )


def test_syncs_a_snapshot_and_a_bulk_cancel_during_exports_end_as_they_should(
    busy, staff_user, sales, slow_crm
):
    other_staff = make_user(is_staff=True)
    staff = busy.client(staff_user)
    kept, doomed = _report(staff), _report(busy.client(other_staff))
    _exporting([kept, doomed])

    with ThreadPoolExecutor(max_workers=3) as pool:
        started = [pool.submit(_started, staff, q) for q in (CRM_SYNC, CATALOG_SYNC, METRICS)]
        others = [f.result() for f in started]
    bulk = staff.data(CANCEL_ALL, {"email": other_staff.email})["jobsCancel"]
    assert (bulk["errors"], bulk["count"]) == ([], 1)

    outcomes = _outcomes([kept, doomed, *others])

    assert outcomes == {
        kept: (JobStatus.SUCCESS, ""),
        doomed: (JobStatus.CANCELLED, ""),
        **{pk: (JobStatus.SUCCESS, "") for pk in others},
    }
    assert Report.objects.get(job_id=kept).row_count == sales
    assert SyncLog.objects.get(job_id=others[0]).status == SyncStatus.COMPLETED
    assert MetricsSnapshot.objects.get(job_id=others[2]).status == SnapshotStatus.COMPLETED
