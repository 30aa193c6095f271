"""Catalog: syncing products from the supplier's catalog API."""

import logging
from decimal import Decimal
from enum import StrEnum

from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from domains.accounts.models import User
from domains.catalog.client import supplier_product
from domains.catalog.models import Category, Inventory, Product
from domains.errors import DomainError, PermissionDenied
from domains.integrations.client import RequestRejected
from domains.jobs.models import Job, JobKind
from domains.jobs.services import job_create, job_dispatch

logger = logging.getLogger(__name__)


class CatalogErrorCode(StrEnum):
    INVALID_SKU = "INVALID_SKU"
    NOT_LISTED = "NOT_LISTED"


class CatalogError(DomainError):
    pass


def _require_staff(viewer: User) -> None:
    if not viewer.is_staff:
        raise PermissionDenied("Only staff can sync the catalog.")


def product_sync_start(*, viewer: User, sku: str) -> Job:
    _require_staff(viewer)
    sku = sku.strip()
    if not sku or len(sku) > 64:
        raise CatalogError("Enter a SKU.", code=CatalogErrorCode.INVALID_SKU, field="sku")
    with transaction.atomic(durable=True):
        job = job_create(kind=JobKind.PRODUCT_SYNC, owner=viewer, total=1)
        job_dispatch(job=job, task_name="catalog.sync_product", sku=sku)
    return job


def products_sync_all_start(*, viewer: User) -> Job:
    _require_staff(viewer)
    with transaction.atomic(durable=True):
        job = job_create(kind=JobKind.PRODUCT_SYNC, owner=viewer)
        job_dispatch(job=job, task_name="catalog.sync_all")
    return job


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
    return product_save_from_supplier(data)


def product_save_from_supplier(data: dict) -> Product:
    with transaction.atomic(durable=True):
        category = None
        if data.get("category"):
            category, _ = Category.objects.get_or_create(
                slug=slugify(data["category"]), defaults={"name": data["category"]}
            )
        product, _ = Product.objects.update_or_create(
            sku=data["sku"],
            defaults={
                "name": data["name"],
                "description": data.get("description", ""),
                "price": Decimal(data["price"]),
                "category": category,
                "external_synced_at": timezone.now(),
            },
        )
        Inventory.objects.get_or_create(product=product)
    logger.info("product.synced", extra={"sku": product.sku})
    return product
