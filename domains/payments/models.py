from django.conf import settings
from django.db import models

from domains.jobs.models import JobBacked, JobKind, job_ends


class PaymentStatus(models.TextChoices):
    PENDING = "pending"
    PROCESSING = "processing"  # sent to the gateway; the answer is not recorded yet
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REFUNDED = "refunded"


# A live payment holds its order: at most one per order (the constraint below).
LIVE_STATUSES = ("pending", "processing", "succeeded")


class Payment(JobBacked):
    """One charge of an order through the gateway, named by a key of its own (the client's
    idempotency key names the request: domains.jobs.idempotency)."""

    job_kind = JobKind.PAYMENT
    # Succeeded by the gateway's answer (the charge records it); one never sent fails with
    # its job, so the order can be paid again. One sent with its outcome unknown is its
    # handler's: reconciled with the gateway.
    job_end_statuses = job_ends(
        completed=None, failed=PaymentStatus.FAILED, cancelled=PaymentStatus.FAILED
    )
    job_open_statuses = (PaymentStatus.PENDING,)
    job_cancel_reason = "The payment was cancelled; no charge was made."

    order = models.ForeignKey("orders.Order", on_delete=models.PROTECT, related_name="payments")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="payments"
    )
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    currency = models.CharField(max_length=3)
    method = models.CharField(max_length=64)
    idempotency_key = models.CharField(max_length=255)
    status = models.CharField(
        max_length=16, choices=PaymentStatus.choices, default=PaymentStatus.PENDING
    )
    gateway_transaction_id = models.CharField(max_length=64, blank=True)
    gateway_response = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("-created_at", "-id")
        constraints = [
            # The gateway answers a key with its first charge for ever: one payment each.
            models.UniqueConstraint(
                fields=("created_by", "idempotency_key"), name="payment_key_unique_per_user"
            ),
            # However many keys a client invents, an order has one live charge at a time.
            models.UniqueConstraint(
                fields=("order",),
                condition=models.Q(status__in=LIVE_STATUSES),
                name="payment_one_live_per_order",
            ),
        ]

    def __str__(self) -> str:
        return f"payment #{self.pk} {self.amount} {self.currency} {self.status}"

    @property
    def gateway_idempotency_key(self) -> str:
        """The key the gateway sees: the payment's, scoped to its client."""
        return f"user-{self.created_by_id}:{self.idempotency_key}"


class PaymentLog(models.Model):
    """An append-only trail of what happened to a payment, one row per event."""

    payment = models.ForeignKey(Payment, on_delete=models.CASCADE, related_name="logs")
    event = models.CharField(max_length=32)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("id",)

    def __str__(self) -> str:
        return f"{self.payment_id} {self.event}"
