"""Accounts: registration, sign-in and API tokens."""

import hashlib
import secrets
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING

from django.conf import settings
from django.contrib.auth import authenticate
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from domains.accounts.access import access_changed, password_mark, password_mark_holds
from domains.accounts.errors import AccountError, AccountErrorCode
from domains.accounts.models import ApiToken, User
from domains.accounts.throttle import ThrottledAction, throttle_attempt
from domains.accounts.viewers import JobTokenViewer
from domains.errors import CommonErrorCode

if TYPE_CHECKING:
    from domains.jobs.models import Job

TOKEN_PREFIX = "jst_"
# A job token is handed to a browser or a phone: short-lived by default, a day at most.
JOB_ACCESS_TOKEN_DEFAULT_SECONDS = 900
JOB_ACCESS_TOKEN_MAX_SECONDS = 24 * 3600


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# What registration takes, by model field and by the input's name for it.
REGISTRATION_FIELDS = {
    "email": "email",
    "first_name": "firstName",
    "last_name": "lastName",
    "phone": "phone",
}


def _check_fields(user: User, fields: Mapping[str, str]) -> None:
    """The model's own limits (lengths, formats) on `fields`, checked here because
    SQLite enforces no varchar length; the first field that breaks one is named."""
    others = [f.name for f in User._meta.fields if f.name not in fields]
    try:
        user.clean_fields(exclude=others)
    except ValidationError as error:
        name = next(name for name in fields if name in error.error_dict)
        raise AccountError(
            error.error_dict[name][0].messages[0], code=CommonErrorCode.INVALID, field=fields[name]
        ) from error


def user_register(
    *,
    email: str,
    password: str,
    first_name: str = "",
    last_name: str = "",
    phone: str = "",
    client_address: str | None = None,
) -> User:
    email = email.strip().lower()
    throttle_attempt(action=ThrottledAction.REGISTER, account=email, address=client_address)
    candidate = User(email=email, first_name=first_name, last_name=last_name, phone=phone)
    _check_fields(candidate, REGISTRATION_FIELDS)
    try:
        validate_password(password, user=candidate)
    except ValidationError as error:
        raise AccountError(
            " ".join(error.messages), code=AccountErrorCode.PASSWORD_TOO_WEAK, field="password"
        ) from error
    try:
        with transaction.atomic(durable=True):
            user = User.objects.create_user(
                email, password, first_name=first_name, last_name=last_name, phone=phone
            )
            for hook in REGISTRATION_HOOKS:
                hook(user)
    except IntegrityError as error:
        raise AccountError(
            "A user with this email already exists.",
            code=AccountErrorCode.EMAIL_TAKEN,
            field="email",
        ) from error
    return user


# Callables run inside the registration transaction (the welcome email is queued here).
REGISTRATION_HOOKS: list = []


def user_authenticate(*, email: str, password: str, client_address: str | None = None) -> User:
    """The active user these credentials belong to (a token's or a session's sign-in).

    Attempts are throttled per account and per client address (RateLimited)."""
    email = email.strip().lower()
    throttle_attempt(action=ThrottledAction.LOGIN, account=email, address=client_address)
    user = authenticate(username=email, password=password)
    if user is None:
        raise AccountError(
            "Incorrect email or password.",
            code=AccountErrorCode.INVALID_CREDENTIALS,
            field="password",
        )
    return user


def token_create(
    *, email: str, password: str, client_address: str | None = None
) -> tuple[str, ApiToken]:
    """Check the credentials and issue a token; returns the token (shown once) and its row."""
    user = user_authenticate(email=email, password=password, client_address=client_address)
    return _issue(user=user, lifetime=settings.API_TOKEN_TTL)


def _issue(*, user: User, lifetime: timedelta, job: "Job | None" = None) -> tuple[str, ApiToken]:
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken.objects.create(
        user=user,
        key_hash=_hash_token(token),
        prefix=token[:12],
        expires_at=timezone.now() + lifetime,
        job=job,
        owner_password_mark=password_mark(user) if job is not None else "",
    )
    return token, row


def job_access_token_create(
    *, job: "Job", viewer: User, expires_in_seconds: int = JOB_ACCESS_TOKEN_DEFAULT_SECONDS
) -> tuple[str, ApiToken]:
    """A token that reads `job` (one the viewer may read: the caller selected it through
    the viewer's jobs) and nothing else, for `expires_in_seconds` (a day at most). It is the
    viewer's: it ends with their access (deactivation, a password change) or tokenRevoke."""
    if not 1 <= expires_in_seconds <= JOB_ACCESS_TOKEN_MAX_SECONDS:
        raise AccountError(
            f"expiresInSeconds must be between 1 and {JOB_ACCESS_TOKEN_MAX_SECONDS} (24 hours).",
            code=AccountErrorCode.INVALID_EXPIRY,
            field="expiresInSeconds",
        )
    return _issue(user=viewer, lifetime=timedelta(seconds=expires_in_seconds), job=job)


def token_revoke(*, token: str, viewer: User) -> None:
    """Revoke one of the viewer's tokens (staff may revoke any)."""
    tokens = ApiToken.objects.filter(key_hash=_hash_token(token), revoked_at__isnull=True)
    if not viewer.is_staff:
        tokens = tokens.filter(user=viewer)
    owner_id = tokens.values_list("user_id", flat=True).first()
    if owner_id is None or not tokens.update(revoked_at=timezone.now()):
        raise AccountError(
            "No such active token.", code=AccountErrorCode.TOKEN_NOT_FOUND, field="token"
        )
    access_changed(user_id=owner_id)  # its open websockets close


def token_authenticate(token: str) -> ApiToken | None:
    """The active token row (with its active user) a bearer token stands for, or None (a
    job token also once its owner's password changed); records the token's last use."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    now = timezone.now()
    row = (
        ApiToken.objects.select_related("user")
        .filter(key_hash=_hash_token(token), revoked_at__isnull=True, expires_at__gt=now)
        .first()
    )
    if row is None or not row.user.is_active:
        return None
    if row.job_id is not None and not password_mark_holds(row.user, row.owner_password_mark):
        return None
    # At most once per resolution: the row just read says whether this use is news, so a
    # busy client's requests write nothing (a write is a lock on SQLite, a round trip on
    # PostgreSQL, before every mutation's own work). Conditional as well, for two at once.
    stale = now - settings.API_TOKEN_LAST_USED_RESOLUTION
    if row.last_used_at is None or row.last_used_at <= stale:
        ApiToken.objects.filter(pk=row.pk).exclude(last_used_at__gt=stale).update(last_used_at=now)
    return row


def token_viewer(row: ApiToken) -> User | JobTokenViewer:
    """Who a request that presents the token acts as: its user, or for a job token a viewer
    that reads that job only (domains/accounts/viewers.py)."""
    if row.job_id is None:
        return row.user
    return JobTokenViewer(
        owner_id=row.user_id, job_id=row.job_id, token_id=row.pk, expires_at=row.expires_at
    )


def user_for_token(token: str) -> User | JobTokenViewer | None:
    """The viewer a bearer token stands for (token_viewer), or None."""
    row = token_authenticate(token)
    return token_viewer(row) if row else None
