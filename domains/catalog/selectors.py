from django.db.models import QuerySet

from domains.catalog.models import Product


def product_list() -> QuerySet[Product]:
    """The catalog is public: every product, to anyone."""
    return Product.objects.all()
