from django.conf import settings
from django.contrib import admin
from django.urls import include, path

from config.console import console
from config.health import healthz, readyz
from config.metrics import metrics
from schema import schema
from schema.views import GraphQLHTTPView

urlpatterns = [
    path("graphql/", GraphQLHTTPView.as_view(schema=schema), name="graphql"),
    path("console/", console, name="console"),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics, name="metrics"),
    path("files/", include("web.urls")),
    path("admin/", admin.site.urls),
]
if settings.SANDBOX_ENABLED:
    urlpatterns.append(path("sandbox/", include("domains.sandbox.urls")))
