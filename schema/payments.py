"""GraphQL for payments: types, queries, mutations (see docs/API.md)."""

from datetime import datetime
from decimal import Decimal
from typing import Annotated

import strawberry
import strawberry_django
from strawberry import auto, relay
from strawberry.types import Info
from strawberry_django.permissions import IsAuthenticated
from strawberry_django.relay import DjangoListConnection

from domains.orders.selectors import order_get
from domains.payments import models
from domains.payments.selectors import payment_list
from domains.payments.services import payment_process
from schema.base import TextFilterLookup, node_pk, viewer
from schema.errors import PaymentError, domain_errors
from schema.extensions import RequiresRedis
from schema.idempotency import IdempotentStart

JobType = Annotated["JobType", strawberry.lazy("schema.jobs")]
OrderType = Annotated["OrderType", strawberry.lazy("schema.orders")]


@strawberry_django.type(models.Payment, name="Payment")
class PaymentType(relay.Node):
    amount: Decimal
    currency: str
    method: str
    status: str
    created_at: datetime
    order: OrderType
    job: JobType | None

    @strawberry_django.field(only=["gateway_transaction_id"])
    def gateway_transaction_id(self, root: models.Payment) -> str | None:
        return root.gateway_transaction_id or None

    @strawberry_django.field(only=["error_message"])
    def error_message(self, root: models.Payment) -> str | None:
        return root.error_message or None

    @classmethod
    def get_queryset(cls, queryset, info: Info, **kwargs):
        return queryset.filter(pk__in=payment_list(viewer=viewer(info)).values("pk"))


@strawberry_django.filter_type(models.Payment, lookups=True)
class PaymentFilter:
    status: TextFilterLookup | None
    method: TextFilterLookup | None
    created_at: auto


@strawberry_django.order_type(models.Payment)
class PaymentOrder:
    amount: auto
    created_at: auto


@strawberry.input
class PaymentProcessInput:
    order_id: relay.GlobalID
    method: str = strawberry.field(description="The card token, e.g. tok_visa in the sandbox.")
    idempotency_key: str = strawberry.field(
        description="The client's key (required here): the same key and parameters within 24 "
        "hours give the same payment; other parameters are refused with IDEMPOTENCY_KEY_REUSED."
    )


@strawberry.type
class PaymentProcessPayload:
    payment: PaymentType | None = None
    job: JobType | None = None
    errors: list[PaymentError] = strawberry.field(default_factory=list)


@strawberry.type
class Query:
    payment: PaymentType | None = strawberry_django.node(
        extensions=[IsAuthenticated(fail_silently=True)]
    )
    payments: DjangoListConnection[PaymentType] = strawberry_django.connection(
        filters=PaymentFilter, ordering=PaymentOrder, extensions=[IsAuthenticated()]
    )


@strawberry.type
class Mutation:
    @strawberry.mutation(extensions=[IsAuthenticated(), RequiresRedis(), IdempotentStart()])
    @domain_errors
    def payment_process(self, info: Info, input: PaymentProcessInput) -> PaymentProcessPayload:
        payment = payment_process(
            viewer=viewer(info),
            order=order_get(
                viewer=viewer(info),
                order_id=node_pk(input.order_id, "Order", field="orderId"),
                field="orderId",
            ),
            method=input.method,
        )
        return PaymentProcessPayload(payment=payment, job=payment.job)
