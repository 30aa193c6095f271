"""The Celery app; its settings live in config.settings under the CELERY_ prefix."""

import os

from celery import Celery
from celery.backends.redis import RedisBackend
from celery.signals import worker_init, worker_process_init

from config import tracing

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")


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


app = Celery("jobstream")
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
