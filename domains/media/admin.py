from django.contrib import admin

from domains.media.models import Image, Thumbnail


class ThumbnailInline(admin.TabularInline):
    model = Thumbnail
    extra = 0
    fields = ("size_name", "width", "height", "byte_size", "file")
    readonly_fields = fields


@admin.register(Image)
class ImageAdmin(admin.ModelAdmin):
    list_display = ("id", "owner", "status", "format", "width", "height", "created_at")
    list_filter = ("status", "format")
    search_fields = ("owner__email",)
    raw_id_fields = ("owner", "job")
    readonly_fields = ("key",)
    inlines = (ThumbnailInline,)
