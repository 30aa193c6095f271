"""Catalog: syncing products from the supplier's catalog API."""

import logging
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from domains.accounts.models import User
from domains.accounts.permissions import staff_required
from domains.catalog.client import supplier_product
from domains.catalog.errors import CatalogError, CatalogErrorCode
from domains.catalog.models import Category, Inventory, Product
from domains.integrations.client import RequestRejected
from domains.jobs.models import Job, JobKind
from domains.jobs.retry import RetryOptions
from domains.jobs.services import job_create, job_dispatch
from domains.jobs.tasks import JobTaskName

logger = logging.getLogger(__name__)


def product_sync_start(*, viewer: User, sku: str) -> Job:
    staff_required(viewer)
    sku = sku.strip()
    if not sku or len(sku) > 64:
        raise CatalogError("Enter a SKU.", code=CatalogErrorCode.INVALID_SKU, field="sku")
    with transaction.atomic(durable=True):
        job = job_create(kind=JobKind.PRODUCT_SYNC, owner=viewer, total=1)
        job_dispatch(job=job, task_name=JobTaskName.CATALOG_SYNC_PRODUCT, sku=sku)
    return job


def products_sync_all_start(*, viewer: User) -> Job:
    staff_required(viewer)
    with transaction.atomic(durable=True):
        job = job_create(kind=JobKind.PRODUCT_SYNC, owner=viewer)
        job_dispatch(job=job, task_name=JobTaskName.CATALOG_SYNC_ALL)
    return job


def product_sync_job_retry(original: Job, retry: Job, options: RetryOptions) -> None:
    """The same sync again (one SKU, or the whole catalog): it keeps no record of its own."""
    job_dispatch(job=retry, task_name=original.task_name, **original.task_kwargs)


def product_sync(*, sku: str) -> Product:
    """Fetch one product from the supplier and write it here (RetryLater passes through)."""
    try:
        data = supplier_product(sku)
    except RequestRejected as rejected:
        if rejected.status == 404:
            raise CatalogError(
                f"The supplier does not list {sku}.", code=CatalogErrorCode.NOT_LISTED, field="sku"
            ) from None
        raise
    return product_save_from_supplier(data, sku=sku)


def _text(data: dict, key: str, *, max_length: int | None, required: bool) -> str:
    value = data.get(key, "")
    if value is None and not required:
        value = ""
    if not isinstance(value, str):
        raise ValueError(f"{key} is not text")
    value = value.strip()
    if required and not value:
        raise ValueError(f"{key} is missing")
    if max_length is not None and len(value) > max_length:
        raise ValueError(f"{key} is longer than {max_length} characters")
    return value


def _price(value: Any) -> Decimal:
    field = Product._meta.get_field("price")
    try:
        price = Decimal(str(value)) if isinstance(value, str | int) else None
    except InvalidOperation:
        price = None
    if price is None or not price.is_finite() or price < 0:
        raise ValueError(f"price {value!r} is not an amount")
    if price >= Decimal(10) ** (field.max_digits - field.decimal_places):
        raise ValueError(f"price {value!r} is past what a price holds")
    if price != price.quantize(Decimal(1).scaleb(-field.decimal_places)):
        raise ValueError(f"price {value!r} is finer than a cent")
    return price


def supplier_product_fields(data: Any, *, sku: str) -> dict[str, Any]:
    """The product fields of the supplier's answer for `sku`; CatalogError when it is not
    one (the answer is outside input: checked here, not left to the database)."""
    try:
        if not isinstance(data, dict):
            raise ValueError("the answer is not an object")
        if data.get("sku") != sku:
            raise ValueError(f"the answer is for another SKU ({data.get('sku')!r})")
        return {
            "name": _text(data, "name", max_length=200, required=True),
            "description": _text(data, "description", max_length=None, required=False),
            "price": _price(data.get("price")),
            "category": _text(data, "category", max_length=120, required=False),
        }
    except ValueError as problem:
        logger.warning("product.malformed", extra={"sku": sku, "problem": str(problem)})
        raise CatalogError(
            f"The supplier's product {sku} is malformed: {problem}.",
            code=CatalogErrorCode.MALFORMED_PRODUCT,
            field="sku",
        ) from None


def product_save_from_supplier(data: Any, *, sku: str) -> Product:
    fields = supplier_product_fields(data, sku=sku)
    category_name = fields.pop("category")
    with transaction.atomic(durable=True):
        category = None
        if category_name:
            category, _ = Category.objects.get_or_create(
                slug=slugify(category_name), defaults={"name": category_name}
            )
        product, _ = Product.objects.update_or_create(
            sku=sku,
            defaults={**fields, "category": category, "external_synced_at": timezone.now()},
        )
        Inventory.objects.get_or_create(product=product)
    logger.info("product.synced", extra={"sku": product.sku})
    return product
