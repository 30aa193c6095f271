"""The sandbox: working stand-ins for the outside services, over real HTTP.

Each stand-in has its own module and URL prefix, so that they can grow independently.
"""

from django.urls import include, path

urlpatterns = [
    path("gateway/", include("domains.sandbox.gateway")),
    path("catalog/", include("domains.sandbox.catalog")),
    path("crm/", include("domains.sandbox.crm")),
    path("messaging/", include("domains.sandbox.messaging")),
]
