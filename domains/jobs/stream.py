"""The server side of progress: one Redis pub/sub connection per process, fanned out.

The hub subscribes to a channel on its first subscriber and unsubscribes after its last.
Each subscriber has a mailbox that keeps the latest event per job: a consumer that keeps
up sees every event; a slow one sees the latest state of each job, never a stale one, and
the mailbox stays bounded. When the Redis connection drops, the hub reconnects with
backoff, subscribes again and tells every mailbox to resync (re-read the snapshot).
"""

import asyncio
import logging
import random
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
from django.conf import settings
from redis.exceptions import RedisError

from domains.jobs.events import (
    decode,
    event_from_job,
    is_terminal,
    job_channel,
    log_key,
    snapshot_key,
)
from domains.jobs.models import Job
from domains.redis import async_client

logger = logging.getLogger(__name__)

RESYNC = object()  # handed to a mailbox after a reconnect: events may have been missed


class Mailbox:
    def __init__(self, max_jobs: int):
        self._latest: OrderedDict[Any, dict[str, Any]] = OrderedDict()
        self._max_jobs = max_jobs
        self._wakeup = asyncio.Event()
        self._resync = False

    def put(self, event: dict[str, Any]) -> None:
        # A signal with no job (an access change) holds one slot: one pending is enough.
        key = event.get("job_id")
        held = self._latest.get(key)
        if held is not None and held.get("seq", 0) >= event.get("seq", 0):
            return
        self._latest[key] = event
        if len(self._latest) > self._max_jobs:
            dropped, _ = self._latest.popitem(last=False)
            logger.warning("subscription.buffer_full", extra={"dropped_job_id": dropped})
        self._wakeup.set()

    def resync(self) -> None:
        self._resync = True
        self._wakeup.set()

    async def get(self) -> dict[str, Any] | object:
        while not self._latest and not self._resync:
            self._wakeup.clear()
            await self._wakeup.wait()
        if self._resync:
            self._resync = False
            return RESYNC
        _, event = self._latest.popitem(last=False)
        return event


class EventHub:
    def __init__(self, url: str):
        self._url = url
        self._mailboxes: dict[str, set[Mailbox]] = {}
        self._pubsub: aioredis.client.PubSub | None = None
        self._reader: asyncio.Task | None = None
        self._connected = asyncio.Event()
        self._confirmed: dict[str, asyncio.Event] = {}

    @asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[Mailbox]:
        """A mailbox fed from `channel`; subscribed on Redis before this returns."""
        mailbox = Mailbox(settings.SUBSCRIPTION_BUFFER_JOBS)
        holders = self._mailboxes.setdefault(channel, set())
        first = not holders
        holders.add(mailbox)
        if first:
            self._confirmed[channel] = asyncio.Event()
        confirmed = self._confirmed.get(channel)
        try:
            self._ensure_reader()
            await self._connected.wait()
            if first:
                await self._redis_subscribe(channel)
            if confirmed is not None:
                # Redis has confirmed the subscription: a snapshot read from here on
                # cannot miss an event published in between.
                await asyncio.wait_for(confirmed.wait(), timeout=10)
            yield mailbox
        finally:
            holders = self._mailboxes.get(channel)
            if holders is not None:
                holders.discard(mailbox)
                if not holders:
                    del self._mailboxes[channel]
                    await self._redis_unsubscribe(channel)

    @property
    def channel_count(self) -> int:
        return len(self._mailboxes)

    def _ensure_reader(self) -> None:
        if self._reader is None or self._reader.done():
            self._reader = asyncio.get_running_loop().create_task(self._read_forever())

    async def _redis_subscribe(self, channel: str) -> None:
        try:
            await self._pubsub.subscribe(channel)
        except RedisError:
            # The reader reconnects, subscribes to every wanted channel again and tells
            # every mailbox to resync.
            logger.warning("stream.subscribe_failed", extra={"channel": channel})

    async def _redis_unsubscribe(self, channel: str) -> None:
        if self._pubsub is None or not self._connected.is_set():
            return
        try:
            await self._pubsub.unsubscribe(channel)
        except RedisError:
            logger.warning("stream.unsubscribe_failed", extra={"channel": channel})

    async def _read_forever(self) -> None:
        backoff = 0.1
        reconnecting = False
        while True:
            client = aioredis.Redis.from_url(
                self._url, socket_connect_timeout=5, client_name="jobstream-pubsub"
            )
            pubsub = client.pubsub()
            try:
                # The first subscribe opens the connection; an idle ping keeps it honest.
                await pubsub.subscribe("jobs:hub-heartbeat", *self._mailboxes)
                self._pubsub = pubsub
                self._connected.set()
                if reconnecting:
                    logger.info("stream.reconnected", extra={"channels": len(self._mailboxes)})
                    for holders in self._mailboxes.values():
                        for mailbox in holders:
                            mailbox.resync()
                backoff = 0.1
                while True:
                    message = await pubsub.get_message(timeout=30.0)
                    if message is None:
                        await pubsub.ping()
                        continue
                    self._dispatch(message)
            except (RedisError, OSError) as error:
                self._connected.clear()
                reconnecting = True
                logger.warning(
                    "stream.disconnected", extra={"error": str(error), "retry_in": backoff}
                )
                await asyncio.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, 5.0)
            finally:
                self._pubsub = None
                try:
                    await pubsub.aclose()
                    await client.aclose()
                except (RedisError, OSError):
                    pass

    def _dispatch(self, message: dict[str, Any]) -> None:
        channel = message["channel"]
        channel = channel.decode() if isinstance(channel, bytes) else channel
        if message["type"] == "subscribe":
            confirmed = self._confirmed.pop(channel, None)
            if confirmed is not None:
                confirmed.set()
            return
        if message["type"] != "message":
            return
        holders = self._mailboxes.get(channel)
        if not holders:
            return
        event = decode(message["data"])  # decoded once, shared by every mailbox
        for mailbox in holders:
            mailbox.put(event)


_hubs: dict[asyncio.AbstractEventLoop, EventHub] = {}


def event_hub() -> EventHub:
    """This process's hub (one per event loop: ASGI servers run one loop per process)."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = EventHub(settings.REDIS_URL)
    return hub


async def _snapshot(job: Job) -> dict[str, Any]:
    """The job's latest state: Redis's snapshot, or the row when that is newer or missing."""
    from_row = event_from_job(job)
    raw = await async_client().hget(snapshot_key(job.pk), "event")
    if raw is None:
        return from_row
    from_redis = decode(raw)
    return from_redis if from_redis["seq"] >= from_row["seq"] else from_row


async def _events_after(job: Job, seq: int) -> list[dict[str, Any]]:
    """Every event after `seq` from the job's log; the latest state where the log has a gap."""
    entries = await async_client().xrange(log_key(job.pk), min=f"{seq + 1}-0")
    events = [decode(fields["e"]) for _, fields in entries]
    if events and events[0]["seq"] == seq + 1:
        return events
    snapshot = await _snapshot(job)
    return [snapshot] if snapshot["seq"] > seq else []


async def _reload(job: Job) -> Job:
    return await Job.objects.aget(pk=job.pk)


async def job_progress_stream(
    *, job: Job, after_seq: int | None = None
) -> AsyncIterator[dict[str, Any]]:
    """A job's events for one subscriber: subscribe first, then catch up, then go live.

    Without `after_seq` the first event is the current snapshot, and a slow subscriber
    gets the latest state rather than every tick. With it, every event after that seq is
    replayed from the log, and any the mailbox coalesced are filled in from the log too,
    so that a resuming client sees the whole sequence. Ends after a terminal event.
    """
    every_event = after_seq is not None
    async with event_hub().subscribe(job_channel(job.pk)) as mailbox:
        if after_seq is None:
            backlog = [await _snapshot(job)]
            last = -1
        else:
            backlog = await _events_after(job, after_seq)
            last = after_seq
            if not backlog and is_terminal(await _snapshot(job)):
                return  # the client already holds the terminal event
        while True:
            for event in backlog:
                if event["seq"] <= last:
                    continue
                last = event["seq"]
                yield event
                if is_terminal(event):
                    return
            item = await mailbox.get()
            if item is RESYNC:
                job = await _reload(job)
                backlog = await _events_after(job, last)
            elif every_event and item["seq"] > last + 1:
                backlog = await _events_after(job, last)
            else:
                backlog = [item]


async def channel_stream(channel: str) -> AsyncIterator[dict[str, Any]]:
    """Every live event on a channel (a user's jobs, or all jobs), for dashboards."""
    async with event_hub().subscribe(channel) as mailbox:
        while True:
            item = await mailbox.get()
            if item is not RESYNC:
                yield item
