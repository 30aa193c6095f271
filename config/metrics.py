"""/metrics: the Prometheus text format, every process's figures added up, plus what is
read at scrape time (each Celery queue's depth, each outside service's breaker state).

Staff (the Django session or a token) or the configured scrape token only.
"""

import hmac
import logging

from amqp.exceptions import AMQPError, NotFound
from celery import current_app
from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse
from kombu.exceptions import OperationalError
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily
from redis import RedisError

from domains.accounts.services import user_for_token
from domains.infra.redis import sync_client
from domains.integrations.guards import Breaker, BreakerState
from domains.jobs.dispatcher import jobs_waiting_counts
from domains.jobs.models import JobKind

logger = logging.getLogger(__name__)

# The services behind a breaker (their clients' names), reported closed while unseen.
BREAKER_SERVICES = ("gateway", "catalog", "crm", "sms", "push")
BREAKER_VALUES = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}
# kombu's Redis transport keeps a queue's prioritised messages in lists of their own.
_PRIORITY_SEP = "\x06\x16"


class RedisStateCollector:
    def collect(self):
        depth = GaugeMetricFamily(
            "jobstream_queue_depth", "Messages waiting in each Celery queue.", labels=["queue"]
        )
        breakers = GaugeMetricFamily(
            "jobstream_breaker_state",
            "Each outside service's circuit breaker: 0 closed, 1 half-open, 2 open.",
            labels=["service"],
        )
        try:
            for queue, waiting in _queue_depths():
                depth.add_metric([queue], waiting)
            breaker = Breaker()
            for service in BREAKER_SERVICES:
                breakers.add_metric([service], BREAKER_VALUES[breaker.state(service)])
        except (RedisError, OperationalError, AMQPError, OSError):
            logger.warning("metrics.broker_or_redis_unavailable")
            return
        yield depth
        yield breakers


class JobsWaitingCollector:
    """Jobs waiting in the database for a slot (domains/jobs/dispatcher.py): the queue that
    matters for fairness, which the broker's depths no longer show."""

    def collect(self):
        waiting = GaugeMetricFamily(
            "jobstream_jobs_waiting",
            "Jobs waiting for the dispatcher to give them a slot, by kind and lane.",
            labels=["kind", "lane"],
        )
        try:
            counts = jobs_waiting_counts()
        except DatabaseError:
            logger.warning("metrics.database_unavailable")
            return
        for lane in settings.JOB_LANE_QUEUES:
            for kind in JobKind.values:
                waiting.add_metric([kind, lane], counts.get((kind, lane), 0))
        yield waiting


def _queue_depths() -> list[tuple[str, int]]:
    """Messages waiting in each Celery queue, as the broker counts them."""
    queues = sorted(set(current_app.amqp.queues) | set(settings.JOB_LANE_QUEUES.values()))
    if settings.BROKER_IS_AMQP:
        # A passive declare answers the queue's ready messages (a missing queue: none yet).
        with current_app.connection_for_read() as connection:
            return [(queue, _amqp_ready(connection, queue)) for queue in queues]
    client = sync_client()
    steps = (current_app.conf.broker_transport_options or {}).get("priority_steps", [0, 3, 6, 9])
    return [
        (queue, sum(client.llen(name) for name in _redis_lists(queue, steps))) for queue in queues
    ]


def _amqp_ready(connection, queue: str) -> int:
    try:
        with connection.channel() as channel:
            return channel.queue_declare(queue, passive=True).message_count
    except NotFound:  # the broker closes that channel only
        return 0


def _redis_lists(queue: str, steps: list[int]) -> list[str]:
    return [queue] + [f"{queue}{_PRIORITY_SEP}{step}" for step in steps if step]


def _allowed(request: HttpRequest) -> bool | None:
    """True for staff or the scrape token; False for someone else; None for anonymous."""
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        token = header[7:].strip()
        if settings.METRICS_TOKEN and hmac.compare_digest(token, settings.METRICS_TOKEN):
            return True
        user = user_for_token(token)
        return bool(user and user.is_staff)
    if request.user.is_authenticated:
        return request.user.is_staff
    return None


def metrics(request: HttpRequest) -> HttpResponse:
    if not settings.METRICS_ENABLED:
        return HttpResponse("Metrics are off (METRICS_ENABLED=0).\n", status=404)
    allowed = _allowed(request)
    if not allowed:
        status = 401 if allowed is None else 403
        response = HttpResponse("Staff or the scrape token only.\n", status=status)
        if status == 401:
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    registry.register(RedisStateCollector())
    registry.register(JobsWaitingCollector())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
