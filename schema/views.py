"""The GraphQL endpoint over HTTP, through Django (sessions, CSRF, bearer tokens): JSON
and uploads, and subscriptions streamed over the same URL (graphql-sse, Apollo multipart)."""

import json
import logging
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from cross_web import HTTPException
from django.conf import settings
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.response import HttpResponseBase
from django.shortcuts import render
from django.utils.decorators import method_decorator
from django.views.csrf import csrf_failure as django_csrf_failure
from django.views.decorators.csrf import ensure_csrf_cookie
from graphql import OperationType as DocumentOperation
from strawberry.django.context import StrawberryDjangoContext
from strawberry.django.views import AsyncGraphQLView
from strawberry.exceptions import MissingQueryError
from strawberry.file_uploads.utils import replace_placeholders_with_files
from strawberry.http import GraphQLRequestData
from strawberry.http.streaming import MultipartSubscriptionTransport, SSETransport
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.subscriptions import GRAPHQL_SSE_PROTOCOL, MULTIPART_SUBSCRIPTION_PROTOCOL
from strawberry.types.graphql import OperationType

from domains.accounts.viewers import credential_holder_id
from schema import streams
from schema.frames import encode_frame, shared_message
from schema.limits import operation_type
from schema.persisted import PersistedQueryRefused, persisted_document
from web.body_limit import body_limit, body_too_large

logger = logging.getLogger(__name__)

JSON = "application/json"
UNAUTHENTICATED = "UNAUTHENTICATED"
GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"
_STREAM_REQUIRED = (
    "A subscription is streamed: open it over a websocket on /graphql/ (graphql-transport-ws), "
    "or send it with Accept: text/event-stream (graphql-sse) or Accept: multipart/mixed; "
    'subscriptionSpec="1.0" (Apollo). GraphiQL sends subscriptions over its websocket: run '
    "it again."
)
_JSON_REQUIRED = (
    "Queries and mutations are answered as JSON: send them with Accept: application/json "
    "(or application/graphql-response+json); text/event-stream and multipart/mixed carry "
    "subscriptions."
)
# strawberry's own refusals carry no code: one by their status.
_CODE_BY_STATUS = {
    400: "BAD_REQUEST",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    406: "NOT_ACCEPTABLE",
    413: "BODY_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
}


class Refused(HTTPException):
    """A request answered with a 4xx and a coded error saying what to send instead."""

    def __init__(self, status: int, message: str, code: str, headers: dict[str, str] | None = None):
        super().__init__(status, message)
        self.code = code
        self.headers = headers or {}


def _accepted(accept: str) -> dict[str, float]:
    """Each media range of an Accept header with its quality."""
    weights: dict[str, float] = {}
    for part in accept.split(","):
        media, *params = (piece.strip() for piece in part.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if media:
            weights[media.lower()] = max(weights.get(media.lower(), 0.0), quality)
    return weights


def response_media_type(accept: str) -> str:
    """GraphQL over HTTP's negotiation: application/graphql-response+json when the client
    accepts it at least as well as application/json, else application/json (also when it
    names neither, or sends no Accept)."""
    weights = _accepted(accept)
    as_json = max(
        weights.get(JSON, 0.0), weights.get("application/*", 0.0), weights.get("*/*", 0.0)
    )
    as_response = weights.get(GRAPHQL_RESPONSE_JSON, 0.0)
    return GRAPHQL_RESPONSE_JSON if as_response > 0 and as_response >= as_json else JSON


def _accepts_json(accept: str) -> bool:
    weights = _accepted(accept)
    return any(
        weights.get(media, 0.0) > 0
        for media in (JSON, GRAPHQL_RESPONSE_JSON, "application/*", "*/*")
    )


def coded_error(
    status: int,
    message: str,
    code: str,
    *,
    media_type: str = JSON,
    headers: dict[str, str] | None = None,
) -> JsonResponse:
    """A response without `data`: the request was not executed, and the error says why."""
    return JsonResponse(
        {"errors": [{"message": message, "extensions": {"code": code}}]},
        status=status,
        content_type=f"{media_type}; charset=utf-8" if media_type != JSON else JSON,
        headers=headers,
    )


def _is_request_error(result) -> bool:
    """Whether the operation was refused before it executed (parse, validation, variable
    coercion, a limit): those errors have no path, a field's error always has one."""
    return (
        bool(result.errors) and result.data is None and all(e.path is None for e in result.errors)
    )


@dataclass
class HTTPContext(StrawberryDjangoContext):
    """The request's context, and where a stream keeps its place: `resume_after` is the
    client's Last-Event-ID, `sent_seq` the seq of the event being sent (its SSE id)."""

    resume_after: int | None = None
    sent_seq: int | None = None


def _last_event_id(request: HttpRequest) -> int | None:
    value = request.headers.get("Last-Event-ID", "").strip()
    return int(value) if value.isdigit() else None


class SubscriptionsOnly:
    """Streams carry subscriptions: queries and mutations run their synchronous Django code
    in a plain POST (or GET), where the view runs it on the request's thread."""

    def allowed_operation_types(self, allowed_operation_types):
        return (OperationType.SUBSCRIPTION,)


class ResumableSSE(SubscriptionsOnly, SSETransport):
    """graphql-sse (distinct connections) whose events carry the job event's seq as their
    SSE id, so that a reconnecting EventSource sends Last-Event-ID and resumes there."""

    heartbeat_interval = settings.GRAPHQL_STREAM_HEARTBEAT

    def __init__(self):
        super().__init__(heartbeat_interval=self.heartbeat_interval)

    def encode_event_with_id(self, response, encode_json, seq: int | None) -> str:
        event = self.encode_next(response, encode_json)
        return event if seq is None else f"id: {seq}\r\n{event}"


class MultipartSubscriptions(MultipartSubscriptionTransport):
    heartbeat_interval = settings.GRAPHQL_STREAM_HEARTBEAT

    def encode_event_with_id(self, response, encode_json, seq: int | None) -> str:
        return self.encode_next(response, encode_json)  # a part has no id


@method_decorator(ensure_csrf_cookie, name="dispatch")  # GraphiQL's POSTs carry the token
class GraphQLHTTPView(AsyncGraphQLView):
    """GraphQL over HTTP: JSON, the multipart request spec for uploads, and subscriptions
    streamed as graphql-sse or Apollo's multipart subscriptions.

    Cookie sessions are CSRF-checked (CsrfViewMiddleware; bearer-token clients are exempt,
    see BearerTokenMiddleware). A body declared over GRAPHQL_MAX_BODY_BYTES is refused
    unread here; under ASGI, GraphQLBodyLimit refuses it before Django spools it.

    The view is async so that a stream costs no thread while it waits for events; queries
    and mutations run as the sync view ran them, on the request's own thread (with the
    database connection DatabaseConnectionFirst took), through sync_to_async.
    """

    multipart_uploads_enabled = True
    stream_transport_classes_by_protocol = {
        MULTIPART_SUBSCRIPTION_PROTOCOL: MultipartSubscriptions,
        GRAPHQL_SSE_PROTOCOL: ResumableSSE,
    }

    def __init__(self, **kwargs):
        kwargs.setdefault("graphql_ide", "graphiql" if settings.GRAPHQL_GRAPHIQL else None)
        kwargs.setdefault("multipart_uploads_enabled", True)
        kwargs.setdefault(
            "subscription_protocols", (GRAPHQL_SSE_PROTOCOL, MULTIPART_SUBSCRIPTION_PROTOCOL)
        )
        super().__init__(**kwargs)

    async def dispatch(self, request: HttpRequest, *args, **kwargs) -> HttpResponseBase:
        self.media_type = response_media_type(request.headers.get("Accept", ""))
        try:
            self._check_body(request)
            return await self.run(request=request)  # a 4xx: django.request logs
        except Refused as refused:
            return self._refusal(refused.status_code, refused.reason, refused.code, refused.headers)
        except HTTPException as refused:  # strawberry's own
            code = _CODE_BY_STATUS.get(refused.status_code, "BAD_REQUEST")
            return self._refusal(refused.status_code, refused.reason, code)
        except RequestDataTooBig:
            return body_too_large(request.content_type or "")
        except SuspiciousOperation as refused:  # too many fields or files in a form
            return self._refusal(400, str(refused), "BAD_REQUEST")
        except PersistedQueryRefused as refused:
            logger.info("graphql.persisted_query_refused", extra={"code": refused.code})
            # Apollo's clients read the not-found answer from a 200, then send the document.
            if refused.code == "PERSISTED_QUERY_NOT_FOUND":
                return JsonResponse({"data": None, "errors": [refused.error]})
            return self._refusal(
                refused.status, refused.error["message"], refused.code, refused.headers
            )

    def _refusal(
        self, status: int, message: str, code: str, headers: dict[str, str] | None = None
    ) -> JsonResponse:
        return coded_error(status, message, code, media_type=self.media_type, headers=headers)

    def _check_body(self, request: HttpRequest) -> None:
        """A body over its limit is a 413 unread; a JSON body must be UTF-8."""
        declared = request.META.get("CONTENT_LENGTH")
        content_type = request.META.get("CONTENT_TYPE", "")
        if declared and declared.isdigit() and int(declared) > body_limit(content_type):
            raise RequestDataTooBig
        if request.method == "POST" and request.content_type == "application/json":
            try:
                request.body.decode("utf-8")
            except UnicodeDecodeError:
                raise Refused(
                    400, "The body is not UTF-8: send UTF-8 encoded JSON.", "BAD_REQUEST"
                ) from None

    def should_render_graphql_ide(self, request) -> bool:
        # A GET with only a persisted query's hash is an operation, not a visit.
        return request.query_params.get("extensions") is None and super().should_render_graphql_ide(
            request
        )

    async def parse_http_body(self, request):
        content_type = (request.content_type or "").split(";")[0].strip().lower()
        if request.method == "POST" and content_type not in (JSON, "multipart/form-data"):
            raise Refused(
                415,
                "Send the operation as Content-Type: application/json (or multipart/form-data "
                "for a file upload).",
                "UNSUPPORTED_MEDIA_TYPE",
            )
        data = await super().parse_http_body(request)
        if isinstance(data, GraphQLRequestData):  # batches are off (the schema's default)
            if not isinstance(data.operation_name, str | None):
                raise Refused(400, "`operationName` must be a string, or null.", "BAD_REQUEST")
            data.query = await persisted_document(
                data.query, data.extensions, client=self._client_key
            )
        return data

    async def _client_key(self) -> str:
        """Whose budget a persisted query's registration draws on (read only for one)."""
        request = self.context.request
        return await sync_to_async(streams.viewer_key)(
            request.user, request.META.get("REMOTE_ADDR")
        )

    async def execute_operation(
        self, request, request_adapter, request_data, context, root_value, sub_response
    ):
        """Each operation on the transport that carries it: subscriptions on a stream (and
        only for a viewer), queries and mutations as JSON; anything else a coded 4xx."""
        query = request_data.query or ""
        # A plain request is parsed here only when it might be a subscription.
        kind = (
            operation_type(query, request_data.operation_name)
            if request_data.protocol != "http" or "subscription" in query
            else None
        )
        accept = request.headers.get("Accept", "")
        if request_data.protocol != "http" and kind not in (None, DocumentOperation.SUBSCRIPTION):
            if not _accepts_json(accept):
                raise Refused(406, _JSON_REQUIRED, "NOT_ACCEPTABLE")
            request_data.protocol = "http"  # the client accepts JSON too: answered so
        elif request_data.protocol == "http" and kind == DocumentOperation.SUBSCRIPTION:
            raise Refused(400, _STREAM_REQUIRED, "STREAM_REQUIRED")
        if request_data.protocol != "http" and not (
            await sync_to_async(lambda: credential_holder_id(request.user) is not None)()
        ):
            raise Refused(
                401,
                "Authentication required: send Authorization: Bearer <token>, or a session cookie.",
                UNAUTHENTICATED,
                {"WWW-Authenticate": "Bearer"},
            )
        return await super().execute_operation(
            request, request_adapter, request_data, context, root_value, sub_response
        )

    async def process_result(self, request, result):
        """application/graphql-response+json, as the GraphQL-over-HTTP spec has it: an
        operation refused before it executed is a 400 without `data`."""
        response = await super().process_result(request, result)
        if self.media_type == GRAPHQL_RESPONSE_JSON and _is_request_error(result):
            response.pop("data", None)
            if not self.context.response.status_code:  # a 503 stays a 503
                self.context.response.status_code = 400
        return response

    def create_response(self, response_data, sub_response):
        response = super().create_response(response_data, sub_response)
        if self.media_type == GRAPHQL_RESPONSE_JSON:
            response["Content-Type"] = f"{GRAPHQL_RESPONSE_JSON}; charset=utf-8"
        return response

    async def get_context(self, request: HttpRequest, response: HttpResponse) -> HTTPContext:
        # Django makes a view instance per request: the context is this request's.
        self.context = HTTPContext(
            request=request, response=response, resume_after=_last_event_id(request)
        )
        return self.context

    async def execute_single(
        self, request, request_adapter, sub_response, context, root_value, request_data
    ):
        allowed = OperationType.from_http(request_adapter.method)
        try:
            return await sync_to_async(self.schema.execute_sync)(
                request_data.query,
                root_value=root_value,
                variable_values=request_data.variables,
                context_value=context,
                operation_name=request_data.operation_name,
                allowed_operation_types=allowed,
                operation_extensions=request_data.extensions,
            )
        except CannotGetOperationTypeError as error:
            raise Refused(
                400,
                f"{error.as_http_error_reason()}: send one operation, or name the one to run "
                "in `operationName`.",
                "OPERATION_NOT_FOUND",
            ) from error
        except InvalidOperationTypeError as error:
            raise Refused(
                405,
                f"{error.as_http_error_reason(request_adapter.method)}: send them as a POST.",
                "METHOD_NOT_ALLOWED",
                {"Allow": "POST"},
            ) from error
        except MissingQueryError as error:
            raise Refused(
                400,
                'No GraphQL query found in the request: send {"query": "..."}.',
                "BAD_REQUEST",
            ) from error

    def _stream_result(self, request, result, transport):
        # Held to a websocket's rules: the viewer's cap, and access that ends the stream.
        # (execute_operation refused anonymous streams, reading request.user on its thread.)
        key = streams.viewer_key(request.user, request.META.get("REMOTE_ADDR"))
        credentials = streams.credentials_of(
            request.user, getattr(request, "auth_token_id", None), request.session
        )
        framing = self._framing(request, transport)
        return lambda: streams.guarded_stream(
            result, key=key, credentials=credentials, framing=framing
        )

    def _framing(self, request, transport) -> streams.Framing:
        context = self.context
        # The rest of this stream's responses beside their data (the document's cost), from
        # its first error-free one: what a frame the hub writes carries too.
        rest: dict[str, Any] = {}

        def framed(response: dict, seq: int | None) -> bytes:
            return shared_message(
                response,
                (transport.protocol, seq),
                lambda: transport.encode_event_with_id(
                    response, self.encode_json_string, seq
                ).encode(),
                self.encode_json_string,
            )

        async def message(value, seq: int | None) -> bytes:
            response, _ = await self._process_stream_result(request, value, [])
            if not rest and response.get("data") is not None and not response.get("errors"):
                rest["response"] = {k: v for k, v in response.items() if k != "data"}
            return framed(response, seq)

        def hub_message(frame: list, seq: int | None) -> bytes | None:
            if not rest:
                return None
            return framed({"data": frame[0], **rest["response"]}, seq)

        async def event(value) -> bytes:
            # The seq of the event being sent (the resolver noted it), its SSE id; taken,
            # so that a result without an event (an error) is not labelled with it.
            seq, context.sent_seq = context.sent_seq, None
            return await message(value, seq)

        return streams.Framing(
            next=event,
            coded=lambda value: message(value, None),
            complete=transport.encode_complete().encode(),
            heartbeat=transport.heartbeat_message(self.encode_json_string).encode(),
            heartbeat_interval=transport.heartbeat_interval,
            heartbeat_first=transport.send_initial_heartbeat,
            shared=hub_message,
        )

    async def create_streaming_response(self, request, stream, sub_response, headers):
        # A stream lives for minutes on no thread: it gives its pooled connection back now
        # (the subscription's own reads take one for their moment, see schema/jobs.py).
        await sync_to_async(_give_back_connection)()
        return await super().create_streaming_response(request, stream, sub_response, headers)

    def encode_json(self, data: object) -> str:
        return encode_frame(data, super().encode_json)  # a shared frame's data once

    def decode_json(self, data: str | bytes) -> object:
        """The request's JSON object: a 400 saying what to send for anything else."""
        try:
            decoded = json.loads(data)
        except RecursionError:
            raise HTTPException(400, "The JSON is nested too deeply to read.") from None
        if not isinstance(decoded, dict):
            raise HTTPException(
                400,
                'Send one JSON object: {"query": "...", "variables": {...}, '
                '"operationName": "..."}.',
            )
        return decoded

    async def parse_multipart(self, request) -> dict[str, Any]:
        """The GraphQL multipart request spec, with a 400 for a `map` that points nowhere."""
        form = await request.get_form_data()
        operations = self.parse_json(form.form.get("operations", "{}"))
        files_map = self.parse_json(form.form.get("map", "{}"))
        for field, paths in files_map.items():
            if field not in form.files:
                raise HTTPException(400, f"The map names file {field!r}, which is not sent.")
            if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
                raise HTTPException(
                    400, f'The map entry {field!r} must be a list of paths: ["variables.file"].'
                )
        try:
            return replace_placeholders_with_files(operations, files_map, form.files)
        except (KeyError, IndexError, ValueError, TypeError):
            raise HTTPException(
                400,
                "A map path points nowhere in operations: each must name a null variable, "
                'e.g. {"0": ["variables.file"]} with "variables": {"file": null}.',
            ) from None

    async def render_graphql_ide(self, request: HttpRequest) -> HttpResponse:
        """GraphiQL from this project's static files (no CDN), with a fetcher that sends the
        current CSRF cookie on every request."""
        return await sync_to_async(render)(
            request, "graphiql.html", {"csrf_cookie_name": settings.CSRF_COOKIE_NAME}
        )


def _give_back_connection() -> None:
    connection.close()  # looked up on the request's thread, where the connection lives


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
