"""The schema: each domain's Query, Mutation and Subscription merged, plus extensions."""

from decimal import Decimal

from django.conf import settings
from strawberry.schema.config import StrawberryConfig
from strawberry.tools import merge_types
from strawberry_django.optimizer import DjangoOptimizerExtension

from schema import (
    accounts,
    analytics,
    catalog,
    crm,
    jobs,
    media,
    notifications,
    orders,
    payments,
    reports,
    webhooks,
)
from schema.base import FINITE_DECIMAL
from schema.extensions import ErrorLoggingSchema, schema_extensions
from schema.frames import SharedFrameExecutor
from schema.scopes import JobTokenScope

DOMAINS = (
    accounts,
    jobs,
    reports,
    catalog,
    orders,
    payments,
    media,
    notifications,
    crm,
    analytics,
    webhooks,
)


def _merged(name: str) -> type:
    return merge_types(name, tuple(getattr(m, name) for m in DOMAINS if hasattr(m, name)))


schema = ErrorLoggingSchema(
    query=_merged("Query"),
    mutation=_merged("Mutation"),
    subscription=_merged("Subscription"),
    extensions=[*schema_extensions(), JobTokenScope, DjangoOptimizerExtension],
    config=StrawberryConfig(relay_max_results=settings.GRAPHQL_MAX_PAGE_SIZE),
    scalar_overrides={Decimal: FINITE_DECIMAL},
    # identical subscriptions to one job share each event's execution (schema/frames.py)
    execution_context_class=SharedFrameExecutor,
)
