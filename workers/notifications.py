"""Celery tasks for notifications: transactional email, and the channel fan-out."""

import logging
from typing import Any

from billiard.exceptions import SoftTimeLimitExceeded
from celery import shared_task
from django.conf import settings

from domains.integrations.client import RetryLater
from domains.jobs.tasks import JobTaskName
from domains.notifications import emails, services
from domains.notifications.models import (
    EmailStatus,
    Notification,
    NotificationDelivery,
    OutgoingEmail,
)
from workers.base import JobPartTask, JobTask, record_load
from workers.chords import job_finish, start_chord

logger = logging.getLogger(__name__)


@shared_task(
    bind=True,
    base=JobTask,
    name=JobTaskName.NOTIFICATIONS_SEND_EMAIL,
    max_retries=settings.EMAIL_MAX_RETRIES,
    retry_backoff=settings.EMAIL_RETRY_BACKOFF,
    retry_backoff_max=settings.EMAIL_RETRY_BACKOFF_MAX,
    soft_time_limit=settings.EMAIL_SOFT_TIME_LIMIT,
    time_limit=settings.EMAIL_TIME_LIMIT,
)
def send_email(self: JobTask, *, job_id: int, email_id: int) -> dict[str, Any]:
    """An SMTP error, or another run holding the email's claim (EmailBusy), comes back as
    RetryLater: the kit reschedules it, within EMAIL_MAX_RETRIES."""
    record_load(OutgoingEmail, email_id, "email")
    status = emails.email_send(email_id=email_id)
    if status == EmailStatus.FAILED:
        logger.warning("email.gave_up_earlier", extra={"email_id": email_id, "job_id": job_id})
    return {"emailId": email_id, "status": str(status)}


@shared_task(bind=True, base=JobTask, name=JobTaskName.NOTIFICATIONS_FAN_OUT)
def fan_out(self: JobTask, *, job_id: int, notification_id: int) -> None:
    """Send every channel in parallel; the chord's body gathers the results into the job."""
    notification = record_load(Notification, notification_id, "notification", related=["recipient"])
    to_send, settled = services.notification_fan_out_start(notification=notification)
    self.reporter.progress(stage="sending", current=len(settled), force=True)
    start_chord(
        job_id=job_id,
        parts=[deliver.s(job_id=job_id, delivery_id=pk) for pk in to_send],
        body=gather_results.s(notification_id=notification_id, job_id=job_id, settled=settled),
    )


class ChannelPart(JobPartTask):
    """One channel of a notification: what cannot be sent is a result ("failed"), so the
    other channels still gather; a provider still busy past the budget is such a result."""

    abstract = True

    def retries_spent(self, busy: RetryLater) -> dict[str, str]:
        return services.delivery_fail(
            delivery_id=self.request.kwargs["delivery_id"], error=str(busy)
        )


@shared_task(
    bind=True,
    base=ChannelPart,
    name="notifications.deliver",
    max_retries=settings.NOTIFICATION_MAX_RETRIES,
    retry_backoff=settings.NOTIFICATION_RETRY_BACKOFF,
    soft_time_limit=settings.NOTIFICATION_SOFT_TIME_LIMIT,
    time_limit=settings.TASK_TIME_LIMITS["notifications"],
)
def deliver(self: ChannelPart, *, job_id: int, delivery_id: int) -> dict[str, str]:
    """A RetryLater from the provider is rescheduled by the kit's policy."""
    record_load(NotificationDelivery, delivery_id, "notification delivery")
    try:
        return services.delivery_send(delivery_id=delivery_id)
    except SoftTimeLimitExceeded:
        # The provider may or may not have taken it, so it is not sent again; and it is a
        # result like any other, or the chord fails and the delivery stays "sending".
        return services.delivery_fail(
            delivery_id=delivery_id, error="The provider did not answer within the time limit."
        )


@shared_task(bind=True, base=JobPartTask, name="notifications.gather_results")
def gather_results(
    self: JobPartTask,
    results: list[dict],
    *,
    notification_id: int,
    job_id: int,
    settled: dict[str, str],
) -> dict[str, str]:
    notification = record_load(Notification, notification_id, "notification")
    gathered = services.notification_results_record(
        notification=notification, results=results, settled=settled
    )
    job_finish(job_id, gathered)
    return gathered
