"""GraphQL for crm: customers synced from the CRM, and the sync's logs (staff only)."""

from datetime import datetime
from typing import Annotated

import strawberry
import strawberry_django
from strawberry import relay
from strawberry.scalars import JSON
from strawberry.types import Info
from strawberry_django.relay import DjangoListConnection

from domains.crm import models
from domains.crm.selectors import customer_list, sync_log_list
from domains.crm.services import customers_sync
from schema.base import viewer
from schema.errors import CrmError, domain_errors
from schema.extensions import RequiresRedis
from schema.idempotency import IdempotentStart
from schema.permissions import IsStaff

JobType = Annotated["JobType", strawberry.lazy("schema.jobs")]


@strawberry_django.type(models.Customer, name="Customer")
class CustomerType(relay.Node):
    external_id: str
    email: str
    first_name: str
    last_name: str
    phone: str
    company: str
    external_updated_at: datetime
    synced_at: datetime

    @classmethod
    def get_queryset(cls, queryset, info: Info, **kwargs):
        return queryset.filter(pk__in=customer_list(viewer=viewer(info)).values("pk"))


@strawberry_django.type(models.SyncLog, name="SyncLog")
class SyncLogType(relay.Node):
    kind: str
    status: str
    since: datetime | None
    created: int
    updated: int
    skipped: int
    errors: int
    error_details: JSON
    created_at: datetime
    completed_at: datetime | None
    job: JobType | None

    @strawberry_django.field(only=["error_message"])
    def error_message(self, root: models.SyncLog) -> str | None:
        return root.error_message or None

    @classmethod
    def get_queryset(cls, queryset, info: Info, **kwargs):
        return queryset.filter(pk__in=sync_log_list(viewer=viewer(info)).values("pk"))


@strawberry_django.filter_type(models.Customer, lookups=True)
class CustomerFilter:
    external_id: str | None
    email: str | None
    company: str | None


@strawberry_django.order_type(models.Customer)
class CustomerOrder:
    external_id: strawberry.auto
    email: strawberry.auto
    synced_at: strawberry.auto


@strawberry_django.filter_type(models.SyncLog, lookups=True)
class SyncLogFilter:
    kind: str | None
    status: str | None


@strawberry.type
class CustomersSyncPayload:
    sync_log: SyncLogType | None = None
    job: JobType | None = None
    errors: list[CrmError] = strawberry.field(default_factory=list)


@strawberry.type
class Query:
    customers: DjangoListConnection[CustomerType] = strawberry_django.connection(
        filters=CustomerFilter, order=CustomerOrder, extensions=[IsStaff()]
    )
    sync_logs: DjangoListConnection[SyncLogType] = strawberry_django.connection(
        filters=SyncLogFilter, extensions=[IsStaff()]
    )


@strawberry.type
class Mutation:
    @strawberry.mutation(
        extensions=[IsStaff(), RequiresRedis(), IdempotentStart()],
        description="Sync customers from the CRM: all of them, or those changed recently.",
    )
    @domain_errors
    def customers_sync(
        self, info: Info, full_sync: bool = False, since_hours: int = 24
    ) -> CustomersSyncPayload:
        sync_log = customers_sync(viewer=viewer(info), full_sync=full_sync, since_hours=since_hours)
        return CustomersSyncPayload(sync_log=sync_log, job=sync_log.job)
