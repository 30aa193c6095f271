"""Celery tasks for notifications: transactional email, and the channel fan-out."""

import logging
from typing import Any

from celery import shared_task
from django.conf import settings

from domains.notifications import emails
from domains.notifications.models import EmailStatus
from workers.base import JobTask

logger = logging.getLogger(__name__)


class EmailTask(JobTask):
    abstract = True

    def on_failure(self, exc, task_id, args, kwargs, einfo) -> None:
        emails.email_fail(email_id=kwargs["email_id"], error=repr(exc))
        super().on_failure(exc, task_id, args, kwargs, einfo)


@shared_task(
    bind=True,
    base=EmailTask,
    name="notifications.send_email",
    autoretry_for=emails.TRANSIENT_EMAIL_ERRORS,
    max_retries=settings.EMAIL_MAX_ATTEMPTS - 1,
    retry_backoff=settings.EMAIL_RETRY_BACKOFF,
    retry_backoff_max=settings.EMAIL_RETRY_BACKOFF_MAX,
    retry_jitter=True,
    soft_time_limit=settings.EMAIL_SOFT_TIME_LIMIT,
    time_limit=settings.EMAIL_TIME_LIMIT,
)
def send_email(self: JobTask, *, job_id: int, email_id: int) -> dict[str, Any]:
    try:
        status = emails.email_send(email_id=email_id)
    except emails.EmailBusy as busy:
        # Another run is sending it; come back when its claim could have lapsed.
        raise self.retry(exc=busy, countdown=busy.retry_after) from None
    if status == EmailStatus.FAILED:
        logger.warning("email.gave_up_earlier", extra={"email_id": email_id, "job_id": job_id})
    return {"emailId": email_id, "status": str(status)}
