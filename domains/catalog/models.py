from django.db import models
from django.db.models import Q


class Category(models.Model):
    name = models.CharField(max_length=120, unique=True)
    slug = models.SlugField(max_length=120, unique=True)

    class Meta:
        verbose_name_plural = "categories"
        ordering = ("name",)

    def __str__(self) -> str:
        return self.name


class Product(models.Model):
    sku = models.CharField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    price = models.DecimalField(max_digits=12, decimal_places=2)
    category = models.ForeignKey(
        Category, null=True, blank=True, on_delete=models.SET_NULL, related_name="products"
    )
    external_synced_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("sku",)

    def __str__(self) -> str:
        return f"{self.sku} {self.name}"


class Inventory(models.Model):
    """Stock of one product: `available` can be sold, `reserved` is held by open checkouts.

    Changed only by conditional UPDATEs (see domains.orders.services), never read-then-write;
    the check constraints make an oversell impossible even for a faulty caller.
    """

    product = models.OneToOneField(Product, on_delete=models.CASCADE, related_name="inventory")
    available = models.PositiveIntegerField(default=0)
    reserved = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "inventories"
        constraints = [
            models.CheckConstraint(condition=Q(available__gte=0), name="inventory_available_gte_0"),
            models.CheckConstraint(condition=Q(reserved__gte=0), name="inventory_reserved_gte_0"),
        ]

    def __str__(self) -> str:
        return f"{self.product_id}: {self.available} available, {self.reserved} reserved"
