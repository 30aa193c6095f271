"""File downloads for images: served to the owner or staff only."""

from django.urls import path

from domains.media.views import image_download

urlpatterns = [
    path("<int:image_id>/<slug:variant>/", image_download, name="image-download"),
]
