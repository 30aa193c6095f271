"""Webhooks: the endpoints users register, and one delivery row per endpoint and job end.

The delivery rows are the outbox of the tell-the-world step of a job's end: written in the
job's end transaction, sent after commit, sent again by the sweep when a send was lost, and
every attempt carries the delivery's one `webhook_id`.
"""

import secrets
import uuid

from django.conf import settings
from django.db import models


class WebhookEventType(models.TextChoices):
    JOB_SUCCEEDED = "JOB_SUCCEEDED"
    JOB_FAILED = "JOB_FAILED"
    JOB_CANCELLED = "JOB_CANCELLED"
    JOB_TIMED_OUT = "JOB_TIMED_OUT"


class WebhookDeliveryStatus(models.TextChoices):
    PENDING = "PENDING"
    SENDING = "SENDING"  # claimed by one attempt (the API shows it PENDING)
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


def new_secret() -> str:
    """A Standard Webhooks secret: "whsec_" and 32 random bytes in base64."""
    import base64

    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def new_webhook_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


class WebhookEndpoint(models.Model):
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhook_endpoints"
    )
    url = models.CharField(max_length=2000)
    events = models.JSONField(default=list)  # WebhookEventType values
    # Staff only: every job's end, not only the owner's own jobs.
    all_jobs = models.BooleanField(default=False)
    secret = models.CharField(max_length=100, default=new_secret)
    is_active = models.BooleanField(default=True)
    # Since when every attempt has failed (None: the last one succeeded, or none failed).
    failing_since = models.DateTimeField(null=True, blank=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("-created_at", "-id")
        indexes = [models.Index(fields=("owner", "is_active"))]

    def __str__(self) -> str:
        return f"{self.url} ({self.owner_id})"


class WebhookDelivery(models.Model):
    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries"
    )
    # Purging a job (retention) takes its deliveries with it.
    job = models.ForeignKey("jobs.Job", on_delete=models.CASCADE, related_name="webhook_deliveries")
    event_type = models.CharField(max_length=32, choices=WebhookEventType.choices)
    # The Standard Webhooks message id: the same on every attempt, so receivers drop repeats.
    webhook_id = models.CharField(max_length=64, unique=True, default=new_webhook_id)
    payload = models.JSONField()
    status = models.CharField(
        max_length=16, choices=WebhookDeliveryStatus.choices, default=WebhookDeliveryStatus.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    # When the next attempt is due (None once the delivery succeeded or failed for good).
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # When its task was last handed to the broker for the attempt due (or due then, for a
    # countdown); the sweep sends again a due row not sent, or sent long ago.
    dispatched_at = models.DateTimeField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    last_response_status = models.PositiveIntegerField(null=True, blank=True)
    last_response_body = models.TextField(blank=True)  # at most WEBHOOK_RESPONSE_BODY_BYTES
    last_error = models.TextField(blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("-created_at", "-id")
        constraints = [
            # A job ends once: one message per endpoint, never two.
            models.UniqueConstraint(fields=("endpoint", "job"), name="webhook_delivery_once")
        ]
        indexes = [models.Index(fields=("status", "next_attempt_at"))]

    def __str__(self) -> str:
        return f"{self.event_type} #{self.job_id} -> {self.endpoint_id} ({self.status})"
