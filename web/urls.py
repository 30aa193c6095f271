"""File downloads, each served to its owner or staff only (a session or a bearer token)."""

from django.urls import path

from web.images import image_download
from web.reports import report_download

urlpatterns = [
    path("reports/<int:report_id>/", report_download, name="report-download"),
    path("images/<int:image_id>/<slug:variant>/", image_download, name="image-download"),
]
