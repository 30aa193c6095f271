"""File downloads for images: served to the owner or staff only."""

urlpatterns: list = []
