"""Schema extensions: limits that refuse hostile documents before any resolver runs,
masking of unexpected errors (logged with the request id, never shown), and the coded
"try again" answer when a service the request needs is unavailable."""

import logging
from typing import Any

import strawberry
from django.conf import settings
from graphql import GraphQLError
from strawberry.extensions import (
    DisableIntrospection,
    FieldExtension,
    MaskErrors,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    ValidationCache,
)

from domains.accounts.middleware import request_id_var
from domains.availability import unavailable_service
from domains.errors import ServiceUnavailable
from domains.redis import require_redis

logger = logging.getLogger("schema.errors")

# Errors raised on purpose for the client: validation, limits, permission refusals.
_SHOWN = (PermissionError,)


def is_unexpected(error: GraphQLError) -> bool:
    """True for a server fault (masked and logged with its traceback); False for a client's
    mistake or a refusal meant for it."""
    original = error.original_error
    if original is None:
        return False  # a document error: syntax, validation, a limit
    return not (
        isinstance(original, _SHOWN)
        or type(original).__name__ in {"DjangoNoPermission", "PermissionDenied"}
    )


def _should_mask(error: GraphQLError) -> bool:
    if not is_unexpected(error):
        return False
    original = error.original_error
    logger.error(
        "graphql.unexpected_error",
        extra={"request_id": request_id_var.get(), "path": error.path},
        exc_info=(type(original), original, original.__traceback__),
    )
    return True


class ErrorLoggingSchema(strawberry.Schema):
    """Logs each error once. Strawberry's default logs every error at ERROR with its
    traceback; here a client's mistake is one INFO line without one, and a server fault is
    left to the masking extension (ERROR, traceback, request id)."""

    def process_errors(self, errors: list[GraphQLError], execution_context=None) -> None:
        for error in errors:
            if is_unexpected(error):
                continue
            logger.info(
                "graphql.client_error",
                extra={
                    "request_id": request_id_var.get(),
                    "operation": getattr(execution_context, "operation_name", None),
                    "path": error.path,
                    "code": (error.extensions or {}).get("code"),
                    "error": error.message,
                },
            )


class RequestIdMaskErrors(MaskErrors):
    """Masks unexpected errors; an unavailable service is answered as SERVICE_UNAVAILABLE
    with HTTP 503 instead, since the client can simply try again."""

    def __init__(self):
        super().__init__(should_mask_error=_should_mask, error_message="Internal server error.")

    def _process_errors(self, errors: list[GraphQLError]) -> list[GraphQLError]:
        processed = []
        for error in errors:
            service = unavailable_service(error.original_error)
            if service is None:
                processed.append(error)
                continue
            logger.warning(
                "graphql.service_unavailable",
                extra={"request_id": request_id_var.get(), "path": error.path, "service": service},
            )
            self._answer_unavailable()
            processed.append(
                GraphQLError(
                    ServiceUnavailable.message,
                    nodes=error.nodes,
                    source=error.source,
                    positions=error.positions,
                    path=error.path,
                    original_error=None,
                    extensions={
                        "code": ServiceUnavailable.code,
                        "requestId": request_id_var.get(),
                    },
                )
            )
        return super()._process_errors(processed)

    def _answer_unavailable(self) -> None:
        """HTTP 503 with Retry-After, where the transport has a response (not websockets)."""
        response = getattr(self.execution_context.context, "response", None)
        if response is not None:
            response.status_code = 503
            response["Retry-After"] = "1"

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        return GraphQLError(
            self.error_message,
            nodes=error.nodes,
            source=error.source,
            positions=error.positions,
            path=error.path,
            original_error=None,
            extensions={"code": "INTERNAL_SERVER_ERROR", "requestId": request_id_var.get()},
        )


def schema_extensions() -> list:
    extensions = [
        MaxTokensLimiter(max_token_count=settings.GRAPHQL_MAX_TOKENS),
        ParserCache(maxsize=256),
        QueryDepthLimiter(max_depth=settings.GRAPHQL_MAX_DEPTH),
        MaxAliasesLimiter(max_alias_count=settings.GRAPHQL_MAX_ALIASES),
        ValidationCache(maxsize=256),
        RequestIdMaskErrors(),
    ]
    if not settings.GRAPHQL_INTROSPECTION:
        extensions.append(DisableIntrospection())
    return extensions


class RequiresRedis(FieldExtension):
    """On a mutation that starts a job: check that Redis (the broker) answers before the
    resolver writes anything, so that an outage leaves no record whose task cannot be
    sent; the client gets SERVICE_UNAVAILABLE at once and tries again."""

    def resolve(self, next_, source: Any, info, **kwargs: Any) -> Any:
        require_redis()
        return next_(source, info, **kwargs)
