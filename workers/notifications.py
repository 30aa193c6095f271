"""Celery tasks for notifications: transactional email, and the channel fan-out."""

import logging
from typing import Any

from billiard.exceptions import SoftTimeLimitExceeded
from celery import chord, shared_task
from celery.utils.time import get_exponential_backoff_interval
from django.conf import settings

from domains.integrations.client import RetryLater
from domains.notifications import emails, services
from domains.notifications.models import EmailStatus, Notification
from workers.base import JobTask
from workers.chords import hand_over, job_fail, job_succeed

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


@shared_task(bind=True, base=JobTask, name="notifications.fan_out")
def fan_out(self: JobTask, *, job_id: int, notification_id: int) -> None:
    """Send every channel in parallel; the chord's body gathers the results into the job."""
    notification = (
        Notification.objects.select_related("recipient").filter(pk=notification_id).first()
    )
    if notification is None:
        logger.warning("notification.vanished", extra={"notification_id": notification_id})
        return None
    to_send, settled = services.notification_fan_out_start(notification=notification)
    self.reporter.progress(stage="sending", current=len(settled), force=True)
    body = gather_results.s(
        notification_id=notification_id, job_id=job_id, settled=settled
    ).on_error(fan_out_failed.s(job_id=job_id))
    hand_over(chord([deliver.s(delivery_id=pk) for pk in to_send], body))


@shared_task(
    bind=True,
    name="notifications.deliver",
    acks_late=True,
    max_retries=settings.NOTIFICATION_MAX_ATTEMPTS - 1,
    soft_time_limit=settings.NOTIFICATION_SOFT_TIME_LIMIT,
    time_limit=settings.NOTIFICATION_SOFT_TIME_LIMIT + 30,
)
def deliver(self, *, delivery_id: int) -> dict[str, str]:
    """One channel; what cannot be sent is a result ("failed"), so the others still gather."""
    try:
        return services.delivery_send(delivery_id=delivery_id)
    except RetryLater as error:
        if self.request.retries >= self.max_retries:
            return services.delivery_fail(delivery_id=delivery_id, error=str(error))
        # Backoff with full jitter, but never sooner than the provider asked.
        backoff = get_exponential_backoff_interval(
            factor=settings.NOTIFICATION_RETRY_BACKOFF,
            retries=self.request.retries,
            maximum=15 * 60,
            full_jitter=True,
        )
        raise self.retry(exc=error, countdown=max(error.retry_after, backoff)) from None
    except SoftTimeLimitExceeded:
        # The provider may or may not have taken it, so it is not sent again; and it is a
        # result like any other, or the chord fails and the delivery stays "sending".
        return services.delivery_fail(
            delivery_id=delivery_id, error="The provider did not answer within the time limit."
        )


@shared_task(name="notifications.gather_results", acks_late=True)
def gather_results(
    results: list[dict], *, notification_id: int, job_id: int, settled: dict[str, str]
) -> dict[str, str]:
    notification = Notification.objects.get(pk=notification_id)
    gathered = services.notification_results_record(
        notification=notification, results=results, settled=settled
    )
    job_succeed(job_id, gathered)
    return gathered


@shared_task(name="notifications.fan_out_failed")
def fan_out_failed(request, exc, traceback, *, job_id: int) -> None:
    job_fail(job_id, exc)
