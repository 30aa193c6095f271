"""An SMTP server on loopback for the whole run, and the environment that points every
process started afterwards (the stack's worker included) at it."""

import os

import pytest

from config.embedded_redis import free_port
from tests.domains.notifications.smtp import SmtpServer

_smtp: SmtpServer | None = None
# A delivery's claim lapses after this many seconds in the stack's worker (past the 3 s
# soft limit below, so a run that is still sending has recorded its outcome by then).
CLAIM_SECONDS = 5


def pytest_configure(config) -> None:
    """Runs at collection, before any stack process starts, so those processes inherit it."""
    global _smtp
    port = free_port()
    _smtp = SmtpServer(port)
    _smtp.start()
    os.environ.update(
        EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
        EMAIL_HOST="127.0.0.1",
        EMAIL_PORT=str(port),
        EMAIL_RETRY_BACKOFF="1",  # seconds: backoff 0-1 s, then 0-2 s (full jitter)
        EMAIL_RETRY_BACKOFF_MAX="4",
        NOTIFICATION_RETRY_BACKOFF="1",
        EMAIL_SOFT_TIME_LIMIT="3",  # so that a hung SMTP server is a short test
        NOTIFICATION_SOFT_TIME_LIMIT="3",  # the same, for a notification's email channel
        NOTIFICATION_CLAIM_SECONDS=str(CLAIM_SECONDS),
    )


def pytest_unconfigure(config) -> None:
    if _smtp is not None:
        _smtp.stop()


@pytest.fixture
def smtp(settings):
    """The loopback SMTP server, emptied; this process's Django sends to it too."""
    assert _smtp is not None
    _smtp.handler.reset()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = _smtp.controller.port
    yield _smtp.handler
    _smtp.handler.reset()
