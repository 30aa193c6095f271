"""HTTP authentication by bearer token, and a request id for every request."""

import logging
import uuid
from contextvars import ContextVar

from django.conf import settings
from django.contrib.auth.models import AnonymousUser

from domains.accounts.services import user_for_token

logger = logging.getLogger(__name__)
request_id_var: ContextVar[str] = ContextVar("request_id", default="-")


class RequestIdMiddleware:
    """Tags the request (and its log lines) with an id, echoed in X-Request-ID."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request_id = request.headers.get("X-Request-ID", "")[:64] or uuid.uuid4().hex
        request.request_id = request_id
        token = request_id_var.set(request_id)
        try:
            response = self.get_response(request)
        finally:
            request_id_var.reset(token)
        response["X-Request-ID"] = request_id
        return response


class BearerTokenMiddleware:
    """`Authorization: Bearer <token>` sets request.user.

    CSRF guards ambient credentials, which only cookies are: a request with a bearer token,
    or with no cookies at all, cannot ride on a victim's session, so it is not checked.
    Every request that carries cookies is (CsrfViewMiddleware runs after this one).
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        request.authenticated_by_token = False
        if scheme.lower() == "bearer" and token.strip():
            user = user_for_token(token.strip())
            request.user = user or AnonymousUser()
            request.authenticated_by_token = user is not None
            request._dont_enforce_csrf_checks = True
        elif not request.COOKIES.get(settings.SESSION_COOKIE_NAME) and not request.COOKIES.get(
            settings.CSRF_COOKIE_NAME
        ):
            request._dont_enforce_csrf_checks = True
        return self.get_response(request)
