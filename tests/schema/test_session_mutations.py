"""sessionCreate / sessionEnd: the console's sign-in, on the browser's Django session only
(CSRF-checked), throttled like tokenCreate."""

import json

import pytest
from django.test import Client

from testbed.factories import PASSWORD, make_token

pytestmark = pytest.mark.django_db

SIGN_IN = """
mutation($email: String!, $password: String!) {
  sessionCreate(email: $email, password: $password) { user { email } errors { field code } }
}
"""
SIGN_OUT = "mutation { sessionEnd { ended errors { code } } }"
ME = "{ me { email } }"


def _browser() -> Client:
    """A browser that opened the console: it holds the csrftoken cookie the page set."""
    browser = Client(enforce_csrf_checks=True)
    assert browser.get("/console/").status_code == 200
    return browser


def _post(client: Client, query: str, variables: dict | None = None, **headers) -> dict:
    if "csrftoken" in client.cookies:
        headers.setdefault("HTTP_X_CSRFTOKEN", client.cookies["csrftoken"].value)
    response = client.post(
        "/graphql/",
        json.dumps({"query": query, "variables": variables or {}}),
        content_type="application/json",
        **headers,
    )
    return response.json()


def test_a_browser_signs_in_and_out_of_its_session(user):
    browser = _browser()

    signed_in = _post(browser, SIGN_IN, {"email": user.email.upper(), "password": PASSWORD})
    me_in = _post(browser, ME)["data"]["me"]
    signed_out = _post(browser, SIGN_OUT)
    me_out = _post(browser, ME)["data"]["me"]

    assert signed_in["data"]["sessionCreate"] == {"user": {"email": user.email}, "errors": []}
    assert me_in == {"email": user.email}
    assert signed_out["data"]["sessionEnd"] == {"ended": True, "errors": []}
    assert me_out is None


def test_a_wrong_password_signs_nothing_in(user):
    browser = _browser()

    answer = _post(browser, SIGN_IN, {"email": user.email, "password": "wrong"})

    assert answer["data"]["sessionCreate"] == {
        "user": None,
        "errors": [{"field": "password", "code": "INVALID_CREDENTIALS"}],
    }
    assert _post(browser, ME)["data"]["me"] is None


def test_without_the_csrf_token_the_sign_in_is_refused(user):
    browser = _browser()

    response = browser.post(
        "/graphql/",
        json.dumps({"query": SIGN_IN, "variables": {"email": user.email, "password": PASSWORD}}),
        content_type="application/json",
    )

    assert response.status_code == 403
    assert response.json()["errors"][0]["extensions"]["code"] == "CSRF_FAILED"


@pytest.mark.parametrize("client", ["no cookies", "bearer token"])
def test_a_request_that_is_not_csrf_checked_signs_no_session_in(user, client):
    """Another site could sign a visitor's cookie-less browser into its own account."""
    headers = (
        {"HTTP_AUTHORIZATION": f"Bearer {make_token(user)}"} if client == "bearer token" else {}
    )
    api = Client(enforce_csrf_checks=True)

    answer = _post(api, SIGN_IN, {"email": user.email, "password": PASSWORD}, **headers)

    assert answer["data"]["sessionCreate"]["errors"] == [
        {"field": None, "code": "SESSION_REQUIRES_BROWSER"}
    ]
    assert "sessionid" not in api.cookies


def test_sign_ins_share_the_login_throttle(user, settings):
    settings.THROTTLES = {
        "login": {"account": (0.0001, 2), "address": (0, 0)},
        "register": {"account": (0, 0), "address": (0, 0)},
    }
    browser = _browser()

    codes = [
        [
            e["code"]
            for e in _post(browser, SIGN_IN, {"email": user.email, "password": pw})["data"][
                "sessionCreate"
            ]["errors"]
        ]
        for pw in ("wrong", "wrong", PASSWORD)
    ]

    assert codes == [["INVALID_CREDENTIALS"], ["INVALID_CREDENTIALS"], ["RATE_LIMITED"]]
    assert _post(browser, ME)["data"]["me"] is None
