from datetime import date, datetime
from typing import Annotated

import strawberry
import strawberry_django
from django.urls import reverse
from strawberry import relay
from strawberry.scalars import JSON
from strawberry.types import Info
from strawberry_django.permissions import IsAuthenticated
from strawberry_django.relay import DjangoListConnection

from domains.reports import models
from domains.reports.selectors import report_list
from domains.reports.services import sales_report_generate
from schema.base import http_request, node_pk, viewer
from schema.errors import ReportError, domain_errors
from schema.extensions import RequiresRedis
from schema.idempotency import IdempotentStart, idempotency_key_field

JobType = Annotated["JobType", strawberry.lazy("schema.jobs")]


@strawberry_django.type(models.Report, name="Report")
class ReportType(relay.Node):
    report_type: str
    status: str
    parameters: JSON
    row_count: int | None
    created_at: datetime
    completed_at: datetime | None
    job: JobType | None

    @strawberry_django.field(only=["error_message"])
    def error_message(self, root: models.Report) -> str | None:
        return root.error_message or None

    @strawberry_django.field(only=["file"], description="Downloadable by the owner or staff only.")
    def file_url(self, root: models.Report, info: Info) -> str | None:
        if not root.file:
            return None
        return http_request(info, "A file URL").build_absolute_uri(
            reverse("report-download", args=[root.pk])
        )

    @classmethod
    def get_queryset(cls, queryset, info: Info, **kwargs):
        return queryset.filter(pk__in=report_list(viewer=viewer(info)).values("pk"))


@strawberry_django.filter_type(models.Report, lookups=True)
class ReportFilter:
    report_type: str | None
    status: str | None


@strawberry.input
class SalesReportInput:
    start_date: date
    end_date: date
    category: strawberry.ID | None = None
    region: str | None = None
    idempotency_key: str | None = idempotency_key_field()


@strawberry.type
class SalesReportGeneratePayload:
    report: ReportType | None = None
    job: JobType | None = None
    errors: list[ReportError] = strawberry.field(default_factory=list)


def _category_pk(category: str) -> int:
    """A category's global ID, or its plain numeric id (handy in GraphiQL)."""
    return int(category) if category.isdigit() else node_pk(category, "Category", field="category")


@strawberry.type
class Query:
    report: ReportType | None = strawberry_django.node(
        extensions=[IsAuthenticated(fail_silently=True)]
    )
    reports: DjangoListConnection[ReportType] = strawberry_django.connection(
        filters=ReportFilter, extensions=[IsAuthenticated()]
    )


@strawberry.type
class Mutation:
    @strawberry.mutation(extensions=[IsAuthenticated(), RequiresRedis(), IdempotentStart()])
    @domain_errors
    def sales_report_generate(
        self, info: Info, input: SalesReportInput
    ) -> SalesReportGeneratePayload:
        report = sales_report_generate(
            viewer=viewer(info),
            start_date=input.start_date,
            end_date=input.end_date,
            category_id=_category_pk(input.category) if input.category else None,
            region=input.region,
        )
        return SalesReportGeneratePayload(report=report, job=report.job)
