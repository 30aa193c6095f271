"""Schema extensions: limits that refuse hostile documents before any resolver runs, a code
on every error a client sees, masking of unexpected errors (logged with the request id,
never shown), and the coded "try again" answer when a service the request needs is
unavailable."""

import logging
import re
from contextlib import nullcontext, suppress
from functools import cached_property, partial
from typing import Any

import strawberry
from django.conf import settings
from graphql import GraphQLError
from strawberry.extensions import (
    DisableIntrospection,
    FieldExtension,
    MaskErrors,
    MaxTokensLimiter,
    ParserCache,
    SchemaExtension,
    ValidationCache,
)
from strawberry.extensions.runner import SchemaExtensionsRunner
from strawberry.relay.types import GlobalIDValueError
from strawberry.utils.await_maybe import await_maybe

from domains.errors import DomainError, ServiceUnavailable
from domains.infra.availability import unavailable_service
from domains.infra.log_context import request_id_var
from domains.infra.redis import require_redis
from schema.limits import DocumentLimits
from schema.scopes import JobTokenScope

logger = logging.getLogger("schema.errors")

INTERNAL_ERROR_CODE = "INTERNAL_SERVER_ERROR"
# Errors raised on purpose for the client: permission refusals.
_PERMISSION_ERRORS = ("DjangoNoPermission", "PermissionDenied")
_SUGGESTION = re.compile(r" Did you mean [^?]*\?")


def _is_permission_error(error: Exception) -> bool:
    return isinstance(error, PermissionError) or type(error).__name__ in _PERMISSION_ERRORS


def _is_client_mistake(error: GraphQLError) -> bool:
    """Whether the client caused this error (and can fix it) rather than the server."""
    original = error.original_error
    return (
        original is None  # a document error: syntax, validation, a limit, a coercion
        or isinstance(original, DomainError | GlobalIDValueError)
        or _is_permission_error(original)
        or isinstance(original, GraphQLError)
    )


def _client_code(error: GraphQLError) -> str:
    original = error.original_error
    if isinstance(original, DomainError):
        return original.code
    if isinstance(original, GlobalIDValueError):
        return "INVALID_ID"
    if original is not None and _is_permission_error(original):
        return "PERMISSION_DENIED"
    if error.message.startswith("Syntax Error"):
        return "GRAPHQL_PARSE_FAILED"
    if error.path is None:
        return "GRAPHQL_VALIDATION_FAILED"  # refused before execution: nothing ran
    return "BAD_USER_INPUT"


def error_log(error: GraphQLError) -> None:
    """One log line per error: a client mistake at INFO, an unavailable service at WARNING,
    a server fault at ERROR with its traceback."""
    context = {"request_id": request_id_var.get(), "path": error.path}
    service = unavailable_service(error.original_error)
    if service is not None:
        logger.warning("graphql.service_unavailable", extra={**context, "service": service})
        return
    if _is_client_mistake(error):
        logger.info(
            "graphql.client_error",
            extra={**context, "code": _client_code(error), "error": error.message},
        )
        return
    original = error.original_error
    logger.error(
        "graphql.unexpected_error",
        extra=context,
        exc_info=(type(original), original, original.__traceback__),
    )


class ErrorLoggingSchema(strawberry.Schema):
    """Logs each error once, through error_log: strawberry's default logs every error at
    ERROR with its traceback, client mistakes included."""

    def process_errors(self, errors: list[GraphQLError], execution_context=None) -> None:
        for error in errors:
            error_log(error)

    def create_extensions_runner(self, execution_context, extensions):
        return _ExtensionsRunner(execution_context=execution_context, extensions=extensions)


class _ExtensionsRunner(SchemaExtensionsRunner):
    """Runs the hooks a subscription runs at every frame, for every subscriber, only where
    they have something to do: results from the extensions that have any, and the
    stream-result hooks (ClientErrors' masking, the only ones here) for a frame with errors.
    """

    def on_stream_result(self, result):
        if _error_free(result) and all(isinstance(e, MaskErrors) for e in self._stream_hooked):
            return nullcontext()
        return super().on_stream_result(result)

    @cached_property
    def _stream_hooked(self) -> list:
        default = SchemaExtension.on_stream_result
        return [e for e in self.extensions if type(e).on_stream_result is not default]

    async def get_extensions_results(self, ctx) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for extension in self._with_results:
            data.update(await await_maybe(extension.get_results()))
        data.update(ctx.extensions_results)
        return data

    @cached_property
    def _with_results(self) -> list:
        default = SchemaExtension.get_results
        return [e for e in self.extensions if type(e).get_results is not default]


def _error_free(result: object) -> bool:
    """Whether a streamed result carries no errors, nor any part of it (@defer/@stream)."""
    parts = [result, *(getattr(result, "incremental", None) or ())]
    parts += getattr(result, "completed", None) or ()
    return not any(getattr(part, "errors", None) for part in parts)


class ClientErrors(MaskErrors):
    """Every error a client sees carries `extensions.code`.

    A client mistake keeps its message (a domain error its own code; with introspection
    off, without graphql-core's "Did you mean ...?" hints, which would spell out the
    schema); anything else is masked as "Internal server error." with the request id.
    """

    def __init__(self):
        super().__init__(
            should_mask_error=lambda error: not _is_client_mistake(error),
            error_message="Internal server error.",
        )

    def _process_errors(self, errors: list[GraphQLError]) -> list[GraphQLError]:
        processed = []
        for error in errors:
            if unavailable_service(error.original_error) is not None:
                processed.append(self._unavailable(error))
            elif self.should_mask_error(error):
                processed.append(self.anonymise_error(error))
            else:
                processed.append(self._coded(error))
        return processed

    def _unavailable(self, error: GraphQLError) -> GraphQLError:
        """SERVICE_UNAVAILABLE, with HTTP 503 and Retry-After where the transport has a
        response (not websockets): the client may simply try again."""
        response = getattr(self.execution_context.context, "response", None)
        if response is not None:
            response.status_code = 503
            response["Retry-After"] = "1"
        return GraphQLError(
            ServiceUnavailable.message,
            nodes=error.nodes,
            source=error.source,
            positions=error.positions,
            path=error.path,
            original_error=None,
            extensions={"code": ServiceUnavailable.code, "requestId": request_id_var.get()},
        )

    def _coded(self, error: GraphQLError) -> GraphQLError:
        message = error.message
        if isinstance(error.original_error, DomainError):
            message = error.original_error.message
        elif isinstance(error.original_error, GlobalIDValueError):
            message = (
                "That is not an id this API gave: send an object's `id` as a query or "
                "mutation returned it (an opaque string such as 'Sm9iOjE=')."
            )
        if not settings.GRAPHQL_INTROSPECTION:
            message = _SUGGESTION.sub("", message)
        extensions = dict(error.extensions or {})
        extensions.setdefault("code", _client_code(error))
        if isinstance(error.original_error, DomainError) and error.original_error.field:
            extensions.setdefault("field", error.original_error.field)
        return GraphQLError(
            message,
            nodes=error.nodes,
            source=error.source,
            positions=error.positions,
            path=error.path,
            original_error=None,
            extensions=extensions,
        )

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        return GraphQLError(
            self.error_message,
            nodes=error.nodes,
            source=error.source,
            positions=error.positions,
            path=error.path,
            original_error=None,
            extensions={"code": INTERNAL_ERROR_CODE, "requestId": request_id_var.get()},
        )


def schema_extensions() -> list:
    """Factories: strawberry builds a fresh extension for each operation.

    DocumentLimits measures the document before ValidationCache validates it, so a
    document that would be costly even to validate is refused first.
    """
    extensions = [
        partial(MaxTokensLimiter, max_token_count=settings.GRAPHQL_MAX_TOKENS),
        partial(_ParserCacheReportingErrors, maxsize=256),
        document_limits,
        JobTokenScope,  # refuses a job token's mutations before they are validated
        partial(_ValidationCacheAfterLimits, maxsize=256),
        ClientErrors,
    ]
    if not settings.GRAPHQL_INTROSPECTION:
        extensions.append(DisableIntrospection)
    if settings.TRACING_ENABLED:  # outermost: its span holds the whole operation
        from schema.tracing import OperationTracing

        extensions.insert(0, OperationTracing)
    return extensions


def document_limits() -> DocumentLimits:
    return DocumentLimits(
        max_depth=settings.GRAPHQL_MAX_DEPTH,
        max_aliases=settings.GRAPHQL_MAX_ALIASES,
        max_cost=settings.GRAPHQL_MAX_COST,
        max_page=settings.GRAPHQL_MAX_PAGE_SIZE,
    )


class _ParserCacheReportingErrors(ParserCache):
    """ParserCache parses as the parse hook starts, where a syntax error escaped
    strawberry's handling of parse errors: it reached the client without the code
    ClientErrors gives. A document that does not parse is left to strawberry's own parse,
    which reports the error as the operation's."""

    def on_parse(self):
        context = self.execution_context
        with suppress(GraphQLError):
            context.graphql_document = self.cached_parse_document(
                context.query, **context.parse_options
            )
        yield


class _ValidationCacheAfterLimits(ValidationCache):
    """ValidationCache that leaves a document DocumentLimits refused unvalidated."""

    def on_validate(self):
        if self.execution_context.pre_execution_errors is not None:
            yield
            return
        yield from super().on_validate()


class RequiresRedis(FieldExtension):
    """On a mutation that starts a job: check that Redis (the broker) answers before the
    resolver writes anything, so that an outage leaves no record whose task cannot be
    sent; the client gets SERVICE_UNAVAILABLE at once and tries again."""

    def resolve(self, next_, source: Any, info, **kwargs: Any) -> Any:
        require_redis()
        return next_(source, info, **kwargs)
