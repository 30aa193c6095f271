"""Registration refuses weak passwords (Django's validators) and inputs past the model's
limits on every database, SQLite included, with a coded error naming the field."""

import json

import pytest
from django.test import Client

from domains.accounts.models import User

REGISTER = """
mutation($input: UserRegisterInput!) {
  userRegister(input: $input) { user { email } errors { field code message } }
}
"""
STRONG = "a-long-passphrase-1"


def _register(**fields) -> dict:
    response = Client().post(
        "/graphql/",
        json.dumps({"query": REGISTER, "variables": {"input": fields}}),
        content_type="application/json",
    )
    return response.json()["data"]["userRegister"]


@pytest.mark.django_db
@pytest.mark.parametrize("password", ["", "x", "12345678901", "password", "newcomer@example.com"])
def test_weak_passwords_are_refused(password):
    answer = _register(email="newcomer@example.com", password=password)

    assert answer["user"] is None
    assert [(e["field"], e["code"]) for e in answer["errors"]] == [
        ("password", "PASSWORD_TOO_WEAK")
    ]
    assert not User.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("firstName", "f" * 151),
        ("lastName", "l" * 151),
        ("phone", "+1" + "5" * 31),
        ("email", "e" * 250 + "@example.com"),
        ("email", "not an email"),
        ("email", ""),
    ],
)
def test_inputs_past_the_models_limits_are_refused_on_every_backend(field, value):
    answer = _register(**{"email": "newcomer@example.com", "password": STRONG, field: value})

    assert answer["user"] is None
    [error] = answer["errors"]
    assert (error["field"], error["code"]) == (field, "INVALID")
    assert not User.objects.exists()


@pytest.mark.django_db
def test_inputs_at_the_limits_are_kept_whole():
    answer = _register(
        email="newcomer@example.com",
        password=STRONG,
        firstName="f" * 150,
        lastName="l" * 150,
        phone="+1" + "5" * 30,
    )

    assert answer["errors"] == []
    user = User.objects.get()
    assert (len(user.first_name), len(user.last_name), len(user.phone)) == (150, 150, 32)
