"""A formatter that appends a record's structured `extra` context as key=value pairs."""

import logging

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
