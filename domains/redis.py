"""The process's Redis clients: one sync pool for workers and views, one async client per
event loop for the server. Connections carry a client name so that they can be counted."""

import asyncio
import weakref
from functools import cache

import redis
import redis.asyncio as aioredis
from django.conf import settings

_async_clients: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis]" = (
    weakref.WeakKeyDictionary()
)


@cache
def sync_client() -> redis.Redis:
    return redis.Redis.from_url(
        settings.REDIS_URL,
        decode_responses=True,
        socket_connect_timeout=5,
        socket_timeout=10,
        health_check_interval=30,
        client_name="jobstream-sync",
    )


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
            socket_connect_timeout=5,
            health_check_interval=30,
            client_name="jobstream-async",
        )
        client = _async_clients[loop] = aioredis.Redis(connection_pool=pool)
    return client
