"""OpenTelemetry traces, set up in this one place for every process that runs the service's
code: the ASGI server (config/asgi.py), `manage.py runserver` and each Celery worker
process (worker_process_init, config/celery.py).

Off unless OTEL_EXPORTER_OTLP_ENDPOINT names a collector: spans then go there by OTLP
(OTEL_EXPORTER_OTLP_PROTOCOL `http/protobuf`, the default, or `grpc`; the exporter reads the
other standard OTEL_EXPORTER_OTLP_* variables itself). OTEL_TRACES_FILE appends each
finished span to that file as one JSON line (OpenTelemetry's own span JSON), written as it
ends: the tests read the spans of the server and its workers there, and a developer can
look without a collector. With neither set nothing is imported or installed: no cost.

What is traced: each HTTP request (Django), each GraphQL operation with its parsing,
validation and root fields (Strawberry, schema/tracing.py), each task sent and run (Celery:
the context travels in the message headers, so a task's span joins the trace of the
mutation that sent it; a task sent again later continues it from the Job, see
domains/infra/tracing.py), each Redis command (redis-py) and each outside-service call (requests).

A request's own trace context (`traceparent`, `tracestate`, `baggage`) is continued only
when its caller is known (ClientTraceContext): anyone else's request starts a new trace,
linked to the one it named.
"""

import hmac
import os
from collections.abc import Sequence

from django.conf import settings

# Probes and scrapes: a span each would be noise, at a cost.
UNTRACED_URLS = "healthz,readyz,metrics,static"

_enabled = False


def setup(role: str = "server") -> None:
    """Install the tracer provider, its exporters and the instrumentations (once)."""
    global _enabled
    if _enabled or not settings.TRACING_ENABLED:
        return
    from opentelemetry import trace
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.django import DjangoInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor
    from opentelemetry.instrumentation.requests import RequestsInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    name = settings.OTEL_SERVICE_NAME or ("jobstream" if role == "server" else f"jobstream-{role}")
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    if settings.OTEL_TRACES_FILE:
        provider.add_span_processor(
            SimpleSpanProcessor(JsonLinesSpanExporter(settings.OTEL_TRACES_FILE))
        )
    if settings.OTEL_EXPORTER_OTLP_ENDPOINT:
        provider.add_span_processor(BatchSpanProcessor(_otlp_exporter()))
    trace.set_tracer_provider(provider)
    if role == "server":  # before Django builds its middleware chain
        # The request's span starts once the caller is known, so that whether the trace
        # context it sent is continued can depend on who it is (ClientTraceContext).
        middleware = list(settings.MIDDLEWARE)
        position = middleware.index(_CALLER_KNOWN_AFTER) + 1
        middleware.insert(position, "config.tracing.ClientTraceContext")
        settings.MIDDLEWARE = middleware
        DjangoInstrumentor().instrument(
            excluded_urls=UNTRACED_URLS,
            middleware_position=position + 1,
            request_hook=_link_client_trace,
        )
    CeleryInstrumentor().instrument()
    RedisInstrumentor().instrument()
    RequestsInstrumentor().instrument()
    _enabled = True


_CALLER_KNOWN_AFTER = "web.middleware.BearerTokenMiddleware"
_TRACE_HEADERS = ("traceparent", "tracestate", "baggage")


class ClientTraceContext:
    """Continues a request's trace context only for a caller that is known: a signed-in
    user (token or session), or this installation's own processes calling its sandbox
    stand-ins with their keys. Anyone else's trace headers are taken off the request before
    its span starts: the request starts a new trace, linked to the context it named (see
    _link_client_trace). Continued, an anonymous caller would choose the trace id of the
    job it starts (the Job keeps it), or switch the trace's recording off (the sampled flag).
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        meta = request.META
        sent = {
            name: meta[f"HTTP_{name.upper()}"]
            for name in _TRACE_HEADERS
            if f"HTTP_{name.upper()}" in meta
        }
        if sent and not _caller_known(request):
            request.client_trace_link = _span_context(sent)
            for name in _TRACE_HEADERS:
                meta.pop(f"HTTP_{name.upper()}", None)
            scope = getattr(request, "scope", None)  # ASGI: the span reads the headers here
            if scope is not None:
                scope["headers"] = [
                    (key, value)
                    for key, value in scope["headers"]
                    if key.decode("latin-1").lower() not in _TRACE_HEADERS
                ]
        return self.get_response(request)


def _caller_known(request) -> bool:
    if request.user.is_authenticated:
        return True
    if not request.path.startswith("/sandbox/"):
        return False
    sent = request.headers.get("Authorization", "").encode()
    keys = (
        settings.SANDBOX_GATEWAY_API_KEY,
        settings.SANDBOX_CATALOG_API_KEY,
        settings.SANDBOX_CRM_API_KEY,
        settings.SANDBOX_MESSAGING_API_KEY,
    )
    return any(hmac.compare_digest(sent, f"Bearer {key}".encode()) for key in keys)


def _span_context(headers: dict[str, str]):
    """The span context a request's trace headers name, or None."""
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    context = trace.get_current_span(TraceContextTextMapPropagator().extract(headers))
    span_context = context.get_span_context()
    return span_context if span_context.is_valid else None


def _link_client_trace(span, request) -> None:
    """The request's span, in a trace of its own, links to the context its caller sent."""
    link = getattr(request, "client_trace_link", None)
    if link is not None:
        span.add_link(link, {"jobstream.link": "client trace context, not continued"})


def _otlp_exporter():
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    return OTLPSpanExporter()


def log_ids() -> tuple[str, str] | None:
    """The current trace's and span's ids (hex) for a log line; None outside a trace."""
    if not _enabled:
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return trace.format_trace_id(context.trace_id), trace.format_span_id(context.span_id)


class JsonLinesSpanExporter:
    """Each finished span as one JSON line appended to `path`. The processes of a stack
    share the file: one O_APPEND write per batch keeps their lines whole."""

    def __init__(self, path: str):
        self.path = path

    def export(self, spans: Sequence):
        from opentelemetry.sdk.trace.export import SpanExportResult

        data = "".join(span.to_json(indent=None) + "\n" for span in spans).encode()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def shutdown(self) -> None:
        pass
