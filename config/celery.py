"""The Celery app; its settings live in config.settings under the CELERY_ prefix."""

import logging
import math
import os
from datetime import datetime
from functools import cached_property

from celery import Celery
from celery.apps.beat import Beat as CeleryBeat
from celery.apps.worker import Worker as CeleryWorker
from celery.backends.redis import RedisBackend
from celery.signals import beat_init, worker_init, worker_process_init
from celery.utils.time import maybe_iso8601, subtract_datetimes

from config import tracing

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")


def whole_seconds(countdown: float | None, eta: datetime | str | None, now: datetime):
    """A delay (countdown, or an eta turned into one) in whole seconds, rounded up, and the
    eta that remains (None once it is a countdown).

    RabbitMQ's native delayed delivery (quorum queues) counts whole seconds: Celery
    truncates a delay to int, so one under a second raises in kombu ("countdown must be a
    positive number") and the retry that sent it is rejected and lost; rounding up keeps
    "never sooner than the service said". One rule on every broker, so that a retry waits
    the same on Redis."""
    if eta is not None and countdown is None:
        eta = maybe_iso8601(eta)
        left = subtract_datetimes(eta, now).total_seconds()
        if left <= 0:
            return None, eta  # due: sent at once, as Celery does
        countdown, eta = left, None
    if countdown is not None and countdown > 0:
        countdown = math.ceil(countdown)
    return countdown, eta


class JobstreamCelery(Celery):
    # The worker and beat programs `celery worker` and `celery beat` run, with their
    # banners as log records when the log is JSON (below).
    @cached_property
    def Worker(self):
        return self.subclass_with_self(Worker)

    @cached_property
    def Beat(self):
        return self.subclass_with_self(Beat)

    def send_task(self, name, args=None, kwargs=None, countdown=None, eta=None, **options):
        # Every publish passes here: apply_async, delay, a retry, a canvas, send_task.
        countdown, eta = whole_seconds(countdown, eta, self.now())
        return super().send_task(name, args, kwargs, countdown=countdown, eta=eta, **options)


class ResultBackend(RedisBackend):
    """Celery's Redis result backend, subscribed to a task's result channel only when
    someone waits for the result (`AsyncResult.get`, which subscribes and then reads what
    is stored), not as each task is sent. A web process sends every job's task and never
    waits: the job's row and its progress events carry the outcome. Sent from a request,
    the eager subscription cost a SUBSCRIBE and an UNSUBSCRIBE (as the unread result was
    dropped), and on the request's own thread (Django runs each ASGI request's sync code on
    a thread of its own, and Celery keeps a backend per thread) a pub/sub connection opened
    for that one send: about 1.5 ms of the mutation's time to its task's start. Workers never subscribed at
    send (Celery knows a worker must not wait), so this changes nothing there."""

    def on_task_call(self, producer, task_id):
        pass


logger = logging.getLogger(__name__)


def _log_setup() -> None:
    """Django's LOGGING, now: a worker warns (e.g. about running as root) before Celery sets
    its logging up, which Django's setup does later again."""
    from django.conf import settings
    from django.utils.log import configure_logging

    configure_logging(settings.LOGGING_CONFIG, settings.LOGGING)


def _json_logs() -> bool:
    from config.logging import json_logs

    return json_logs()


class Worker(CeleryWorker):
    """`celery worker`. Its banner (hostname, broker, queues, tasks) is printed on stdout
    beside the log; with LOG_FORMAT=json it is one log record holding the same facts, so
    that every line is JSON."""

    def on_before_init(self, quiet=False, **kwargs):
        _log_setup()
        super().on_before_init(quiet=quiet, **kwargs)

    def emit_banner(self):
        if not _json_logs():
            return super().emit_banner()
        logger.info(
            "celery.worker.starting",
            extra={
                "hostname": self.hostname,
                "broker": self.app.connection().as_uri(),
                "results": self.app.backend.as_uri(),
                "concurrency": self.concurrency,
                "pool": str(getattr(self.pool_cls, "__module__", self.pool_cls)).split(".")[-1],
                "queues": sorted(self.app.amqp.queues.consume_from or self.app.amqp.queues),
                "tasks": sorted(name for name in self.app.tasks if not name.startswith("celery.")),
            },
        )


class Beat(CeleryBeat):
    """`celery beat`; with LOG_FORMAT=json quiet (its banner printed nothing the log lacks:
    `_beat_started` logs the same facts as one record)."""

    def __init__(self, *args, quiet=False, **kwargs):
        super().__init__(*args, quiet=quiet or _json_logs(), **kwargs)


@beat_init.connect
def _beat_started(sender=None, **kwargs) -> None:
    if sender is None or not _json_logs():
        return
    scheduler = sender.get_scheduler(lazy=True)
    logger.info(
        "celery.beat.starting",
        extra={
            "broker": sender.app.connection().as_uri(),
            "scheduler": type(scheduler).__name__,
            "schedule": sender.schedule_filename,
            "max_interval": scheduler.max_interval,
        },
    )


app = JobstreamCelery("jobstream")
app.config_from_object("django.conf:settings", namespace="CELERY")


def tasks_past_visibility_timeout(celery_app: Celery) -> list[str]:
    """Tasks whose hard limit reaches the broker's visibility timeout: one still running
    would be handed to a second worker."""
    visibility = (celery_app.conf.broker_transport_options or {}).get("visibility_timeout")
    if visibility is None:
        return []
    default = celery_app.conf.task_time_limit or 0
    return sorted(
        name
        for name, task in celery_app.tasks.items()
        if (task.time_limit or default) >= visibility
    )


@worker_init.connect
def _refuse_a_short_visibility_timeout(sender=None, **kwargs) -> None:
    celery_app = getattr(sender, "app", app)
    celery_app.loader.import_default_modules()
    if too_long := tasks_past_visibility_timeout(celery_app):
        raise RuntimeError(
            "The broker's visibility timeout is not above these tasks' time limits: "
            + ", ".join(too_long)
        )


@worker_process_init.connect
def _trace_this_worker_process(**kwargs) -> None:
    # In each pool process, after the fork: an exporter's thread does not survive one.
    tracing.setup("worker")
