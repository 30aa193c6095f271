"""Channel providers: how a notification reaches a user by email, SMS or push.

Each provider names the user's address on its channel (no address: nothing to send) and
sends one message, raising RetryLater for what may work later and RequestRejected for
what never will. SMS and push are HTTP providers behind the resilient client; which class
serves a channel is a setting (NOTIFICATION_PROVIDERS), so a real provider is a new class.
"""

from functools import cache
from typing import Any, Protocol

from django.conf import settings
from django.core.mail import make_msgid
from django.utils.module_loading import import_string

from domains.accounts.models import User
from domains.integrations.client import Breaker, RateLimit, ResilientClient, RetryLater
from domains.notifications.emails import TRANSIENT_EMAIL_ERRORS, email_message
from domains.notifications.models import Channel, Notification


class Provider(Protocol):
    def address(self, user: User) -> str:
        """Where the user is reached on this channel; empty when they cannot be."""

    def send(self, *, user: User, notification: Notification) -> str:
        """Send one message; returns the provider's id for it."""


def _text(notification: Notification) -> dict[str, Any]:
    data = notification.data or {}
    return {
        "title": str(data.get("title") or notification.notification_type),
        "body": str(data.get("body") or data.get("title") or notification.notification_type),
    }


class EmailProvider:
    def address(self, user: User) -> str:
        return user.email

    def send(self, *, user: User, notification: Notification) -> str:
        message = email_message(
            template="notification",
            to_address=user.email,
            context={"notification_type": notification.notification_type, **_text(notification)},
        )
        message.extra_headers["Message-ID"] = make_msgid()
        try:
            message.send()
        except TRANSIENT_EMAIL_ERRORS as error:
            # No server-given wait: the task's own backoff decides when to try again.
            raise RetryLater("email", repr(error), retry_after=0) from error
        return message.extra_headers["Message-ID"]


class HttpProvider:
    """A provider behind an HTTP API, through the resilient client (rate limit and breaker
    shared by every worker process)."""

    service: str
    per_minute: int

    def __init__(self, *, base_url: str, api_key: str):
        self.client = ResilientClient(
            service=self.service,
            base_url=base_url,
            api_key=api_key,
            rate_limit=RateLimit(per_minute=self.per_minute, burst=max(1, self.per_minute // 30)),
            breaker=Breaker(failure_threshold=5, reset_timeout=30),
        )


class HttpSmsProvider(HttpProvider):
    service = "sms"
    per_minute = 600

    def __init__(self):
        super().__init__(base_url=settings.SMS_BASE_URL, api_key=settings.SMS_API_KEY)

    def address(self, user: User) -> str:
        return user.phone

    def send(self, *, user: User, notification: Notification) -> str:
        answer = self.client.post(
            "/sms", json={"to": user.phone, "body": _text(notification)["body"]}
        )
        return str(answer.get("id", ""))


class HttpPushProvider(HttpProvider):
    service = "push"
    per_minute = 1_200

    def __init__(self):
        super().__init__(base_url=settings.PUSH_BASE_URL, api_key=settings.PUSH_API_KEY)

    def address(self, user: User) -> str:
        return user.push_token

    def send(self, *, user: User, notification: Notification) -> str:
        answer = self.client.post(
            "/push",
            json={"token": user.push_token, **_text(notification), "data": notification.data},
        )
        return str(answer.get("id", ""))


@cache
def provider(channel: Channel | str) -> Provider:
    return import_string(settings.NOTIFICATION_PROVIDERS[str(channel)])()
