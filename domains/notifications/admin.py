from django.contrib import admin

from domains.notifications.models import Notification, NotificationDelivery, OutgoingEmail


@admin.register(OutgoingEmail)
class OutgoingEmailAdmin(admin.ModelAdmin):
    list_display = ("id", "template", "to_address", "status", "created_at", "sent_at")
    list_filter = ("template", "status")
    search_fields = ("to_address",)
    readonly_fields = ("claimed_at", "sent_at", "created_at")
    raw_id_fields = ("recipient", "job")


class NotificationDeliveryInline(admin.TabularInline):
    model = NotificationDelivery
    extra = 0
    readonly_fields = ("channel", "status", "provider_message_id", "error_message", "sent_at")
    can_delete = False


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = ("id", "notification_type", "recipient", "channels", "results", "created_at")
    list_filter = ("notification_type",)
    search_fields = ("recipient__email", "notification_type")
    readonly_fields = ("dispatched_at", "results", "created_at")
    raw_id_fields = ("recipient", "sent_by", "job")
    inlines = [NotificationDeliveryInline]
