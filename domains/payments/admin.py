from django.contrib import admin

from domains.payments.models import Payment, PaymentLog


class PaymentLogInline(admin.TabularInline):
    model = PaymentLog
    extra = 0
    can_delete = False
    readonly_fields = ("event", "data", "created_at")

    def has_add_permission(self, request, obj=None) -> bool:
        return False  # the trail is append-only, written by the payment code


@admin.register(Payment)
class PaymentAdmin(admin.ModelAdmin):
    list_display = ("id", "order", "amount", "currency", "method", "status", "created_at")
    list_filter = ("status", "currency")
    search_fields = ("idempotency_key", "gateway_transaction_id", "order__number")
    # A payment is a record of money moved: the gateway and the workers write it, not hands.
    readonly_fields = (
        "order",
        "created_by",
        "amount",
        "currency",
        "method",
        "idempotency_key",
        "status",
        "gateway_transaction_id",
        "gateway_response",
        "error_message",
        "job",
    )
    list_select_related = ("order",)
    inlines = (PaymentLogInline,)
