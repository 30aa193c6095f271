"""GraphQL for notifications: sending one (staff) and the viewer's own preferences."""

from datetime import datetime
from typing import Annotated

import strawberry
import strawberry_django
from strawberry import relay
from strawberry.scalars import JSON
from strawberry.types import Info
from strawberry_django.permissions import IsAuthenticated

from domains.notifications import models
from domains.notifications.selectors import notification_list
from domains.notifications.services import notification_preferences_update, notification_send
from schema.base import node_pk, viewer
from schema.errors import NotificationError, domain_errors
from schema.extensions import RequiresRedis
from schema.idempotency import IdempotentStart, idempotency_key_field
from schema.permissions import IsStaff

JobType = Annotated["JobType", strawberry.lazy("schema.jobs")]
NotificationChannel = strawberry.enum(models.Channel, name="NotificationChannel")


@strawberry_django.type(models.NotificationDelivery, name="NotificationDelivery")
class NotificationDeliveryType:
    channel: NotificationChannel
    status: str
    sent_at: datetime | None

    @strawberry_django.field(only=["error_message"])
    def error_message(self, root: models.NotificationDelivery) -> str | None:
        return root.error_message or None


@strawberry_django.type(models.Notification, name="Notification")
class NotificationType(relay.Node):
    notification_type: str
    data: JSON
    channels: list[NotificationChannel]
    results: JSON | None
    created_at: datetime
    deliveries: list[NotificationDeliveryType]
    job: JobType | None

    @classmethod
    def get_queryset(cls, queryset, info: Info, **kwargs):
        return queryset.filter(pk__in=notification_list(viewer=viewer(info)).values("pk"))


@strawberry.type(description="The viewer's notification channels and device token.")
class NotificationPreferences:
    email: bool
    sms: bool
    push: bool
    has_push_token: bool


@strawberry.input
class NotificationSendInput:
    user_id: relay.GlobalID
    notification_type: str
    channels: list[NotificationChannel]
    data: JSON | None = None
    idempotency_key: str | None = idempotency_key_field()


@strawberry.input(description="Leave a field out to keep its value.")
class NotificationPreferencesUpdateInput:
    email: bool | None = None
    sms: bool | None = None
    push: bool | None = None
    push_token: str | None = None


@strawberry.type
class NotificationSendPayload:
    notification: NotificationType | None = None
    job: JobType | None = None
    errors: list[NotificationError] = strawberry.field(default_factory=list)


@strawberry.type
class NotificationPreferencesUpdatePayload:
    preferences: NotificationPreferences | None = None
    errors: list[NotificationError] = strawberry.field(default_factory=list)


@strawberry.type
class Mutation:
    @strawberry.mutation(
        extensions=[IsStaff(), RequiresRedis(), IdempotentStart()],
        description="Notify a user over several channels at once, as their preferences allow.",
    )
    @domain_errors
    def notification_send(
        self, info: Info, input: NotificationSendInput
    ) -> NotificationSendPayload:
        notification = notification_send(
            viewer=viewer(info),
            recipient_id=node_pk(input.user_id, "User", field="userId"),
            notification_type=input.notification_type,
            channels=input.channels,
            data=input.data if isinstance(input.data, dict) else None,
        )
        return NotificationSendPayload(notification=notification, job=notification.job)

    @strawberry.mutation(extensions=[IsAuthenticated()])
    @domain_errors
    def notification_preferences_update(
        self, info: Info, input: NotificationPreferencesUpdateInput
    ) -> NotificationPreferencesUpdatePayload:
        user = notification_preferences_update(
            viewer=viewer(info),
            email=input.email,
            sms=input.sms,
            push=input.push,
            push_token=input.push_token,
        )
        return NotificationPreferencesUpdatePayload(
            preferences=NotificationPreferences(
                email=user.email_notifications,
                sms=user.sms_notifications,
                push=user.push_notifications,
                has_push_token=bool(user.push_token),
            )
        )
