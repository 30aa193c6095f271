"""Access that ends while a connection is open: a token revoked, a user deactivated.

A websocket authenticates once, at connection_init, and then lives for hours; so every
change that can end a user's access is published on the user's access channel (through
Redis, so every server process hears it), and each open socket of that user checks its
credentials again at once (config/websocket.py). The message is only a signal: the check
reads the database, so a signal lost or coalesced costs nothing but the periodic re-check.
"""

import json
import logging

from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.utils import timezone

from domains.accounts.models import ApiToken, User
from domains.redis import progress_client, progress_publish

logger = logging.getLogger(__name__)


def access_channel(user_id: int) -> str:
    return f"access:user:{user_id}"


def access_changed(*, user_id: int) -> None:
    """Tell every open connection of the user to check its credentials, once committed."""

    def publish() -> None:
        progress_publish(
            progress_client(), access_channel(user_id), json.dumps({"user_id": user_id})
        )
        logger.info("access.changed", extra={"user_id": user_id})

    transaction.on_commit(publish)


def access_refusal(*, user_id: int, token_id: int | None) -> str | None:
    """Why a connection authenticated as the user (by the token, or a session when None)
    may no longer act; None while it still may."""
    if not User.objects.filter(pk=user_id, is_active=True).exists():
        return "Account deactivated"
    if token_id is None:
        return None
    token = ApiToken.objects.filter(pk=token_id, user_id=user_id).first()
    if token is None or token.revoked_at is not None:
        return "Token revoked"
    if token.expires_at <= timezone.now():
        return "Token expired"
    return None


def _user_saved(sender, instance: User, **kwargs) -> None:
    if not instance.is_active:
        access_changed(user_id=instance.pk)


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
