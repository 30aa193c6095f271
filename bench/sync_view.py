"""The sync GraphQL view the async one replaced, mounted beside it for bench/transports.py
only: a server started with DJANGO_SETTINGS_MODULE=bench.sync_view serves both,
/graphql/ (async) and /graphql-sync/ (Strawberry's sync GraphQLView, the same schema)."""

from config import settings as _production

# The same settings, one URL more.
globals().update({name: value for name, value in vars(_production).items() if name.isupper()})
ROOT_URLCONF = "bench.sync_view"


def _urlpatterns():
    from django.urls import path
    from strawberry.django.views import GraphQLView

    from config.urls import urlpatterns
    from schema import schema

    return [path("graphql-sync/", GraphQLView.as_view(schema=schema)), *urlpatterns]


def __getattr__(name: str):
    # Read by Django's URL resolver once settings are configured, not at settings import.
    if name == "urlpatterns":
        return _urlpatterns()
    raise AttributeError(name)
