"""The process's Redis clients: one sync pool for workers and views, one async client per
event loop for the server, and the progress path's clients (the same, or a Redis Cluster's).
Connections carry a client name so that they can be counted."""

import asyncio
import weakref
from dataclasses import dataclass
from functools import cache
from typing import Any
from urllib.parse import urlsplit

import redis
import redis.asyncio as aioredis
from django.conf import settings
from redis.backoff import ExponentialBackoff
from redis.crc import key_slot
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


# --- the progress path: a job's snapshot, log and channels --------------------------------
# On a single Redis they live beside everything else. With REDIS_CLUSTER_URL they live on
# a Redis Cluster, published with SPUBLISH (sharded pub/sub: a message travels only within
# its shard, where PUBLISH would cross every node of the cluster). The broker, the results,
# the throttles and the other shared counters stay on REDIS_URL.
def progress_on_cluster() -> bool:
    return bool(settings.REDIS_CLUSTER_URL)


def progress_client() -> redis.Redis | redis.RedisCluster:
    """The sync client of the progress path (workers, services)."""
    return cluster_client() if progress_on_cluster() else sync_client()


@cache
def cluster_client() -> redis.RedisCluster:
    return redis.RedisCluster(
        startup_nodes=[redis.cluster.ClusterNode(*seed) for seed in cluster_seeds()],
        decode_responses=True,
        socket_connect_timeout=settings.REDIS_CONNECT_TIMEOUT,
        socket_timeout=settings.REDIS_SOCKET_TIMEOUT,
        client_name="jobstream-sync",
    )


def cluster_seeds() -> list[tuple[str, int]]:
    """REDIS_CLUSTER_URL's nodes (redis://host:port, comma-separated): any one answering will do."""
    seeds = [urlsplit(url.strip()) for url in settings.REDIS_CLUSTER_URL.split(",") if url.strip()]
    return [(seed.hostname or "127.0.0.1", seed.port or 6379) for seed in seeds]


def channel_name(name: str) -> str:
    """A pub/sub channel's name in this deployment's namespace (REDIS_CHANNEL_PREFIX)."""
    return settings.REDIS_CHANNEL_PREFIX + name


def progress_publish(client: redis.Redis | redis.RedisCluster, channel: str, message: str) -> None:
    """Publish on the progress path: SPUBLISH on a cluster, PUBLISH otherwise."""
    if progress_on_cluster():
        client.spublish(channel, message)
    else:
        client.publish(channel, message)


def progress_publish_command() -> str:
    """The command a Lua script publishes with (its channels share the script's slot)."""
    return "SPUBLISH" if progress_on_cluster() else "PUBLISH"


_async_cluster_clients: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any]" = (
    weakref.WeakKeyDictionary()
)


def progress_async_client() -> aioredis.Redis | aioredis.RedisCluster:
    """The server's async client for the progress path's commands (snapshots, logs)."""
    if not progress_on_cluster():
        return async_client()
    loop = asyncio.get_running_loop()
    client = _async_cluster_clients.get(loop)
    if client is None:
        client = _async_cluster_clients[loop] = aioredis.RedisCluster(
            startup_nodes=[aioredis.cluster.ClusterNode(*seed) for seed in cluster_seeds()],
            decode_responses=True,
            socket_connect_timeout=settings.REDIS_CONNECT_TIMEOUT,
            client_name="jobstream-async",
            # A node's connections; snapshot reads are sub-millisecond, a few suffice.
            max_connections=4,
        )
    return client


@dataclass(frozen=True)
class PubSubNode:
    """Where a hub holds one pub/sub connection: the one Redis, or a shard's primary (and
    the hash slots it serves)."""

    url: str
    slots: tuple[tuple[int, int], ...] = ()

    def serves(self, channel: str) -> bool:
        slot = key_slot(channel.encode())
        return not self.slots or any(start <= slot <= end for start, end in self.slots)


async def progress_pubsub_nodes() -> list[PubSubNode]:
    """The nodes a hub subscribes on, read afresh (a cluster's slot map changes on failover)."""
    if not progress_on_cluster():
        return [PubSubNode(settings.REDIS_URL)]
    error: Exception | None = None
    for host, port in cluster_seeds():
        client = aioredis.Redis(
            host=host, port=port, socket_connect_timeout=settings.REDIS_CONNECT_TIMEOUT
        )
        try:
            slot_ranges = await client.execute_command("CLUSTER SLOTS")
        except (redis.RedisError, OSError) as failure:
            error = failure
            continue
        finally:
            await client.aclose()
        return _primaries(slot_ranges)
    raise redis.ConnectionError(f"no cluster seed answered: {error}")


def _primaries(slot_ranges: Any) -> list[PubSubNode]:
    """CLUSTER SLOTS's answer as one node per primary, with every range it serves.

    redis-py answers either the raw list or a dict keyed by (start, end)."""
    if isinstance(slot_ranges, dict):
        rows = [(start, end, info["primary"]) for (start, end), info in slot_ranges.items()]
    else:
        rows = [(int(r[0]), int(r[1]), (_text(r[2][0]), int(r[2][1]))) for r in slot_ranges]
    ranges: dict[tuple[str, int], list[tuple[int, int]]] = {}
    for start, end, (host, port) in rows:
        ranges.setdefault((host, int(port)), []).append((int(start), int(end)))
    return [
        PubSubNode(f"redis://{host}:{port}", tuple(sorted(spans)))
        for (host, port), spans in sorted(ranges.items())
    ]


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
