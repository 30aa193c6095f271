"""GraphQL for webhooks: the viewer's endpoints, their delivery logs, and the mutations
that register, delete and retry (the rules live in domains/webhooks/services.py)."""

from datetime import datetime
from enum import Enum
from typing import Annotated

import strawberry
import strawberry_django
from strawberry import relay
from strawberry.types import Info
from strawberry_django.permissions import IsAuthenticated
from strawberry_django.relay import DjangoListConnection

from domains.errors import NotFound
from domains.jobs.selectors import job_list
from domains.webhooks import models
from domains.webhooks.selectors import webhook_delivery_list, webhook_endpoint_list
from domains.webhooks.services import (
    webhook_delivery_retry,
    webhook_endpoint_create,
    webhook_endpoint_delete,
)
from schema.base import node_pk, viewer
from schema.errors import WebhookError, domain_errors
from schema.extensions import RequiresRedis

JobType = Annotated["JobType", strawberry.lazy("schema.jobs")]

WebhookEventType = strawberry.enum(models.WebhookEventType, name="WebhookEventType")


@strawberry.enum(name="WebhookDeliveryStatus")
class WebhookDeliveryStatus(Enum):
    PENDING = "PENDING"  # waiting for an attempt, or in one
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


@strawberry_django.type(models.WebhookDelivery, name="WebhookDelivery")
class WebhookDeliveryType(relay.Node):
    event_type: WebhookEventType
    attempts: int
    last_response_status: int | None
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    created_at: datetime

    @strawberry_django.field(
        only=["webhook_id"],
        description="The `webhook-id` header: the same on every attempt of this message.",
    )
    def webhook_id(self, root: models.WebhookDelivery) -> str:
        return root.webhook_id

    @strawberry_django.field(only=["status"])
    def status(self, root: models.WebhookDelivery) -> WebhookDeliveryStatus:
        if root.status == models.WebhookDeliveryStatus.SENDING:
            return WebhookDeliveryStatus.PENDING
        return WebhookDeliveryStatus(root.status)

    @strawberry_django.field(only=["last_error"])
    def last_error(self, root: models.WebhookDelivery) -> str | None:
        return root.last_error or None

    @strawberry_django.field(only=["job_id"])
    def job(self, root: models.WebhookDelivery, info: Info) -> JobType | None:
        return job_list(viewer=viewer(info)).filter(pk=root.job_id).first()

    @strawberry_django.field(only=["endpoint_id"])
    def endpoint(self, root: models.WebhookDelivery, info: Info) -> "WebhookEndpointType | None":
        return webhook_endpoint_list(viewer=viewer(info)).filter(pk=root.endpoint_id).first()

    @classmethod
    def get_queryset(cls, queryset, info: Info, **kwargs):
        return queryset.filter(pk__in=webhook_delivery_list(viewer=viewer(info)).values("pk"))


@strawberry_django.type(models.WebhookEndpoint, name="WebhookEndpoint")
class WebhookEndpointType(relay.Node):
    url: str
    is_active: bool
    all_jobs: bool = strawberry_django.field(
        description="Staff: every job's end, not only the owner's own jobs."
    )
    created_at: datetime
    disabled_at: datetime | None
    deliveries: DjangoListConnection[WebhookDeliveryType] = strawberry_django.connection(
        description="Its delivery log, newest first."
    )

    @strawberry_django.field(only=["events"])
    def events(self, root: models.WebhookEndpoint) -> list[WebhookEventType]:
        return [models.WebhookEventType(event) for event in root.events]

    @classmethod
    def get_queryset(cls, queryset, info: Info, **kwargs):
        return queryset.filter(pk__in=webhook_endpoint_list(viewer=viewer(info)).values("pk"))


@strawberry.input
class WebhookEndpointCreateInput:
    url: str
    events: list[WebhookEventType]
    all_jobs: bool = strawberry.field(
        default=False, description="Staff only: be told of every job's end."
    )


@strawberry.type
class WebhookEndpointCreatePayload:
    endpoint: WebhookEndpointType | None = None
    secret: str | None = strawberry.field(
        default=None,
        description='The signing secret ("whsec_..."), shown this once: keep it to verify '
        "each delivery's webhook-signature.",
    )
    errors: list[WebhookError] = strawberry.field(default_factory=list)


@strawberry.type
class WebhookEndpointDeletePayload:
    deleted_id: relay.GlobalID | None = None
    errors: list[WebhookError] = strawberry.field(default_factory=list)


@strawberry.type
class WebhookDeliveryRetryPayload:
    delivery: WebhookDeliveryType | None = None
    errors: list[WebhookError] = strawberry.field(default_factory=list)


@strawberry.type
class Query:
    webhook_endpoint: WebhookEndpointType | None = strawberry_django.node(
        extensions=[IsAuthenticated(fail_silently=True)]
    )

    @strawberry_django.connection(
        DjangoListConnection[WebhookEndpointType],
        extensions=[IsAuthenticated()],
        description="The viewer's own webhook endpoints, newest first.",
    )
    def webhook_endpoints(self, info: Info) -> list[models.WebhookEndpoint]:
        return webhook_endpoint_list(viewer=viewer(info), own_only=True)


@strawberry.type
class Mutation:
    @strawberry.mutation(
        extensions=[IsAuthenticated()],
        description="Register a URL to be told when the viewer's jobs end (Standard Webhooks).",
    )
    @domain_errors
    def webhook_endpoint_create(
        self, info: Info, input: WebhookEndpointCreateInput
    ) -> WebhookEndpointCreatePayload:
        endpoint = webhook_endpoint_create(
            viewer=viewer(info),
            url=input.url,
            events=[event.value for event in input.events],
            all_jobs=input.all_jobs,
        )
        return WebhookEndpointCreatePayload(endpoint=endpoint, secret=endpoint.secret)

    @strawberry.mutation(extensions=[IsAuthenticated()])
    @domain_errors
    def webhook_endpoint_delete(
        self, info: Info, id: relay.GlobalID
    ) -> WebhookEndpointDeletePayload:
        endpoint = (
            webhook_endpoint_list(viewer=viewer(info))
            .filter(pk=node_pk(id, "WebhookEndpoint"))
            .first()
        )
        if endpoint is None:
            raise NotFound("No such webhook endpoint.")
        webhook_endpoint_delete(endpoint=endpoint)
        return WebhookEndpointDeletePayload(deleted_id=id)

    @strawberry.mutation(
        extensions=[IsAuthenticated(), RequiresRedis()],
        description="Attempt a FAILED delivery once more, now, with its same webhook-id.",
    )
    @domain_errors
    def webhook_delivery_retry(self, info: Info, id: relay.GlobalID) -> WebhookDeliveryRetryPayload:
        delivery = (
            webhook_delivery_list(viewer=viewer(info))
            .select_related("endpoint")
            .filter(pk=node_pk(id, "WebhookDelivery"))
            .first()
        )
        if delivery is None:
            raise NotFound("No such webhook delivery.")
        delivery = webhook_delivery_retry(delivery=delivery)
        return WebhookDeliveryRetryPayload(delivery=delivery)
