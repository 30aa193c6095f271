from django.contrib import admin

from domains.catalog.models import Category, Inventory, Product


@admin.register(Category)
class CategoryAdmin(admin.ModelAdmin):
    list_display = ("name", "slug")
    prepopulated_fields = {"slug": ("name",)}


class InventoryInline(admin.StackedInline):
    model = Inventory
    can_delete = False
    fields = ("available", "reserved")
    readonly_fields = ("reserved",)  # only checkouts move stock into and out of reservation


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    list_display = ("sku", "name", "price", "category", "external_synced_at")
    list_filter = ("category",)
    search_fields = ("sku", "name")
    list_select_related = ("category",)
    inlines = (InventoryInline,)


@admin.register(Inventory)
class InventoryAdmin(admin.ModelAdmin):
    list_display = ("product", "available", "reserved", "updated_at")
    search_fields = ("product__sku", "product__name")
    raw_id_fields = ("product",)
    readonly_fields = ("reserved",)
    list_select_related = ("product",)
