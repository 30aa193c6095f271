"""The process's Redis clients: one sync pool for workers and views, one async client per
event loop for the server. Connections carry a client name so that they can be counted."""

import asyncio
import weakref
from functools import cache

import redis
import redis.asyncio as aioredis
from django.conf import settings
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from domains.errors import ServiceUnavailable

_async_clients: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis]" = (
    weakref.WeakKeyDictionary()
)


@cache
def sync_client() -> redis.Redis:
    return redis.Redis.from_url(
        settings.REDIS_URL,
        decode_responses=True,
        socket_connect_timeout=settings.REDIS_CONNECT_TIMEOUT,
        socket_timeout=settings.REDIS_SOCKET_TIMEOUT,
        # One quick retry covers a pooled connection that a Redis restart closed; a Redis
        # that is down fails the call at once, instead of after seconds of backoff.
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.05), 1),
        health_check_interval=30,
        client_name="jobstream-sync",
    )


def require_redis() -> None:
    """Fail fast, before any write, when Redis (the broker as well) does not answer."""
    try:
        sync_client().ping()
    except (redis.ConnectionError, redis.TimeoutError) as error:
        raise ServiceUnavailable("redis") from error


def async_client() -> aioredis.Redis:
    """The server's async client for commands (pub/sub has its own connection).

    A blocking pool of one keeps the count of Redis connections per server process flat
    however many subscriptions read snapshots at once; each command is sub-millisecond.
    Kept per event loop, since an asyncio connection belongs to the loop that made it.
    """
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        pool = aioredis.BlockingConnectionPool.from_url(
            settings.REDIS_URL,
            max_connections=1,
            timeout=10,
            decode_responses=True,
            socket_connect_timeout=settings.REDIS_CONNECT_TIMEOUT,
            health_check_interval=30,
            client_name="jobstream-async",
        )
        client = _async_clients[loop] = aioredis.Redis(connection_pool=pool)
    return client
