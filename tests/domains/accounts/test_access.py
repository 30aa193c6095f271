"""access_refusal: whether a connection's credentials still hold, decided from the database
alone (no request), as each open stream re-checks them."""

import pytest
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore
from django.test import override_settings

from domains.accounts.access import access_refusal
from testbed.factories import make_user

pytestmark = pytest.mark.django_db


def _signed_in(user) -> str:
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.save()
    return session.session_key


def test_a_session_holds_until_it_is_signed_out():
    user = make_user()
    key = _signed_in(user)

    holding = access_refusal(user_id=user.pk, token_id=None, session_key=key)
    SessionStore(key).delete()

    assert holding is None
    assert access_refusal(user_id=user.pk, token_id=None, session_key=key) == "Signed out"


def test_a_password_change_ends_the_session_and_the_check_leaves_it_stored():
    user = make_user()
    key = _signed_in(user)

    user.set_password("a-new-and-long-passphrase")
    user.save()

    assert access_refusal(user_id=user.pk, token_id=None, session_key=key) == "Password changed"
    assert SessionStore().exists(key)  # read only: every stream of it gets the same answer


def test_another_users_session_is_not_this_users():
    user, other = make_user(), make_user()

    refusal = access_refusal(user_id=user.pk, token_id=None, session_key=_signed_in(other))

    assert refusal == "Signed out"


def test_a_session_signed_with_a_rotated_secret_still_holds():
    user = make_user()
    with override_settings(SECRET_KEY="the-old-secret-" + "x" * 40):
        key = _signed_in(user)

    with override_settings(
        SECRET_KEY="the-new-secret-" + "y" * 40, SECRET_KEY_FALLBACKS=["the-old-secret-" + "x" * 40]
    ):
        assert access_refusal(user_id=user.pk, token_id=None, session_key=key) is None
