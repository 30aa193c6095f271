"""Transactional email: templates with text and HTML parts, one Job per send, sent once.

A send claims its row with one conditional UPDATE (QUEUED -> SENDING), so that of any
number of runs racing on the same email only one talks to the SMTP server; on an SMTP
error it hands the claim back and raises RetryLater, which the worker kit reschedules. The welcome email also claims the user's
`welcome_email_sent_at`, so that a user is welcomed once however many emails were queued.
"""

import logging
import smtplib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db import transaction
from django.template.loader import render_to_string
from django.utils import timezone

from domains.accounts.models import User
from domains.infra.claims import claim_lapses_in, claim_take
from domains.integrations.client import RetryLater
from domains.jobs.models import JobKind
from domains.jobs.services import job_create, job_dispatch, job_point_of_no_return
from domains.jobs.tasks import JobTaskName
from domains.notifications.models import EmailStatus, OutgoingEmail

logger = logging.getLogger(__name__)

WELCOME_TEMPLATE = "welcome"
# What a send retries on: the SMTP server refused or failed, or could not be reached.
TRANSIENT_EMAIL_ERRORS: tuple[type[Exception], ...] = (smtplib.SMTPException, OSError)


class EmailBusy(RetryLater):
    """Another run holds the email's claim; try again once that claim could have expired."""

    def __init__(self, retry_after: float):
        super().__init__(
            "email", f"claimed by another run; retry in {retry_after:.0f}s", retry_after=retry_after
        )


def email_message(
    *, template: str, to_address: str, context: Mapping[str, Any]
) -> EmailMultiAlternatives:
    """The email rendered from `<template>_subject.txt`, `<template>.txt` and `.html`."""
    base = f"notifications/email/{template}"
    subject = " ".join(render_to_string(f"{base}_subject.txt", context).split())
    message = EmailMultiAlternatives(
        subject=subject,
        body=render_to_string(f"{base}.txt", context),
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[to_address],
    )
    message.attach_alternative(render_to_string(f"{base}.html", context), "text/html")
    return message


def email_queue(
    *,
    template: str,
    to_address: str,
    recipient: User | None = None,
    context: Mapping[str, Any] | None = None,
) -> OutgoingEmail:
    """The email's row and its Job; the send task goes once the caller's transaction commits."""
    job = job_create(kind=JobKind.EMAIL, owner=recipient)
    email = OutgoingEmail.objects.create(
        recipient=recipient,
        to_address=to_address,
        template=template,
        context=dict(context or {}),
        job=job,
    )
    job_dispatch(job=job, task_name=JobTaskName.NOTIFICATIONS_SEND_EMAIL, email_id=email.pk)
    return email


def welcome_email_queue(user: User) -> OutgoingEmail:
    """A registration hook: runs inside the registration transaction."""
    return email_queue(
        template=WELCOME_TEMPLATE,
        to_address=user.email,
        recipient=user,
        context={"first_name": user.first_name, "email": user.email},
    )


def _claim(email_id: int, now: datetime) -> bool:
    return claim_take(
        OutgoingEmail.objects.filter(pk=email_id),
        free=EmailStatus.QUEUED,
        held=EmailStatus.SENDING,
        expiry=settings.EMAIL_CLAIM_TIMEOUT,
        now=now,
        error_message="",
    )


def _welcome_claim(user_id: int, now: datetime) -> bool:
    return bool(
        User.objects.filter(pk=user_id, welcome_email_sent_at__isnull=True).update(
            welcome_email_sent_at=now
        )
    )


def _release(email: OutgoingEmail, now: datetime, error: str) -> None:
    """Hand the claims back (only ours: matched by the claim's instant) for the retry."""
    with transaction.atomic():
        OutgoingEmail.objects.filter(
            pk=email.pk, status=EmailStatus.SENDING, claimed_at=now
        ).update(status=EmailStatus.QUEUED, error_message=error[:1000])
        if email.template == WELCOME_TEMPLATE and email.recipient_id:
            User.objects.filter(pk=email.recipient_id, welcome_email_sent_at=now).update(
                welcome_email_sent_at=None
            )


def email_send(*, email_id: int) -> EmailStatus:
    """Send a queued email once; raises RetryLater when the SMTP server failed or could
    not be reached (a TRANSIENT_EMAIL_ERRORS error), and EmailBusy (a RetryLater) when
    another run holds the claim (it may yet fail and hand it back).
    """
    now = timezone.now()
    with transaction.atomic():
        claimed = _claim(email_id, now)
        job_id = OutgoingEmail.objects.filter(pk=email_id).values_list("job_id", flat=True).first()
        if claimed and job_id is not None:
            # A cancel accepted before this stops the send (the claim rolls back with it).
            job_point_of_no_return(job_id=job_id, reason="the email is being sent.")
    if not claimed:
        email = OutgoingEmail.objects.filter(pk=email_id).only("status", "claimed_at").first()
        if email is None or email.status != EmailStatus.SENDING:
            return EmailStatus(email.status) if email else EmailStatus.SKIPPED
        raise EmailBusy(
            retry_after=claim_lapses_in(
                email.claimed_at, expiry=settings.EMAIL_CLAIM_TIMEOUT, now=now
            )
        )
    email = OutgoingEmail.objects.get(pk=email_id)
    welcome = email.template == WELCOME_TEMPLATE and email.recipient_id
    if welcome and not _welcome_claim(email.recipient_id, now):
        OutgoingEmail.objects.filter(pk=email.pk, claimed_at=now).update(status=EmailStatus.SKIPPED)
        logger.info("email.already_welcomed", extra={"email_id": email.pk})
        return EmailStatus.SKIPPED
    message = email_message(
        template=email.template, to_address=email.to_address, context=email.context
    )
    try:
        message.send()
    except BaseException as error:
        # Not sent, whatever stopped it (an SMTP error, the time limit): hand the claim
        # back, so that a retry may send it or the task's failure may mark it failed.
        _release(email, now, repr(error))
        logger.warning("email.send_failed", extra={"email_id": email.pk, "error": repr(error)})
        if isinstance(error, TRANSIENT_EMAIL_ERRORS):
            raise RetryLater("smtp", repr(error), retry_after=0) from error
        raise
    OutgoingEmail.objects.filter(pk=email.pk, claimed_at=now).update(
        status=EmailStatus.SENT, sent_at=timezone.now()
    )
    logger.info("email.sent", extra={"email_id": email.pk, "template": email.template})
    return EmailStatus.SENT
