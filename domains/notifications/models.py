from django.conf import settings
from django.db import models

from domains.jobs.models import JobBacked, JobKind, job_ends


class EmailStatus(models.TextChoices):
    QUEUED = "queued"
    SENDING = "sending"  # claimed by one run; others leave it alone
    SENT = "sent"
    SKIPPED = "skipped"  # nothing to send (the user was already welcomed)
    FAILED = "failed"
    CANCELLED = "cancelled"


class OutgoingEmail(JobBacked):
    """One transactional email: rendered from a template when its task runs."""

    job_kind = JobKind.EMAIL
    # Sent (or skipped) by its own send; one not on its way ends with its job.
    job_end_statuses = job_ends(
        completed=None, failed=EmailStatus.FAILED, cancelled=EmailStatus.CANCELLED
    )
    job_open_statuses = (EmailStatus.QUEUED,)

    recipient = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="outgoing_emails",
    )
    to_address = models.EmailField()
    template = models.CharField(max_length=64)
    context = models.JSONField(default=dict, blank=True)
    status = models.CharField(
        max_length=16, choices=EmailStatus.choices, default=EmailStatus.QUEUED
    )
    claimed_at = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ("-created_at", "-id")

    def __str__(self) -> str:
        return f"{self.template} to {self.to_address} ({self.status})"


class Channel(models.TextChoices):
    EMAIL = "EMAIL"
    SMS = "SMS"
    PUSH = "PUSH"


class Notification(JobBacked):
    """A message to one user over the channels asked for, sent in parallel."""

    # No status of its own: its channels' deliveries have theirs (its handler ends them).
    job_kind = JobKind.NOTIFICATION

    recipient = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications"
    )
    sent_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    notification_type = models.CharField(max_length=64)
    data = models.JSONField(default=dict, blank=True)
    channels = models.JSONField(default=list)
    # Set once, by one conditional UPDATE, when the fan-out is launched.
    dispatched_at = models.DateTimeField(null=True, blank=True)
    results = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ("-created_at", "-id")

    def __str__(self) -> str:
        return f"{self.notification_type} to {self.recipient_id}"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    DISABLED = "disabled"  # the user turned this channel off
    NO_TOKEN = "no_token"  # push asked for, but the user has no device token
    NO_ADDRESS = "no_address"  # SMS asked for, but the user has no phone number
    FAILED = "failed"
    CANCELLED = "cancelled"


class NotificationDelivery(models.Model):
    """One channel of a notification; its status is the channel's result."""

    notification = models.ForeignKey(
        Notification, on_delete=models.CASCADE, related_name="deliveries"
    )
    channel = models.CharField(max_length=8, choices=Channel.choices)
    status = models.CharField(
        max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    # When the run sending it took it (domains.infra.claims): a claim past its expiry has lapsed.
    claimed_at = models.DateTimeField(null=True, blank=True)
    provider_message_id = models.CharField(max_length=128, blank=True)
    error_message = models.TextField(blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("id",)
        constraints = [
            models.UniqueConstraint(
                fields=("notification", "channel"), name="one_delivery_per_channel"
            )
        ]

    def __str__(self) -> str:
        return f"{self.channel} {self.status}"
