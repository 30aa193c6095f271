"""GraphQL for analytics: metrics snapshots (staff only)."""

from datetime import datetime
from decimal import Decimal
from typing import Annotated

import strawberry
import strawberry_django
from strawberry import relay
from strawberry.types import Info
from strawberry_django.relay import DjangoListConnection

from domains.analytics import models
from domains.analytics.selectors import metrics_snapshot_list
from domains.analytics.services import metrics_snapshot_generate
from schema.base import viewer
from schema.errors import AnalyticsError, domain_errors
from schema.extensions import RequiresRedis
from schema.idempotency import IdempotentStart
from schema.permissions import IsStaff

JobType = Annotated["JobType", strawberry.lazy("schema.jobs")]


@strawberry_django.type(models.MetricsSnapshot, name="MetricsSnapshot")
class MetricsSnapshotType(relay.Node):
    status: str
    as_of: datetime
    user_count: int
    active_user_count: int
    order_count: int
    revenue: Decimal
    max_user_revenue: Decimal
    average_order_value: Decimal
    revenue_per_active_user: Decimal
    created_at: datetime
    completed_at: datetime | None
    job: JobType | None

    @strawberry_django.field(only=["error_message"])
    def error_message(self, root: models.MetricsSnapshot) -> str | None:
        return root.error_message or None

    @classmethod
    def get_queryset(cls, queryset, info: Info, **kwargs):
        return queryset.filter(pk__in=metrics_snapshot_list(viewer=viewer(info)).values("pk"))


@strawberry_django.filter_type(models.MetricsSnapshot, lookups=True)
class MetricsSnapshotFilter:
    status: str | None
    created_at: datetime | None


@strawberry.type
class MetricsSnapshotGeneratePayload:
    metrics_snapshot: MetricsSnapshotType | None = None
    job: JobType | None = None
    errors: list[AnalyticsError] = strawberry.field(default_factory=list)


@strawberry.type
class Query:
    metrics_snapshots: DjangoListConnection[MetricsSnapshotType] = strawberry_django.connection(
        filters=MetricsSnapshotFilter, extensions=[IsStaff()]
    )


@strawberry.type
class Mutation:
    @strawberry.mutation(
        extensions=[IsStaff(), RequiresRedis(), IdempotentStart()],
        description="Order metrics over every user, computed in parallel chunks (staff).",
    )
    @domain_errors
    def metrics_snapshot_generate(self, info: Info) -> MetricsSnapshotGeneratePayload:
        snapshot = metrics_snapshot_generate(viewer=viewer(info))
        return MetricsSnapshotGeneratePayload(metrics_snapshot=snapshot, job=snapshot.job)
