"""The Celery app; its settings live in config.settings under the CELERY_ prefix."""

import math
import os
from datetime import datetime

from celery import Celery
from celery.backends.redis import RedisBackend
from celery.signals import worker_init, worker_process_init
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
