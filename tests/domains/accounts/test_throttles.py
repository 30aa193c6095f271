"""Password guessing and sign-ups are throttled per account and per client address, in
Redis, so every process shares one budget; a client that waits as told gets through."""

import time

import pytest
from django.test import Client

from domains.accounts.errors import AccountError
from domains.accounts.models import ApiToken, User
from domains.accounts.services import token_create, user_register
from domains.accounts.throttle import RateLimited, ThrottledAction, throttle_attempt
from testbed.factories import PASSWORD, make_user
from testbed.graphql import GraphQLClient

NEVER_AGAIN = 0.0001  # attempts a minute: once the burst is spent, none for ~7 days
TOKEN_CREATE = """
mutation($email: String!, $password: String!) {
  tokenCreate(email: $email, password: $password) { token errors { field code message } }
}
"""


def _throttles(settings, *, login=(0, 0), login_address=(0, 0), register_address=(0, 0)):
    settings.THROTTLES = {
        "login": {"account": login, "address": login_address},
        "register": {"account": (0, 0), "address": register_address},
    }


def _outcome(call) -> str:
    try:
        call()
    except AccountError as error:
        return error.code
    except RateLimited as error:
        return error.code
    return "OK"


def test_five_hundred_wrong_passwords_in_a_row_reach_the_password_check_three_times(user, settings):
    _throttles(settings, login=(NEVER_AGAIN, 3))

    outcomes = [
        _outcome(lambda i=i: token_create(email=user.email, password=f"guess-{i}"))
        for i in range(500)
    ]

    assert outcomes[:3] == ["INVALID_CREDENTIALS"] * 3
    assert set(outcomes[3:]) == {"RATE_LIMITED"}
    assert _outcome(lambda: token_create(email=user.email, password=PASSWORD)) == "RATE_LIMITED"
    assert not ApiToken.objects.filter(user=user).exists()


def test_the_refusal_says_when_to_come_back_and_then_the_right_password_works(user, settings):
    _throttles(settings, login=(60, 1))  # one attempt a second
    _outcome(lambda: token_create(email=user.email, password="wrong"))

    with pytest.raises(RateLimited) as refused:
        token_create(email=user.email, password=PASSWORD)
    time.sleep(refused.value.retry_after)
    token, _ = token_create(email=user.email, password=PASSWORD)

    assert refused.value.retry_after == 1
    assert refused.value.message == "Too many attempts. Try again in 1 seconds."
    assert token.startswith("jst_")


def test_the_account_budget_holds_whatever_the_address_and_the_address_budget_whatever_the_account(
    transactional_db, settings
):
    _throttles(settings, login=(NEVER_AGAIN, 2), login_address=(NEVER_AGAIN, 2))
    victim, others = make_user(), [make_user() for _ in range(3)]

    spread = [
        _outcome(lambda a=a: token_create(email=victim.email, password="x", client_address=a))
        for a in ("10.0.0.1", "10.0.0.2", "10.0.0.3")
    ]
    one_address = [
        _outcome(lambda u=u: token_create(email=u.email, password="x", client_address="10.9.9.9"))
        for u in others
    ]

    assert spread == ["INVALID_CREDENTIALS", "INVALID_CREDENTIALS", "RATE_LIMITED"]
    assert one_address == ["INVALID_CREDENTIALS", "INVALID_CREDENTIALS", "RATE_LIMITED"]


def test_sign_ups_are_throttled_per_address(transactional_db, settings):
    _throttles(settings, register_address=(NEVER_AGAIN, 2))

    outcomes = [
        _outcome(
            lambda i=i: user_register(
                email=f"new{i}@example.com", password=PASSWORD, client_address="10.1.1.1"
            )
        )
        for i in range(3)
    ]

    assert outcomes == ["OK", "OK", "RATE_LIMITED"]
    assert User.objects.filter(email="new2@example.com").count() == 0


def test_token_create_answers_rate_limited_with_the_wait_in_graphql(transactional_db, settings):
    _throttles(settings, login_address=(NEVER_AGAIN, 1))
    client = Client()

    def attempt():
        response = client.post(
            "/graphql/",
            {"query": TOKEN_CREATE, "variables": {"email": "a@example.com", "password": "x"}},
            content_type="application/json",
        )
        return response.json()["data"]["tokenCreate"]

    attempt()
    refused = attempt()

    assert refused["token"] is None
    [error] = refused["errors"]
    assert error["code"] == "RATE_LIMITED"
    assert error["message"].startswith("Too many attempts. Try again in ")


def test_the_admin_login_shares_the_budget_and_says_so(transactional_db, settings):
    _throttles(settings, login=(NEVER_AGAIN, 2))
    staff = make_user(is_staff=True)
    spent_over_the_api = _outcome(lambda: token_create(email=staff.email, password="wrong"))

    first = Client().post("/admin/login/", {"username": staff.email, "password": "wrong"})
    refused = Client().post("/admin/login/", {"username": staff.email, "password": PASSWORD})

    assert spent_over_the_api == "INVALID_CREDENTIALS"
    assert first.status_code == 200
    assert "correct email" in first.content.decode()
    assert refused.status_code == 200  # the form again, with the reason
    assert "Too many attempts. Try again in" in refused.content.decode()
    assert "_auth_user_id" not in refused.wsgi_request.session


@pytest.mark.e2e
def test_a_budget_spent_in_one_process_holds_in_the_server(live, user):
    """The test process spends the account's default budget; the server refuses next.

    Spent through the throttle itself, at once: ten wrong passwords hashed one by one on a
    loaded machine took long enough for the budget (5 a minute) to give one back."""
    outcomes = [
        _outcome(
            lambda: throttle_attempt(action=ThrottledAction.LOGIN, account=user.email, address=None)
        )
        for _ in range(40)
    ]
    assert "RATE_LIMITED" in outcomes

    answer = GraphQLClient(live.server.graphql_url).data(
        TOKEN_CREATE, {"email": user.email, "password": PASSWORD}
    )["tokenCreate"]

    assert answer["token"] is None
    assert answer["errors"][0]["code"] == "RATE_LIMITED"
