"""Access that ends while a connection is open: a token revoked, a user deactivated, a
session signed out or its password changed.

A websocket authenticates once, at connection_init, and then lives for hours; so every
change that can end a user's access is published on the user's access channel (through
Redis, so every server process hears it), and each open socket of that user checks its
credentials again at once (config/websocket.py). The message is only a signal: the check
reads the database, so a signal lost or coalesced costs nothing but the periodic re-check.
"""

import json
import logging
from importlib import import_module

from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY, user_logged_out
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.utils import timezone
from django.utils.crypto import constant_time_compare

from domains.accounts.models import ApiToken, User
from domains.infra.redis import channel_name, progress_client, progress_publish

logger = logging.getLogger(__name__)


def access_channel(user_id: int) -> str:
    return channel_name(f"access:user:{user_id}")


def access_changed(*, user_id: int) -> None:
    """Tell every open connection of the user to check its credentials, once committed."""

    def publish() -> None:
        progress_publish(
            progress_client(), access_channel(user_id), json.dumps({"user_id": user_id})
        )
        logger.info("access.changed", extra={"user_id": user_id})

    transaction.on_commit(publish)


def access_refusal(
    *, user_id: int, token_id: int | None, session_key: str | None = None
) -> str | None:
    """Why a connection authenticated as the user (by the token, else by the session) may
    no longer act; None while it still may."""
    if not User.objects.filter(pk=user_id, is_active=True).exists():
        return "Account deactivated"
    if token_id is None:
        return _session_refusal(user_id, session_key) if session_key is not None else None
    token = ApiToken.objects.select_related("user").filter(pk=token_id, user_id=user_id).first()
    if token is None or token.revoked_at is not None:
        return "Token revoked"
    if token.expires_at <= timezone.now():
        return "Token expired"
    if token.job_id is not None and not password_mark_holds(token.user, token.owner_password_mark):
        return "Password changed"
    return None


def password_mark(user: User) -> str:
    """What a job token keeps of its owner's password: the session auth hash (an HMAC of
    the password hash), so that a password change ends the token as it ends sessions."""
    return user.get_session_auth_hash()


def password_mark_holds(user: User, mark: str) -> bool:
    """Whether `mark` was made from the user's current password (under the current secret
    or a fallback one, as sessions are checked)."""
    marks = [user.get_session_auth_hash(), *user.get_session_auth_fallback_hash()]
    return any(constant_time_compare(mark, current) for current in marks)


def _session_refusal(user_id: int, session_key: str) -> str | None:
    """A session holds as Django's next request would hold it: still stored, still the
    user's, and signed with the user's current password (or a fallback secret's hash).
    Read only: the request that next presents the session is the one that flushes it."""
    session = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    if not session.exists(session_key) or str(session.get(SESSION_KEY)) != str(user_id):
        return "Signed out"
    user = User.objects.filter(pk=user_id).first()
    if user is None:  # deleted since the check above
        return "Account deactivated"
    if not password_mark_holds(user, session.get(HASH_SESSION_KEY) or ""):
        return "Password changed"
    return None


def _user_saved(sender, instance: User, created: bool, update_fields=None, **kwargs) -> None:
    # A deactivation or a password change (a save that may carry either; last_login's
    # own save at each sign-in does not; a new user has no connection yet).
    if created:
        return
    if update_fields is None or {"is_active", "password"} & set(update_fields):
        access_changed(user_id=instance.pk)


def _signed_out(sender, request, user, **kwargs) -> None:
    if user is None:
        return
    # logout() signals before it flushes the session: flush it first, so that the streams
    # this wakes find it gone (logout's own flush then has nothing left to do).
    if request is not None:
        request.session.flush()
    access_changed(user_id=user.pk)


def _token_saved(sender, instance: ApiToken, **kwargs) -> None:
    if instance.revoked_at is not None:
        access_changed(user_id=instance.user_id)


def _user_deleted(sender, instance: User, **kwargs) -> None:
    access_changed(user_id=instance.pk)


def _token_deleted(sender, instance: ApiToken, **kwargs) -> None:
    access_changed(user_id=instance.user_id)


def connect_access_signals() -> None:
    """Saves and deletes from anywhere (the admin included) end access like the services do."""
    post_save.connect(_user_saved, sender=User, dispatch_uid="access.user_saved")
    post_save.connect(_token_saved, sender=ApiToken, dispatch_uid="access.token_saved")
    post_delete.connect(_user_deleted, sender=User, dispatch_uid="access.user_deleted")
    post_delete.connect(_token_deleted, sender=ApiToken, dispatch_uid="access.token_deleted")
    user_logged_out.connect(_signed_out, dispatch_uid="access.signed_out")
