"""What the sync accepts from the CRM: hostile or broken records are refused one by one."""

import pytest
from django.utils import timezone

from domains.crm.models import Customer
from domains.crm.services import MalformedRecord, customer_fields, customers_upsert

GOOD = {
    "id": "crm-1",
    "email": "Ada@Example.com",
    "firstName": "Ada",
    "lastName": "Lovelace",
    "phone": "+15550000001",
    "company": "Initech",
    "updatedAt": "2026-05-01T10:00:00+00:00",
}


def test_a_good_record_becomes_customer_fields():
    external_id, fields = customer_fields(GOOD)

    assert external_id == "crm-1"
    assert fields["email"] == "ada@example.com"
    assert fields["external_updated_at"].isoformat() == "2026-05-01T10:00:00+00:00"


@pytest.mark.parametrize(
    "changes",
    [
        {"id": ""},
        {"id": None},
        {"id": "x" * 65},
        {"email": "not an email"},
        {"email": ["a@example.com"]},
        {"email": "a@example.com\r\nBcc: victim@example.com"},
        {"updatedAt": "last tuesday"},
        {"updatedAt": "2026-05-01T10:00:00"},  # no time zone: ambiguous
        {"updatedAt": None},
        {"updatedAt": "2026-13-45T10:00:00+00:00"},  # well formed, not a date
        {"email": "a" * 250 + "@example.com"},  # valid, but past the column's 254
    ],
)
def test_a_malformed_record_is_refused(changes):
    with pytest.raises(MalformedRecord):
        customer_fields({**GOOD, **changes})


@pytest.mark.parametrize("record", ["crm-1", ["crm-1"], None, 7])
def test_a_record_that_is_not_an_object_is_refused(record):
    with pytest.raises(MalformedRecord):
        customer_fields(record)


def test_a_page_with_broken_records_counts_them_and_keeps_the_good_one(db):
    records = [GOOD, "crm-2", {**GOOD, "id": "crm-3", "updatedAt": "2026-02-30T00:00:00Z"}]

    outcome = customers_upsert(records, now=timezone.now())

    assert (outcome.created, len(outcome.errors)) == (1, 2)
    assert list(Customer.objects.values_list("external_id", flat=True)) == ["crm-1"]


def test_overlong_text_is_cut_to_the_columns():
    _, fields = customer_fields({**GOOD, "firstName": "A" * 10_000, "company": "C" * 10_000})

    assert (len(fields["first_name"]), len(fields["company"])) == (150, 200)
