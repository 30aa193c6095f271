"""The GraphQL endpoint over HTTP, through Django (sessions, CSRF, bearer tokens)."""

import logging

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.response import HttpResponseBase
from django.shortcuts import render
from django.utils.decorators import method_decorator
from django.views.csrf import csrf_failure as django_csrf_failure
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

    def render_graphql_ide(self, request: HttpRequest) -> HttpResponse:
        """GraphiQL from this project's static files (no CDN), with a fetcher that sends the
        current CSRF cookie on every request."""
        return render(request, "graphiql.html", {"csrf_cookie_name": settings.CSRF_COOKIE_NAME})


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """CSRF_FAILURE_VIEW: on the GraphQL endpoint a refused request gets a GraphQL-shaped
    JSON error a client (GraphiQL included) can show and act on; elsewhere Django's page."""
    match = request.resolver_match
    if match is None or match.url_name != "graphql":
        return django_csrf_failure(request, reason)
    logger.info("graphql.csrf_failed", extra={"reason": reason})
    message = (
        f"CSRF check failed ({reason.rstrip('.')}). A browser session sends the current "
        f"value of the {settings.CSRF_COOKIE_NAME} cookie in the X-CSRFToken header (it "
        "changes when you sign in); an API client sends Authorization: Bearer <token> instead."
    )
    return JsonResponse(
        {"data": None, "errors": [{"message": message, "extensions": {"code": "CSRF_FAILED"}}]},
        status=403,
    )
