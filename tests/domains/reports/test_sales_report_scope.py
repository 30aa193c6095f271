"""A sales report covers the orders its owner may see, and its cells are spreadsheet-safe.

Runs the export itself (the Python writer on SQLite, COPY on PostgreSQL: the same rows)."""

import csv
import io
from datetime import date

import pytest
from django.core.files.storage import default_storage

from domains.accounts.models import User
from domains.jobs.attempts import job_attempt_start
from domains.jobs.models import JobKind
from domains.jobs.services import job_create
from domains.reports.models import Report
from domains.reports.services import sales_report_export
from testbed.factories import make_category, make_order, make_product, make_user


def _export_rows(owner) -> list[dict]:
    today = str(date.today())
    report = Report.objects.create(
        owner=owner,
        job=job_create(kind=JobKind.SALES_REPORT, owner=owner),
        parameters={"startDate": today, "endDate": today},
    )
    _, reporter = job_attempt_start(job_id=report.job_id)
    reporter.started()
    report = sales_report_export(report=report, reporter=reporter)
    with default_storage.open(report.file.name) as stored:
        return list(csv.DictReader(io.TextIOWrapper(stored, encoding="utf-8", newline="")))


@pytest.fixture
def two_customers(transactional_db):
    product = make_product(category=make_category())
    alice, bob = make_user(), make_user()
    return (
        alice,
        bob,
        make_order(customer=alice, lines=[(product, 1)]),
        make_order(customer=bob, lines=[(product, 2)]),
    )


def test_a_users_sales_report_covers_only_their_own_orders(two_customers):
    alice, _, alices_order, _ = two_customers

    rows = _export_rows(alice)

    assert [(r["order_number"], r["customer_email"]) for r in rows] == [
        (alices_order.number, alice.email)
    ]


def test_a_staff_members_sales_report_covers_every_order(two_customers):
    _, _, alices_order, bobs_order = two_customers

    rows = _export_rows(make_user(is_staff=True))

    assert {r["order_number"] for r in rows} == {alices_order.number, bobs_order.number}


@pytest.mark.parametrize("lead", ["=", "+", "-", "@", "\t", "\r"])
def test_cells_a_spreadsheet_would_run_as_formulas_are_quoted(transactional_db, lead):
    customer = make_user()
    User.objects.filter(pk=customer.pk).update(email=f"{lead}1+2@example.com")  # as stored
    product = make_product(
        category=make_category(f"{lead}HYPERLINK(1)"), name=f'{lead}cmd|"/c calc"!A1'
    )
    make_order(customer=customer, lines=[(product, 3)], region=f"{lead}north")

    [row] = _export_rows(customer)

    assert row["customer_email"] == f"'{lead}1+2@example.com"
    assert row["product_name"] == f'\'{lead}cmd|"/c calc"!A1'
    assert row["category"] == f"'{lead}HYPERLINK(1)"
    assert row["region"] == f"'{lead}north"
    assert (row["quantity"], row["line_total"]) == ("3", "30.00")  # numbers untouched


def test_ordinary_cells_are_written_as_they_are(transactional_db):
    customer = make_user(email="plain+tag@example.com")
    make_order(customer=customer, lines=[(make_product(name="Mug - blue"), 1)], region="north")

    [row] = _export_rows(customer)

    assert (row["customer_email"], row["product_name"], row["region"]) == (
        "plain+tag@example.com",
        "Mug - blue",
        "north",
    )
