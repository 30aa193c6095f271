"""Log formatters: text with a record's structured `extra` context as key=value pairs, or
(LOG_FORMAT=json) one JSON object a line, python-json-logger's, with the ids that tie the
line to its request, job and trace.

Every process logs through Django's LOGGING (config/settings.py): the server, runstack,
and the Celery worker and beat, whose banners become log records in JSON mode
(config/celery.py)."""

import logging
import logging.config
from datetime import UTC, datetime

from django.conf import settings
from pythonjsonlogger.json import JsonFormatter as BaseJsonFormatter

from config import tracing
from domains.infra.log_context import job_id_var, request_id_var

_STANDARD_ATTRS = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
_FIRST = ("time", "level", "logger", "message")


def _context(record: logging.LogRecord) -> dict:
    context = {k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS}
    if record.name.startswith("celery."):
        # Celery's task-outcome lines pass their whole context as `data`: it repeats the
        # message and holds the traceback as text even for outcomes logged without one
        # (ignored, rejected, raised expected); exc_info carries it when one is wanted.
        context.pop("data", None)
    return context


def json_logs() -> bool:
    return settings.LOG_FORMAT == "json"


def configure(config: dict) -> None:
    """Django's LOGGING_CONFIG: the LOGGING dict, and Python's warnings (Celery's about
    running as root among them) as records of `py.warnings`, in the log's format."""
    logging.config.dictConfig(config)
    logging.captureWarnings(True)


class ContextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = _context(record)
        if context:
            line += " " + " ".join(f"{k}={v!r}" for k, v in sorted(context.items()))
        return line


class JsonFormatter(BaseJsonFormatter):
    """`time` (UTC, ISO 8601), `level`, `logger`, `message`; then, where known, `request_id`
    (the HTTP request's, as echoed in X-Request-ID), `job_id` (the line's own, or the job
    the task runs), `trace_id` and `span_id` (with tracing on); then the record's other
    context, and `exc_info` with the traceback. A value JSON cannot hold is written as its
    str (python-json-logger's encoder; datetimes, enums, exceptions as they read)."""

    def __init__(self, *args, **kwargs):
        super().__init__(
            ["asctime", "levelname", "name", "message"],
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")

    def add_fields(self, log_data: dict, record: logging.LogRecord, message_dict: dict) -> None:
        super().add_fields(log_data, record, message_dict)
        if record.name.startswith("celery."):
            log_data.pop("data", None)  # see _context
        log_data.pop("color_message", None)  # uvicorn's message again, with terminal colours
        ids = {}
        if (request_id := request_id_var.get()) != "-":
            ids["request_id"] = request_id
        if (job_id := log_data.pop("job_id", None) or job_id_var.get()) is not None:
            ids["job_id"] = job_id
        if trace := tracing.log_ids():
            ids["trace_id"], ids["span_id"] = trace
        rest = {key: value for key, value in log_data.items() if key not in ids}
        log_data.clear()
        log_data.update((key, rest.pop(key)) for key in _FIRST if key in rest)
        log_data.update(ids)
        log_data.update(rest)


class LogStream:
    """A text stream whose lines become INFO records of `logger`: what a management
    command writes to its stdout, in the log's format (runstack hands it to the commands
    it calls, and writes its own lines through it)."""

    def __init__(self, logger: logging.Logger):
        self.logger = logger
        self._partial = ""

    def write(self, text: str) -> int:
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            if line.strip():
                self.logger.info(line.strip())
        return len(text)

    def flush(self) -> None:
        if self._partial.strip():
            self.logger.info(self._partial.strip())
        self._partial = ""
