"""Log formatters: text with a record's structured `extra` context as key=value pairs, or
(LOG_FORMAT=json) one JSON object a line with the ids that tie the line to its request,
job and trace."""

import json
import logging
from datetime import UTC, datetime

from config import tracing
from domains.log_context import job_id_var, request_id_var

_STANDARD_ATTRS = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def _context(record: logging.LogRecord) -> dict:
    context = {k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS}
    if record.name.startswith("celery."):
        # Celery's task-outcome lines pass their whole context as `data`: it repeats the
        # message and holds the traceback as text even for outcomes logged without one
        # (ignored, rejected, raised expected); exc_info carries it when one is wanted.
        context.pop("data", None)
    return context


class ContextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = _context(record)
        if context:
            line += " " + " ".join(f"{k}={v!r}" for k, v in sorted(context.items()))
        return line


class JsonFormatter(logging.Formatter):
    """`time` (UTC, ISO 8601), `level`, `logger`, `message`; then, where known, `request_id`
    (the HTTP request's, as echoed in X-Request-ID), `job_id` (the line's own, or the job
    the task runs), `trace_id` and `span_id` (with tracing on); then the record's other
    context, and `exc_info` with the traceback. A value JSON cannot hold is written as its
    repr."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if (request_id := request_id_var.get()) != "-":
            line["request_id"] = request_id
        context = _context(record)
        if (job_id := context.pop("job_id", None) or job_id_var.get()) is not None:
            line["job_id"] = job_id
        if ids := tracing.log_ids():
            line["trace_id"], line["span_id"] = ids
        line.update((key, value) for key, value in context.items() if key not in line)
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        elif record.stack_info:
            line["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=repr)
