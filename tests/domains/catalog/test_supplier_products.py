"""What the supplier answers is outside input: a product that is not one is refused with
a code (a catalog sync counts it and goes on), and nothing of it is written."""

from decimal import Decimal

import pytest

from domains.catalog.errors import CatalogError
from domains.catalog.models import Category, Product
from domains.catalog.services import product_save_from_supplier

GOOD = {"sku": "SUP-00001", "name": "Lamp", "description": "", "price": "12.50", "category": "Home"}


@pytest.mark.parametrize(
    "answer",
    [
        {**GOOD, "price": "N/A"},
        {**GOOD, "price": "NaN"},
        {**GOOD, "price": "-1.00"},
        {**GOOD, "price": "1.005"},
        {**GOOD, "price": "1e12"},
        {**GOOD, "price": "1e30"},
        {**GOOD, "price": "0.00000000000000000000000000001"},
        {**GOOD, "price": None},
        {**GOOD, "name": ""},
        {**GOOD, "name": "x" * 201},
        {**GOOD, "name": ["Lamp"]},
        {**GOOD, "description": {"a": 1}},
        {**GOOD, "category": "c" * 121},
        {**GOOD, "sku": "SUP-00002"},
        {k: v for k, v in GOOD.items() if k != "name"},
        ["not", "an", "object"],
    ],
    ids=[
        "price-text",
        "price-nan",
        "price-negative",
        "price-past-cents",
        "price-past-column",
        "price-past-precision",
        "price-below-precision",
        "price-null",
        "name-empty",
        "name-too-long",
        "name-not-text",
        "description-not-text",
        "category-too-long",
        "another-sku",
        "name-missing",
        "not-an-object",
    ],
)
def test_a_malformed_supplier_product_is_refused_and_nothing_written(db, answer):
    with pytest.raises(CatalogError) as refused:
        product_save_from_supplier(answer, sku=GOOD["sku"])

    assert (refused.value.code, refused.value.field) == ("MALFORMED_PRODUCT", "sku")
    assert (Product.objects.count(), Category.objects.count()) == (0, 0)


def test_a_well_formed_supplier_product_is_saved(db):
    product = product_save_from_supplier(GOOD, sku=GOOD["sku"])

    assert (product.sku, product.name, product.price) == ("SUP-00001", "Lamp", Decimal("12.50"))
    assert product.category.name == "Home"
    assert product.inventory.available == 0
