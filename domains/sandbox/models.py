from django.db import models


class GatewayCharge(models.Model):
    """The sandbox gateway's ledger: one row per charge it made, keyed by idempotency key."""

    idempotency_key = models.CharField(max_length=255, unique=True)
    request_fingerprint = models.CharField(max_length=64)
    transaction_id = models.CharField(max_length=64, unique=True)
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    currency = models.CharField(max_length=3)
    token = models.CharField(max_length=64)
    reference = models.CharField(max_length=64, blank=True)
    refunded = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("id",)

    def __str__(self) -> str:
        return f"{self.transaction_id} {self.amount} {self.currency}"


class GatewayReply(models.Model):
    """The answer given to an idempotency key, replayed for every repeat of the request."""

    idempotency_key = models.CharField(max_length=255, unique=True)
    request_fingerprint = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField()
    body = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.idempotency_key} -> {self.status_code}"
