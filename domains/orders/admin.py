from django.contrib import admin

from domains.orders.models import Order, OrderItem


class OrderItemInline(admin.TabularInline):
    model = OrderItem
    raw_id_fields = ("product",)
    extra = 0


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = (
        "number",
        "customer",
        "status",
        "payment_status",
        "total_amount",
        "region",
        "created_at",
    )
    list_filter = ("status", "payment_status", "region")
    search_fields = ("number", "customer__email")
    raw_id_fields = ("customer", "job")
    inlines = (OrderItemInline,)
