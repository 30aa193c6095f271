"""A formatter that appends a record's structured `extra` context as key=value pairs."""

import logging

_STANDARD_ATTRS = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class ContextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = {k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS}
        if context:
            line += " " + " ".join(f"{k}={v!r}" for k, v in sorted(context.items()))
        return line
