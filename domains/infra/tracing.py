"""The current trace, for a record that must carry it on: a Job keeps the trace it was
started in, so that its task, even when sent again later from another process (the
watchdog), continues that trace rather than starting one of its own.

Tracing is set up by config/tracing.py; while it is off these answer "no trace" without
importing OpenTelemetry at all.
"""

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from django.conf import settings


def trace_current() -> tuple[str, dict[str, str]]:
    """The current trace's id (32 hex digits) and its W3C context as carrier headers
    (`traceparent`, `tracestate`); ("", {}) outside a trace."""
    if not settings.TRACING_ENABLED:
        return "", {}
    from opentelemetry import propagate, trace

    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return "", {}
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return trace.format_trace_id(span_context.trace_id), carrier


@contextmanager
def trace_continued(carrier: Mapping[str, str]) -> Iterator[None]:
    """Run the block in the trace that `carrier` (from trace_current) names: what it sends
    or records joins that trace."""
    if not settings.TRACING_ENABLED or not carrier:
        yield
        return
    from opentelemetry import context, propagate

    token = context.attach(propagate.extract(carrier))
    try:
        yield
    finally:
        context.detach(token)


def trace_annotate(**attributes: str | int) -> None:
    """Name what the current span works on (`job_id=...`), for finding it by that."""
    if not settings.TRACING_ENABLED:
        return
    from opentelemetry import trace

    trace.get_current_span().set_attributes(
        {f"jobstream.{key}": value for key, value in attributes.items()}
    )
