"""Strawberry's OpenTelemetry spans, added to the schema only while tracing is on
(schema.extensions.schema_extensions; config/tracing.py sets tracing up)."""

from strawberry.extensions.tracing import OpenTelemetryExtensionSync


class OperationTracing(OpenTelemetryExtensionSync):
    """A span for each operation, its parsing and its validation, and one for each root
    field (the mutation or query a client called), inside the HTTP request's span.

    The sync variant: queries and mutations execute synchronously (schema.views runs
    `execute_sync` on the request's thread), where the async variant's awaitable resolver
    hook is refused; on a subscription, which executes async, this one hands the awaitable
    on. Nested fields get no span: Strawberry's extension would open one for each field of
    each row (a page of 100 jobs, over a thousand), costing more than the query itself."""

    def resolve(self, _next, root, info, *args, **kwargs):
        if info.path.prev is not None:
            return _next(root, info, *args, **kwargs)
        return super().resolve(_next, root, info, *args, **kwargs)
