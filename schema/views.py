"""The GraphQL endpoint over HTTP, through Django (sessions, CSRF, bearer tokens)."""

import logging

from django.conf import settings
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.utils.decorators import method_decorator
from django.views.decorators.csrf import ensure_csrf_cookie
from strawberry.django.views import GraphQLView

from config.body_limit import body_too_large

logger = logging.getLogger(__name__)


@method_decorator(ensure_csrf_cookie, name="dispatch")  # GraphiQL's POSTs carry the token
class GraphQLHTTPView(GraphQLView):
    """GraphQL over HTTP: JSON, and the multipart request spec for uploads.

    Cookie sessions are CSRF-checked (CsrfViewMiddleware; bearer-token clients are exempt,
    see BearerTokenMiddleware). A body declared over GRAPHQL_MAX_BODY_BYTES is refused
    unread here; under ASGI, GraphQLBodyLimit refuses it before Django spools it.
    """

    multipart_uploads_enabled = True

    def __init__(self, **kwargs):
        kwargs.setdefault("graphql_ide", "graphiql" if settings.GRAPHQL_GRAPHIQL else None)
        kwargs.setdefault("multipart_uploads_enabled", True)
        super().__init__(**kwargs)

    def dispatch(self, request: HttpRequest, *args, **kwargs) -> HttpResponseBase:
        declared = request.META.get("CONTENT_LENGTH")
        if declared and declared.isdigit() and int(declared) > settings.GRAPHQL_MAX_BODY_BYTES:
            return body_too_large()
        return super().dispatch(request, *args, **kwargs)
