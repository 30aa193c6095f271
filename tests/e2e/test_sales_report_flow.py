"""A person's path through the product: register, log in, start a report, watch it."""

import asyncio
import csv
import io
from datetime import timedelta

import httpx
import pytest
from django.utils import timezone

from domains.accounts.models import User
from domains.orders.models import OrderStatus
from testbed.factories import make_category, make_order, make_product, make_sales_lines
from testbed.graphql import JOB_PROGRESS, PROTOCOLS, GraphQLClient, Subscription

pytestmark = pytest.mark.e2e

REGISTER = """
mutation($input: UserRegisterInput!) { userRegister(input: $input) { user { id email } errors { field code message } } }
"""
TOKEN_CREATE = """
mutation($email: String!, $password: String!) { tokenCreate(email: $email, password: $password) { token errors { code } } }
"""
GENERATE = """
mutation($input: SalesReportInput!) {
  salesReportGenerate(input: $input) { report { id status } job { id status kind } errors { field code message } }
}
"""
REPORT = "query($id: ID!) { report(id: $id) { id status rowCount fileUrl errorMessage job { status attempts } } }"


def _register_and_login(live, email: str) -> GraphQLClient:
    anonymous = GraphQLClient(live.server.graphql_url)
    registered = anonymous.data(
        REGISTER, {"input": {"email": email, "password": "a-long-passphrase-1"}}
    )
    assert registered["userRegister"]["errors"] == []
    login = anonymous.data(TOKEN_CREATE, {"email": email, "password": "a-long-passphrase-1"})
    return GraphQLClient(live.server.graphql_url, login["tokenCreate"]["token"])


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_report_streams_progress_to_success_and_csv_matches_database(live, protocol):
    email = f"reporter-{protocol}@example.com"
    client = _register_and_login(live, email)
    customer = User.objects.get(email=email)  # a report covers its owner's own orders
    books, toys = make_category("Books"), make_category("Toys")
    book, toy = make_product(category=books, price="12.50"), make_product(category=toys)
    today = timezone.now()
    make_sales_lines(
        customer=customer, products=[book], orders=3_000, region="north", created_at=today
    )
    expected_order = make_order(customer=customer, lines=[(book, 2), (toy, 1)], region="north")
    make_order(customer=customer, lines=[(book, 1)], region="south")  # other region
    make_order(customer=customer, lines=[(book, 1)], status=OrderStatus.FAILED)  # not a sale
    make_order(
        customer=customer, lines=[(book, 1)], created_at=today - timedelta(days=40)
    )  # too old

    started = client.data(
        GENERATE,
        {
            "input": {
                "startDate": (today - timedelta(days=7)).date().isoformat(),
                "endDate": today.date().isoformat(),
                "category": str(books.pk),
                "region": "north",
            }
        },
    )["salesReportGenerate"]
    assert started["errors"] == []
    assert started["job"]["kind"] == "SALES_REPORT"
    job_id = started["job"]["id"]

    async def watch():
        async with Subscription(
            live.server.ws_url, JOB_PROGRESS, {"id": job_id}, token=client.token, protocol=protocol
        ) as sub:
            return [r["jobProgress"] for r in await sub.collect()], sub.completed

    events, completed = asyncio.run(watch())

    assert completed
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(set(seqs)), "seq strictly increases"
    assert all(e["jobId"] == job_id for e in events)
    assert events[-1]["status"] == "SUCCESS"
    assert events[-1]["progress"] == 1.0
    assert events[-1]["result"]["rowCount"] == 3_001
    report = client.data(REPORT, {"id": started["report"]["id"]})["report"]
    assert report["status"] == "completed"
    assert report["job"] == {"status": "SUCCESS", "attempts": 1}
    download = httpx.get(report["fileUrl"], headers={"Authorization": f"Bearer {client.token}"})
    assert download.status_code == 200
    rows = list(csv.DictReader(io.StringIO(download.text)))
    assert len(rows) == report["rowCount"] == 3_001
    assert {r["category"] for r in rows} == {"Books"}
    assert {r["region"] for r in rows} == {"north"}
    expected_line = next(r for r in rows if r["order_number"] == expected_order.number)
    assert (expected_line["quantity"], expected_line["line_total"]) == ("2", "25.00")
