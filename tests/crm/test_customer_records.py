"""What the sync accepts from the CRM: hostile or broken records are refused one by one."""

import pytest

from domains.crm.services import MalformedRecord, customer_fields

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
    ],
)
def test_a_malformed_record_is_refused(changes):
    with pytest.raises(MalformedRecord):
        customer_fields({**GOOD, **changes})


def test_overlong_text_is_cut_to_the_columns():
    _, fields = customer_fields({**GOOD, "firstName": "A" * 10_000, "company": "C" * 10_000})

    assert (len(fields["first_name"]), len(fields["company"])) == (150, 200)
