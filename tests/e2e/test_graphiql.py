"""GraphiQL as a person uses it, in a real Chromium: sign in with tokenCreate, then start a
report and watch its job on the same page, without reloading and without any CDN."""

import json

from django.utils import timezone
from playwright.sync_api import Page, sync_playwright

from testbed.factories import PASSWORD, make_product, make_sales_lines, make_user
from testbed.stack import LOG_DIR
from tests.fixtures.browser import BROWSER_TEST, CHROMIUM, only_this_server

pytestmark = BROWSER_TEST

QUERY_EDITOR = ".graphiql-query-editor .CodeMirror"
RESULT_PANE = ".result-window .CodeMirror"

# The result pane once it shows a new result that has top-level errors or contains `until`.
_RESULT_ARRIVED = """([selector, before, until]) => {
  const text = document.querySelector(selector)?.CodeMirror.getValue();
  if (!text || text === before) return false;
  try {
    return Boolean(JSON.parse(text).errors) || text.includes(until);
  } catch {
    return false;
  }
}"""


def _pane(page: Page) -> str:
    return page.eval_on_selector(RESULT_PANE, "pane => pane.CodeMirror.getValue()")


def _run(page: Page, document: str, *, until: str) -> dict:
    """Put the document in the query editor, press GraphiQL's run button once GraphiQL has
    parsed it, and return the result pane's JSON once it contains `until` (or errors).

    GraphiQL parses edits after a short debounce: run earlier, it would send the document
    with the previous one's operation type, and a subscription would go over HTTP.
    """
    before = _pane(page)
    page.eval_on_selector(
        QUERY_EDITOR, "(editor, text) => editor.CodeMirror.setValue(text)", document
    )
    page.wait_for_function(
        "([selector, text]) => document.querySelector(selector).CodeMirror.documentAST"
        "?.loc.source.body === text",
        arg=[QUERY_EDITOR, document],
    )
    page.click(".graphiql-execute-button")
    page.wait_for_function(_RESULT_ARRIVED, arg=[RESULT_PANE, before, until], timeout=30_000)
    result = json.loads(_pane(page))
    assert "errors" not in result, result
    return result["data"]


def test_sign_in_then_a_mutation_and_a_subscription_on_the_same_page(live):
    user = make_user(email="graphiql@example.com")
    today = timezone.now()
    make_sales_lines(customer=user, products=[make_product()], orders=2_000, created_at=today)
    page_errors: list[str] = []

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.on("pageerror", lambda error: page_errors.append(str(error)))

        outside_requests = only_this_server(page, live.server.url)
        try:
            page.goto(live.server.graphql_url)
            page.wait_for_selector(QUERY_EDITOR)
            signed_in = _run(
                page,
                f'mutation {{ tokenCreate(email: "{user.email}", password: "{PASSWORD}") '
                "{ token errors { code message } } }",
                until='"token"',
            )
            day = today.date().isoformat()
            started = _run(
                page,
                f'mutation {{ salesReportGenerate(input: {{startDate: "{day}", endDate: "{day}"}})'
                " { report { id } job { id status } errors { code message } } }",
                until='"salesReportGenerate"',
            )
            job_id = started["salesReportGenerate"]["job"]["id"]
            finished = _run(
                page,
                f'subscription {{ jobProgress(id: "{job_id}") {{ seq status current total }} }}',
                until='"SUCCESS"',
            )
        finally:
            # What the page showed last, kept beside the server's log for a failed run.
            page.screenshot(path=str(LOG_DIR / "graphiql.png"))
            browser.close()

    assert signed_in["tokenCreate"]["errors"] == []
    assert started["salesReportGenerate"]["errors"] == []
    assert finished["jobProgress"]["status"] == "SUCCESS"
    assert finished["jobProgress"]["current"] == finished["jobProgress"]["total"] == 2_000
    assert outside_requests == []
    assert page_errors == []
