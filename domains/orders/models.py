from django.conf import settings
from django.db import models

from domains.jobs.models import JobBacked, JobKind, job_ends


class OrderStatus(models.TextChoices):
    PENDING = "pending"
    PROCESSING = "processing"
    CONFIRMED = "confirmed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class PaymentStatus(models.TextChoices):
    UNPAID = "unpaid"
    PAID = "paid"
    REFUNDED = "refunded"
    FAILED = "failed"


class ReservationStatus(models.TextChoices):
    """Where the order's stock is: the conditional updates on this field make each move once."""

    NONE = "none"
    RESERVED = "reserved"
    COMMITTED = "committed"  # sold: the reservation was taken out of stock for good
    RELEASED = "released"


class Order(JobBacked):
    job_kind = JobKind.ORDER_WORKFLOW
    # Confirmed by the checkout's last step; one whose checkout ended otherwise fails.
    job_end_statuses = job_ends(
        completed=None, failed=OrderStatus.FAILED, cancelled=OrderStatus.FAILED
    )
    job_open_statuses = (OrderStatus.PROCESSING,)
    job_cancel_reason = "The checkout was cancelled."

    number = models.CharField(max_length=32, unique=True)
    customer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="orders"
    )
    status = models.CharField(
        max_length=16, choices=OrderStatus.choices, default=OrderStatus.PENDING
    )
    payment_status = models.CharField(
        max_length=16, choices=PaymentStatus.choices, default=PaymentStatus.UNPAID
    )
    total_amount = models.DecimalField(max_digits=12, decimal_places=2, default=0)
    currency = models.CharField(max_length=3, default="USD")
    region = models.CharField(max_length=32, blank=True, db_index=True)
    reservation = models.CharField(
        max_length=16, choices=ReservationStatus.choices, default=ReservationStatus.NONE
    )
    confirmation_emailed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("-created_at", "-id")

    def __str__(self) -> str:
        return self.number


class OrderItem(models.Model):
    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="items")
    product = models.ForeignKey(
        "catalog.Product", on_delete=models.PROTECT, related_name="order_items"
    )
    quantity = models.PositiveIntegerField()
    unit_price = models.DecimalField(max_digits=12, decimal_places=2)

    class Meta:
        ordering = ("id",)

    def __str__(self) -> str:
        return f"{self.quantity} x {self.product_id}"
