from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.core.exceptions import ValidationError

from domains.accounts.models import ApiToken, User
from domains.accounts.throttle import (
    RateLimited,
    ThrottledAction,
    client_address,
    throttle_attempt,
)


class ThrottledAdminLoginForm(AdminAuthenticationForm):
    """The admin's login form, on the same per-account and per-address budget as tokenCreate."""

    def clean(self):
        try:
            throttle_attempt(
                action=ThrottledAction.LOGIN,
                account=self.data.get("username", ""),
                address=client_address(self.request),
            )
        except RateLimited as error:
            raise ValidationError(error.message, code=error.code) from error
        return super().clean()


admin.site.login_form = ThrottledAdminLoginForm


@admin.register(User)
class UserAdmin(BaseUserAdmin):
    ordering = ("email",)
    list_display = ("email", "first_name", "last_name", "is_staff", "date_joined")
    search_fields = ("email", "first_name", "last_name")
    fieldsets = (
        (None, {"fields": ("email", "password")}),
        ("Profile", {"fields": ("first_name", "last_name", "phone")}),
        (
            "Notifications",
            {
                "fields": (
                    "email_notifications",
                    "sms_notifications",
                    "push_notifications",
                    "push_token",
                    "welcome_email_sent_at",
                )
            },
        ),
        (
            "Permissions",
            {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")},
        ),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("email", "password1", "password2")}),)


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = (
        "prefix",
        "user",
        "job",
        "created_at",
        "expires_at",
        "last_used_at",
        "revoked_at",
    )
    readonly_fields = ("key_hash", "prefix", "created_at", "last_used_at", "owner_password_mark")
    raw_id_fields = ("job",)
    search_fields = ("user__email", "prefix")
