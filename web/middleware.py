"""HTTP authentication by bearer token, and a request id for every request."""

import logging
import uuid

from django.conf import settings
from django.http import JsonResponse

from domains.accounts.services import token_authenticate, token_viewer
from domains.infra.log_context import request_id_var

logger = logging.getLogger(__name__)


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


_PROVIDER_STAND_INS = "/sandbox/"
# Paths that read the bearer token themselves: the sandbox's stand-ins check their
# providers' own keys, /metrics a scraper's token (or a staff user's).
_OWN_TOKEN_PATHS = (_PROVIDER_STAND_INS, "/metrics")


def _token_refused(message: str) -> JsonResponse:
    response = JsonResponse(
        {"errors": [{"message": message, "extensions": {"code": "INVALID_TOKEN"}}]}, status=401
    )
    response["WWW-Authenticate"] = 'Bearer error="invalid_token"'
    return response  # logged once, at WARNING, by django.request


class BearerTokenMiddleware:
    """`Authorization: Bearer <token>` sets request.user (a job token's viewer for a job
    token, see domains/accounts/viewers.py) and request.auth_token_id, which a stream
    watches: revoking the token ends it; a token that is not valid is a 401.

    A client that sent credentials wants to be someone: answering it as anonymous would
    hide an expired token behind empty results.

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
        request.auth_token_id = None
        if request.path.startswith(_OWN_TOKEN_PATHS):
            header = ""
        if header and (scheme.lower() != "bearer" or not token.strip()):
            return _token_refused("Send the token as `Authorization: Bearer <token>`.")
        if header:
            row = token_authenticate(token.strip())
            if row is None:
                return _token_refused(
                    "Invalid, expired or revoked token: create a new one with tokenCreate, "
                    "or send no Authorization header to act anonymously."
                )
            request.user, request.auth_token_id = token_viewer(row), row.pk
            request.authenticated_by_token = True
            request._dont_enforce_csrf_checks = True
        elif not request.COOKIES.get(settings.SESSION_COOKIE_NAME) and not request.COOKIES.get(
            settings.CSRF_COOKIE_NAME
        ):
            request._dont_enforce_csrf_checks = True
        return self.get_response(request)
