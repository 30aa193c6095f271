"""Browsers are CSRF-checked; token and cookie-less API clients are not."""

import json

import pytest
from django.test import Client

from testbed.factories import PASSWORD, make_token, make_user

pytestmark = pytest.mark.django_db

ME = json.dumps({"query": "{ me { email } }"})


def test_a_cookie_session_post_without_a_csrf_token_is_refused_with_a_graphql_error():
    user = make_user()
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(user)

    response = browser.post("/graphql/", ME, content_type="application/json")

    assert response.status_code == 403
    assert response["Content-Type"] == "application/json"
    (error,) = response.json()["errors"]
    assert error["extensions"] == {"code": "CSRF_FAILED"}
    assert "X-CSRFToken" in error["message"]
    assert "Bearer" in error["message"]


def test_a_csrf_failure_elsewhere_keeps_djangos_page():
    browser = Client(enforce_csrf_checks=True)
    browser.get("/admin/login/")

    response = browser.post("/admin/login/", {"username": "a", "password": "b"})

    assert response.status_code == 403
    assert response["Content-Type"].startswith("text/html")


def test_a_cookie_session_post_with_the_csrf_token_is_served():
    user = make_user()
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(user)
    browser.get("/graphql/", HTTP_ACCEPT="text/html")
    token = browser.cookies["csrftoken"].value

    response = browser.post(
        "/graphql/", ME, content_type="application/json", HTTP_X_CSRFTOKEN=token
    )

    assert response.json()["data"]["me"]["email"] == user.email


def test_a_bearer_token_needs_no_csrf_token():
    user = make_user()
    api = Client(enforce_csrf_checks=True)

    response = api.post(
        "/graphql/",
        ME,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {make_token(user)}",
    )

    assert response.json()["data"]["me"]["email"] == user.email


def test_a_revoked_token_is_refused_with_401():
    user = make_user()
    token = make_token(user)
    api = Client()
    revoke = json.dumps(
        {"query": f'mutation {{ tokenRevoke(token: "{token}") {{ revoked errors {{ code }} }} }}'}
    )
    assert api.post(
        "/graphql/", revoke, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}"
    ).json()["data"]["tokenRevoke"]["revoked"]

    response = api.post(
        "/graphql/", ME, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}"
    )

    assert response.status_code == 401
    assert response.json()["errors"][0]["extensions"]["code"] == "INVALID_TOKEN"
    assert "tokenCreate" in response.json()["errors"][0]["message"]


@pytest.mark.parametrize(
    "header", ["Bearer jst_not-a-token", "Bearer abc", "jst_no-scheme", "Basic dXNlcjpwYXNz"]
)
def test_an_invalid_or_unprefixed_token_is_refused_with_401(header):
    response = Client().post(
        "/graphql/", ME, content_type="application/json", HTTP_AUTHORIZATION=header
    )

    assert response.status_code == 401
    assert response.json()["errors"][0]["extensions"]["code"] == "INVALID_TOKEN"
    assert "Bearer" in response["WWW-Authenticate"]


def test_token_create_from_a_browser_page_signs_the_session_in():
    user = make_user()
    browser = Client(enforce_csrf_checks=True)
    browser.get("/graphql/", HTTP_ACCEPT="text/html")
    csrf = browser.cookies["csrftoken"].value
    login = json.dumps(
        {
            "query": f'mutation {{ tokenCreate(email: "{user.email}", password: "{PASSWORD}") {{ token }} }}'
        }
    )

    browser.post("/graphql/", login, content_type="application/json", HTTP_X_CSRFTOKEN=csrf)
    # Signing in rotates the CSRF token (Django's login()); the page reads the new cookie.
    csrf = browser.cookies["csrftoken"].value
    response = browser.post("/graphql/", ME, content_type="application/json", HTTP_X_CSRFTOKEN=csrf)

    assert response.json()["data"]["me"]["email"] == user.email


def test_the_token_read_before_signing_in_is_refused_after_it_with_a_code():
    """What GraphiQL did when it read the CSRF cookie once at load (tests/e2e/test_graphiql.py
    drives the page itself)."""
    user = make_user()
    browser = Client(enforce_csrf_checks=True)
    browser.get("/graphql/", HTTP_ACCEPT="text/html")
    csrf_at_load = browser.cookies["csrftoken"].value
    login = json.dumps(
        {
            "query": f'mutation {{ tokenCreate(email: "{user.email}", password: "{PASSWORD}") {{ token }} }}'
        }
    )
    browser.post("/graphql/", login, content_type="application/json", HTTP_X_CSRFTOKEN=csrf_at_load)

    response = browser.post(
        "/graphql/", ME, content_type="application/json", HTTP_X_CSRFTOKEN=csrf_at_load
    )

    assert response.status_code == 403
    assert response.json()["errors"][0]["extensions"]["code"] == "CSRF_FAILED"


def test_wrong_credentials_are_a_user_error():
    user = make_user()
    login = json.dumps(
        {
            "query": f'mutation {{ tokenCreate(email: "{user.email}", password: "nope") {{ token errors {{ field code }} }} }}'
        }
    )

    payload = (
        Client()
        .post("/graphql/", login, content_type="application/json")
        .json()["data"]["tokenCreate"]
    )

    assert payload == {
        "token": None,
        "errors": [{"field": "password", "code": "INVALID_CREDENTIALS"}],
    }
