"""GraphQL for catalog: types, queries, mutations (see docs/API.md)."""

from datetime import datetime
from decimal import Decimal
from typing import Annotated

import strawberry
import strawberry_django
from django.db.models import F, Value
from django.db.models.functions import Coalesce
from strawberry import auto, relay
from strawberry.types import Info
from strawberry_django.relay import DjangoListConnection

from domains.catalog import models
from domains.catalog.services import product_sync_start, products_sync_all_start
from schema.base import TextFilterLookup, viewer
from schema.errors import CatalogError, domain_errors
from schema.extensions import RequiresRedis
from schema.idempotency import IdempotentStart
from schema.permissions import IsStaff

JobType = Annotated["JobType", strawberry.lazy("schema.jobs")]


@strawberry_django.type(models.Category, name="Category")
class CategoryType(relay.Node):
    name: str
    slug: str


@strawberry_django.type(models.Product, name="Product")
class ProductType(relay.Node):
    sku: str
    name: str
    description: str
    price: Decimal
    category: CategoryType | None
    external_synced_at: datetime | None
    available: int = strawberry_django.field(
        annotate=Coalesce(F("inventory__available"), Value(0)),
        description="Units that can be ordered now (stock not held by a checkout).",
    )


@strawberry_django.filter_type(models.Product, lookups=True)
class ProductFilter:
    sku: TextFilterLookup | None
    name: TextFilterLookup | None
    price: auto
    category: auto


@strawberry_django.order_type(models.Product)
class ProductOrder:
    sku: auto
    name: auto
    price: auto
    created_at: auto


@strawberry.type
class ProductSyncPayload:
    job: JobType | None = None
    errors: list[CatalogError] = strawberry.field(default_factory=list)


@strawberry.type
class ProductsSyncAllPayload:
    job: JobType | None = None
    errors: list[CatalogError] = strawberry.field(default_factory=list)


@strawberry.type
class Query:
    product: ProductType | None = strawberry_django.node()
    products: DjangoListConnection[ProductType] = strawberry_django.connection(
        filters=ProductFilter, ordering=ProductOrder
    )


@strawberry.type
class Mutation:
    @strawberry.mutation(
        extensions=[IsStaff(), RequiresRedis(), IdempotentStart()],
        description="Staff: fetch one product from the supplier.",
    )
    @domain_errors
    def product_sync(self, info: Info, sku: str) -> ProductSyncPayload:
        job = product_sync_start(viewer=viewer(info), sku=sku)
        return ProductSyncPayload(job=job)

    @strawberry.mutation(
        extensions=[IsStaff(), RequiresRedis(), IdempotentStart()],
        description="Staff: fetch every product the supplier lists.",
    )
    @domain_errors
    def products_sync_all(self, info: Info) -> ProductsSyncAllPayload:
        job = products_sync_all_start(viewer=viewer(info))
        return ProductsSyncAllPayload(job=job)
