"""GraphQL for orders: types, queries, mutations (see docs/API.md)."""

from datetime import datetime
from decimal import Decimal
from typing import Annotated

import strawberry
import strawberry_django
from strawberry import auto, relay
from strawberry.types import Info
from strawberry_django.permissions import IsAuthenticated
from strawberry_django.relay import DjangoListConnection

from domains.orders import models
from domains.orders.selectors import order_get, order_list
from domains.orders.services import order_checkout, order_create
from schema.base import TextFilterLookup, node_pk, viewer
from schema.errors import OrderError, domain_errors
from schema.extensions import RequiresRedis
from schema.idempotency import IdempotentStart

ProductType = Annotated["ProductType", strawberry.lazy("schema.catalog")]
JobType = Annotated["JobType", strawberry.lazy("schema.jobs")]
PaymentType = Annotated["PaymentType", strawberry.lazy("schema.payments")]


@strawberry_django.type(models.OrderItem, name="OrderItem")
class OrderItemType:
    product: ProductType
    quantity: int
    unit_price: Decimal


@strawberry_django.type(models.Order, name="Order")
class OrderType(relay.Node):
    number: str
    status: str
    payment_status: str
    total_amount: Decimal
    currency: str
    items: list[OrderItemType]
    payments: list[PaymentType]
    created_at: datetime
    job: JobType | None

    @strawberry_django.field(only=["region"])
    def region(self, root: models.Order) -> str | None:
        return root.region or None

    @strawberry_django.field(only=["error_message"])
    def error_message(self, root: models.Order) -> str | None:
        return root.error_message or None

    @classmethod
    def get_queryset(cls, queryset, info: Info, **kwargs):
        return queryset.filter(pk__in=order_list(viewer=viewer(info)).values("pk"))


@strawberry_django.filter_type(models.Order, lookups=True)
class OrderFilter:
    number: TextFilterLookup | None
    status: TextFilterLookup | None
    payment_status: TextFilterLookup | None
    region: TextFilterLookup | None
    created_at: auto


@strawberry_django.order_type(models.Order)
class OrderOrder:
    number: auto
    total_amount: auto
    created_at: auto


@strawberry.input
class OrderLineInput:
    product_id: relay.GlobalID
    quantity: int


@strawberry.input
class OrderCreateInput:
    items: list[OrderLineInput]


@strawberry.type
class OrderCreatePayload:
    order: OrderType | None = None
    errors: list[OrderError] = strawberry.field(default_factory=list)


@strawberry.type
class OrderCheckoutPayload:
    order: OrderType | None = None
    job: JobType | None = None
    errors: list[OrderError] = strawberry.field(default_factory=list)


@strawberry.type
class Query:
    order: OrderType | None = strawberry_django.node(
        extensions=[IsAuthenticated(fail_silently=True)]
    )
    orders: DjangoListConnection[OrderType] = strawberry_django.connection(
        filters=OrderFilter, ordering=OrderOrder, extensions=[IsAuthenticated()]
    )


@strawberry.type
class Mutation:
    @strawberry.mutation(extensions=[IsAuthenticated()])
    @domain_errors
    def order_create(self, info: Info, input: OrderCreateInput) -> OrderCreatePayload:
        lines = [
            (node_pk(line.product_id, "Product", field="items"), line.quantity)
            for line in input.items
        ]
        order = order_create(viewer=viewer(info), lines=lines)
        return OrderCreatePayload(order=order)

    @strawberry.mutation(
        extensions=[IsAuthenticated(), RequiresRedis(), IdempotentStart()],
        description="validate -> reserve -> charge -> confirm, tracked by one job.",
    )
    @domain_errors
    def order_checkout(
        self, info: Info, id: relay.GlobalID, payment_method: str
    ) -> OrderCheckoutPayload:
        order = order_checkout(
            viewer=viewer(info),
            order=order_get(viewer=viewer(info), order_id=node_pk(id, "Order")),
            payment_method=payment_method,
        )
        return OrderCheckoutPayload(order=order, job=order.job)
