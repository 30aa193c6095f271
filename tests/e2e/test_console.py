"""The live jobs console as a person uses it, in a real Chromium: sign in on the page, then
watch, cancel and retry jobs started through the API, without reloading and without any
request leaving this server. Also measures how long a worker's progress event takes to
change the console's row (printed; no assert on time)."""

import os
import statistics
from collections.abc import Iterator
from datetime import datetime

import pytest
from django.db import transaction
from django.utils import timezone
from playwright.sync_api import Browser, Page, expect, sync_playwright

from domains.infra.redis import sync_client
from domains.jobs.ending import job_end
from domains.jobs.events import decode, log_key
from domains.jobs.models import Job, JobKind, JobStatus
from domains.jobs.services import job_create, job_dispatch
from domains.orders.models import PaymentStatus as OrderPaymentStatus
from domains.payments.models import Payment, PaymentStatus
from schema.base import global_id, node_pk
from testbed.factories import PASSWORD, make_order, make_product, make_sales_lines, make_user
from testbed.stack import LOG_DIR
from testbed.waiting import job_finished, job_in_status
from tests.fixtures.browser import BROWSER_TEST, CHROMIUM, only_this_server
from tests.fixtures.commerce import stocked_product

pytestmark = BROWSER_TEST

REPORT = """
mutation($day: Date!) {
  salesReportGenerate(input: {startDate: $day, endDate: $day}) { job { id } errors { code } }
}
"""
PAY = """
mutation($input: PaymentProcessInput!) {
  paymentProcess(input: $input) { job { id } errors { code } }
}
"""

# Every row the table shows, as it appears: [job id, seq, status, percentage text, when].
_WATCH_ROWS = """() => {
  window.__rows = [];
  window.__samePage = true;
  const seen = (row) => window.__rows.push([row.dataset.jobId, Number(row.dataset.seq),
    row.dataset.status, row.querySelector('.pct').textContent, Date.now()]);
  new MutationObserver((mutations) => {
    for (const m of mutations) for (const n of m.addedNodes) if (n.tagName === 'TR') seen(n);
  }).observe(document.querySelector('#jobs tbody'), { childList: true });
}"""


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """One Chromium for the module. Playwright's sync API keeps an event loop running on
    this thread while it is open, and Django refuses database calls from a thread with a
    running loop: the test's own calls are plain synchronous ones, so they are allowed
    (as Playwright's guide for Django says) while the browser is open, and only then."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "1"
        try:
            yield browser
        finally:
            del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]
            browser.close()


class Console:
    """One person's tab on /console/, refusing every request to another origin."""

    def __init__(self, browser: Browser, server_url: str, name: str):
        self.context = browser.new_context(viewport={"width": 1400, "height": 1000})
        self.page: Page = self.context.new_page()
        self.url = f"{server_url}/console/"
        self.name = name
        self.outside_requests = only_this_server(self.page, server_url)
        self.page_errors: list[str] = []
        self.page.on("pageerror", lambda error: self.page_errors.append(str(error)))

    def sign_in(self, user) -> None:
        self.page.goto(self.url)
        self.page.fill("#sign-in input[name=email]", user.email)
        self.page.fill("#sign-in input[name=password]", PASSWORD)
        self.page.click("#sign-in button[type=submit]")
        expect(self.page.locator("#viewer-email")).to_have_text(user.email)
        expect(self.page.locator("#sign-in")).to_be_hidden()
        self.page.evaluate(_WATCH_ROWS)

    def row(self, job_id: str):
        return self.page.locator(f'#jobs tr[data-job-id="{job_id}"]')

    def close(self) -> None:
        try:
            self.page.screenshot(path=str(LOG_DIR / f"console-{self.name}.png"))
        finally:
            self.context.close()
        assert self.outside_requests == []
        assert self.page_errors == []


@pytest.fixture
def open_console(live, chromium):
    consoles: list[Console] = []

    def open_one(user) -> Console:
        console = Console(chromium, live.server.url, f"{len(consoles)}")
        consoles.append(console)
        console.sign_in(user)
        return console

    yield open_one
    for console in consoles:
        console.close()


def _report(live, user, *, rows: int) -> str:
    make_sales_lines(customer=user, products=[make_product()], orders=rows)
    return _report_again(live, user)


def _report_again(live, user) -> str:
    """Another report of the same lines (today's, all of the user's)."""
    answer = live.client(user).data(REPORT, {"day": timezone.now().date().isoformat()})
    assert answer["salesReportGenerate"]["errors"] == []
    return answer["salesReportGenerate"]["job"]["id"]


def _gid(job: Job) -> str:
    return str(global_id("Job", job.pk))


def _emitted_at(job_id: str) -> dict[int, float]:
    """Each event's emit time (the worker's `at`) in ms since the epoch, by seq."""
    entries = sync_client().xrange(log_key(node_pk(job_id, "Job")))
    events = [decode(fields["e"]) for _, fields in entries]
    return {e["seq"]: datetime.fromisoformat(e["at"]).timestamp() * 1000 for e in events}


def test_a_job_started_through_the_api_reaches_success_live(live, user, open_console):
    console = open_console(user)

    job_id = _report(live, user, rows=4_000)

    row = console.row(job_id)
    expect(row).to_have_attribute("data-status", "SUCCESS", timeout=60_000)
    expect(row.locator(".pct")).to_have_text("100%")
    expect(row.locator("progress")).to_have_attribute("value", "100")
    assert console.page.evaluate("window.__samePage") is True  # no reload
    shown = console.page.evaluate("window.__rows")
    emitted = _emitted_at(job_id)
    first_shown: dict[int, float] = {}
    for shown_job, seq, _, _, at in shown:
        if shown_job == job_id and seq in emitted:
            first_shown.setdefault(seq, at)
    lags = [first_shown[seq] - emitted[seq] for seq in first_shown]
    statuses = [status for shown_job, _, status, _, _ in shown if shown_job == job_id]
    assert "PROGRESS" in statuses
    assert statuses[-1] == "SUCCESS"
    row.get_by_role("link", name="SALES_REPORT").click()  # its page: timeline and CSV
    expect(console.page.locator("#timeline tbody tr")).to_have_count(len(emitted))
    download = console.page.locator("#job-links a.download")
    expect(download).to_have_text("Download the report's CSV (4000 rows)")
    expect(console.page.locator("#job-facts")).to_contain_text("Trace(tracing off)")
    assert "/files/reports/" in download.get_attribute("href")
    print(
        f"\nconsole row lag (worker emit -> row changed): p50 {statistics.median(lags):.1f} ms, "
        f"max {max(lags):.1f} ms over {len(lags)} of {len(emitted)} events"
    )


def test_cancel_a_running_job(live, user, open_console):
    console = open_console(user)
    job_id = _report(live, user, rows=20_000)
    row = console.row(job_id)
    expect(row).to_have_attribute("data-status", "PROGRESS", timeout=60_000)

    row.get_by_role("button", name="Cancel", exact=True).click()

    # Shown at once, stopping or stopped: Cancel is not offered again.
    expect(row).to_have_attribute("data-cancel-requested", "true")
    expect(row.get_by_role("button", name="Cancel", exact=True)).to_have_count(0)
    expect(row).to_have_attribute("data-status", "CANCELLED", timeout=30_000)
    expect(row.get_by_role("button", name="Retry", exact=True)).to_be_visible()
    assert job_finished(node_pk(job_id, "Job")).status == JobStatus.CANCELLED


def test_staff_cancel_what_the_filter_selects(live, user, other_user, staff_user, open_console):
    # Only the running report is selected. On SQLite a commit by another connection while
    # an export reads makes the export's next row write fail ("database is locked"), so
    # nothing else is written meanwhile: the jobs left alone are written before it starts.
    other_kind = job_create(kind=JobKind.PRODUCT_SYNC, owner=user)
    other_owner = job_create(kind=JobKind.SALES_REPORT, owner=other_user)
    console = open_console(staff_user)
    running = _report(live, user, rows=80_000)  # 20 s at the stack's 4,000 rows/s
    expect(console.row(running)).to_have_attribute("data-status", "PROGRESS", timeout=60_000)

    console.page.fill("#filters input[name=ownerEmail]", user.email)
    console.page.select_option("#filters select[name=kind]", "SALES_REPORT")
    console.page.click("#filters button[type=submit]")
    expect(console.row(_gid(other_owner))).to_have_count(0)
    expect(console.row(_gid(other_kind))).to_have_count(0)
    console.page.click("#bulk-cancel")

    expect(console.page.locator("#list-note")).to_have_text("Cancelled 1 job.")
    expect(console.row(running)).to_have_attribute("data-status", "CANCELLED", timeout=30_000)
    assert job_finished(node_pk(running, "Job")).status == JobStatus.CANCELLED
    left = Job.objects.filter(pk__in=[other_kind.pk, other_owner.pk]).values_list(
        "status", flat=True
    )
    assert list(left) == [JobStatus.PENDING, JobStatus.PENDING]


def test_retry_a_declined_payment_with_a_new_method(live, user, open_console):
    order = make_order(customer=user, lines=[(stocked_product(), 2)], status="pending")
    console = open_console(user)
    answer = live.client(user).data(
        PAY,
        {
            "input": {
                "orderId": str(global_id("Order", order.pk)),
                "method": "tok_decline",
                "idempotencyKey": "console-pay-1",
            }
        },
    )["paymentProcess"]
    assert answer["errors"] == []
    declined_id = answer["job"]["id"]
    expect(console.row(declined_id)).to_have_attribute("data-status", "FAILURE", timeout=60_000)

    console.page.click(f'#jobs tr[data-job-id="{declined_id}"] td a')  # its page
    expect(console.page.locator("#job-view")).to_have_attribute("data-status", "FAILURE")
    expect(console.page.locator("#job-error")).not_to_be_empty()
    console.page.locator("#job-actions").get_by_role("button", name="Retry", exact=True).click()
    console.page.fill("#retry-dialog input[name=paymentMethod]", "tok_visa")
    console.page.locator("#retry-dialog").get_by_role("button", name="Retry", exact=True).click()

    expect(console.page.locator("#job-view")).to_have_attribute(
        "data-status", "SUCCESS", timeout=60_000
    )
    expect(console.page.locator("#job-links")).to_contain_text("Retry of PAYMENT FAILURE")
    expect(console.page.locator("#job-links")).to_contain_text("Payment succeeded by tok_visa")
    expect(console.page.locator("#timeline tbody tr").last).to_contain_text("SUCCESS")
    retry = Job.objects.get(retry_of_id=node_pk(declined_id, "Job"))
    paid = Payment.objects.get(job=retry)
    assert (paid.status, paid.method) == (PaymentStatus.SUCCEEDED, "tok_visa")
    order.refresh_from_db()
    assert order.payment_status == OrderPaymentStatus.PAID


def test_an_ordinary_user_sees_only_their_own_jobs_and_staff_see_everyones(
    live, user, open_console
):
    other = make_user(email="someone-else@example.com")
    staff = make_user(email="ops@example.com", is_staff=True)
    theirs_before = _report(live, other, rows=50)
    job_finished(node_pk(theirs_before, "Job"))
    mine = open_console(user)
    ops = open_console(staff)

    theirs_live = _report(live, other, rows=50)
    job_finished(node_pk(theirs_live, "Job"))
    own_live = _report(live, user, rows=50)  # after theirs: its events came first

    expect(mine.row(own_live)).to_have_attribute("data-status", "SUCCESS", timeout=60_000)
    expect(ops.row(theirs_live)).to_have_attribute("data-status", "SUCCESS", timeout=60_000)
    assert mine.row(theirs_before).count() == 0
    assert mine.row(theirs_live).count() == 0
    expect(mine.page.locator("#jobs thead th", has_text="Owner")).to_be_hidden()
    expect(ops.row(theirs_before)).to_contain_text(other.email)
    expect(ops.row(own_live)).to_contain_text(user.email)


# How many SUCCESS jobs the per-minute chart shows, once it shows at least `least`.
_SUCCESSES_CHARTED = """(least) => [...document.querySelectorAll(
  '#chart-per-minute rect[data-status=SUCCESS]')].reduce((n, r) => n + Number(r.dataset.count), 0)
  >= least"""


def test_the_charts_render_from_job_stats(live, user, open_console):
    job_finished(node_pk(_report(live, user, rows=50), "Job"))
    console = open_console(user)

    console.page.wait_for_function(_SUCCESSES_CHARTED, arg=1)
    durations = console.page.locator('#chart-durations g[data-kind="SALES_REPORT"]')
    expect(durations).to_contain_text("(1)")
    expect(durations.locator("rect")).to_have_count(2)  # p50 and p95
    expect(console.page.locator("#sign-in")).to_be_hidden()
    job_in_status(node_pk(_report(live, user, rows=50), "Job"), {JobStatus.SUCCESS})
    # A job that ends redraws the charts, without a reload (a report also mails its owner:
    # that EMAIL job is charted too).
    expect(durations).to_contain_text("(2)", timeout=15_000)
    console.page.wait_for_function(_SUCCESSES_CHARTED, arg=2)
    assert console.page.evaluate("window.__samePage") is True


def test_a_waiting_jobs_page_shows_its_place_and_why_and_follows_it(
    live, user, open_console, settings
):
    # Queued here, under a task name no worker runs: the first holds the user's one slot.
    settings.JOB_MAX_RUNNING_PER_USER = 1
    jobs = []
    for _ in range(3):
        with transaction.atomic():
            job = job_create(kind=JobKind.SALES_REPORT, owner=user)
            job_dispatch(job=job, task_name="reports.never_run_by_a_worker")
        jobs.append(job)
    console = open_console(user)

    console.page.goto(f"{console.url}#/jobs/{_gid(jobs[2])}")

    facts = console.page.locator("#job-facts")
    expect(facts).to_contain_text("Queue position2")
    expect(facts).to_contain_text("Waiting1 of your jobs is running; the limit is 1")
    job_end(job_id=jobs[0].pk, status=JobStatus.CANCELLED)  # its slot frees: one moves up
    expect(facts).to_contain_text("Queue position1")
