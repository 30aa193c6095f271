"""A Job keeps the trace it was created in, and whatever runs in its trace context later
(the watchdog sending its task again) joins that trace.

Spans come from a tracer provider of this test's own, into OpenTelemetry's in-memory
exporter; the global provider stays unset (as in every test process)."""

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from domains.infra.tracing import trace_continued
from domains.jobs.models import JobKind
from domains.jobs.services import job_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def spans(settings):
    settings.TRACING_ENABLED = True
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider.get_tracer("test"), exporter
    provider.shutdown()


def test_a_job_records_the_trace_it_is_created_in_and_a_later_send_joins_it(user, spans):
    tracer, exporter = spans
    with tracer.start_as_current_span("paymentProcess") as mutation:
        job = job_create(kind=JobKind.PAYMENT, owner=user)

    job.refresh_from_db()
    with trace_continued(job.trace_context), tracer.start_as_current_span("resend"):
        pass

    mutation_span, resend = sorted(exporter.get_finished_spans(), key=lambda s: s.name)
    assert job.trace_id == trace.format_trace_id(mutation.get_span_context().trace_id)
    assert resend.context.trace_id == mutation_span.context.trace_id
    assert resend.parent.span_id == mutation_span.context.span_id


def test_a_job_created_outside_a_trace_records_none(user, spans):
    job = job_create(kind=JobKind.PAYMENT, owner=user)

    assert (job.trace_id, job.trace_context) == ("", {})


def test_with_tracing_off_a_job_records_no_trace_even_inside_a_span(user, spans, settings):
    tracer, _ = spans
    settings.TRACING_ENABLED = False

    with tracer.start_as_current_span("paymentProcess"):
        job = job_create(kind=JobKind.PAYMENT, owner=user)

    assert (job.trace_id, job.trace_context) == ("", {})
