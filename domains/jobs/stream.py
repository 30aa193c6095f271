"""The server side of progress: one Redis pub/sub connection per process (one per shard
on a Redis Cluster), fanned out.

The hub subscribes to a channel on its first subscriber and unsubscribes after its last.
Where the transport can take an event's frame from the hub (a websocket operation served
from a shared frame), the hub writes it for every waiting subscriber from its own loop, no
task woken. Otherwise, and for a subscriber whose socket is behind, the subscriber's
mailbox keeps the latest event per job: a consumer that keeps up sees every event; a slow
one sees the latest state of each job, never a stale one, and the mailbox stays bounded. When the Redis connection drops, the hub reconnects with
backoff, subscribes again and tells every mailbox to resync (re-read what it may have
missed). Redis is never the only witness of a job's end: a stream that resyncs or sits
idle re-reads the job's row, so no subscription outlives its job.
"""

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import redis.asyncio as aioredis
from django.conf import settings
from django.db import DatabaseError
from django.db.models import Q, QuerySet
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import RedisError
from redis.retry import Retry

from domains.accounts.models import User
from domains.infra.metrics import event_delivery_lag, open_subscriptions, subscription_frames
from domains.infra.redis import (
    PubSubNode,
    progress_async_client,
    progress_on_cluster,
    progress_pubsub_nodes,
)
from domains.jobs.events import (
    all_jobs_channel,
    decode,
    event_from_job,
    is_event,
    is_terminal,
    job_channel,
    log_key,
    parse_at,
    snapshot_key,
    user_channel,
)
from domains.jobs.models import ACTIVE_STATUSES, TERMINAL_STATUSES, Job
from domains.jobs.selectors import job_list

logger = logging.getLogger(__name__)

IDLE = object()  # handed out by a mailbox that heard nothing within its timeout
DELIVERED_END = object()  # handed out once the hub wrote the job's terminal event itself
_UNMADE = object()

# How long a new subscriber waits for Redis to confirm its subscription before it goes on
# without it (from the row; the reader resyncs it once Redis is back).
_SUBSCRIBE_WAIT = 10.0
# An event is stamped before it is published: what a resync looks for starts this long
# before the last message the reader heard.
_STAMP_SLACK = timedelta(seconds=2)


class Fanout:
    """One event on its way to its channel's mailboxes: what each of them reads, worked out
    once (its job, seq and end, the loop's time), and its frames made so far, by group (one
    per document and variables for all the mailboxes of the event)."""

    __slots__ = ("event", "frames", "job_id", "now", "seq", "terminal")

    def __init__(self, event: dict[str, Any], now: float = 0.0):
        self.event = event
        self.job_id = event.get("job_id")
        self.seq = event.get("seq", 0)
        status = event.get("status")  # (a signal's may be anything, or nothing)
        self.terminal = isinstance(status, str) and status in TERMINAL_STATUSES
        self.now = now
        self.frames: dict[Any, Any] = {}


@dataclass(frozen=True)
class Resync:
    """Handed to a mailbox after a reconnect: events published after `since` may be lost."""

    since: datetime


class Mailbox:
    __slots__ = (
        "_delivered_end",
        "_idle_at",
        "_idle_timeout",
        "_idle_timer",
        "_latest",
        "_loop",
        "_max_jobs",
        "_resync_since",
        "_waiter",
        "contiguous",
        "deliver",
        "delivered",
        "ends_at_terminal",
        "idle_probe",
        "live",
    )

    def __init__(self, max_jobs: int):
        self._latest: OrderedDict[Any, dict[str, Any]] = OrderedDict()
        self._max_jobs = max_jobs
        self._waiter: asyncio.Future | None = None  # its subscriber's get, waiting
        # One idle timer per quiet period, not one per event: each get only moves the time
        # it hands out IDLE at, and the timer, once due, waits again for what remains.
        self._idle_at: float | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the idle timer's
        self._idle_timeout: float | None = None
        self._resync_since: datetime | None = None
        # Set once its subscriber reads from it; from then on a reconnect resyncs it.
        self.live = False
        # How the hub writes an event to the subscriber itself while the subscriber waits
        # with nothing pending (True: written); the seq it last wrote so, per job (most
        # recent last, as many jobs as the mailbox holds); whether it writes only each job's
        # next seq (a resuming subscriber gets every event: a gap is filled in from the log
        # by the subscriber's own path); whether a terminal event ends the subscription.
        self.deliver: Callable[[dict[str, Any]], bool] | None = None
        self.delivered: OrderedDict[Any, int] = OrderedDict()
        self.contiguous = False
        self.ends_at_terminal = False
        self._delivered_end = False
        # Asked, once the subscriber has waited quietly for its timeout, instead of waking
        # it: answers through `idle_checked` (a job's subscribers share one read of its row).
        self.idle_probe: Callable[[Mailbox], None] | None = None

    def offer(self, event: dict[str, Any], fanout: "Fanout | None" = None) -> bool:
        """The hub's hand-off: written by the hub itself where it can (no task woken: True),
        else kept for the subscriber, latest per job. `fanout`: the event as the hub hands
        it to every mailbox of its channel."""
        waiter = self._waiter
        if (
            waiter is not None
            and not waiter.done()
            and self.deliver is not None
            and not self._latest
            and self._resync_since is None
            and not self._delivered_end
        ):
            if fanout is None:
                fanout = Fanout(event)
            job_id, seq = fanout.job_id, fanout.seq
            delivered = self.delivered
            last = delivered.get(job_id, -1)
            if seq <= last:
                return False  # written already
            if (not self.contiguous or seq == last + 1) and self._write(fanout):
                delivered[job_id] = seq
                if len(delivered) > 1:
                    delivered.move_to_end(job_id)
                    if len(delivered) > self._max_jobs:
                        delivered.popitem(last=False)
                if self._idle_at is not None:  # the stream is not idle: its recheck waits
                    self._idle_at = (fanout.now or self._loop.time()) + self._idle_timeout
                if fanout.terminal and self.ends_at_terminal:
                    self._delivered_end = True  # its subscriber completes (and unsubscribes)
                    self._wake()
                return True
        self.put(event)
        return False

    def _write(self, fanout: "Fanout") -> bool:
        deliver = self.deliver
        write_frame = getattr(deliver, "write_frame", None)
        if write_frame is None:
            return deliver(fanout.event)
        frames, group = fanout.frames, deliver.group
        frame = frames.get(group, _UNMADE)
        if frame is _UNMADE:
            frame = frames[group] = deliver.frame(fanout.event)
        return frame is not None and write_frame(frame, fanout.seq if deliver.labelled else None)

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
        self._wake()

    def resync(self, *, since: datetime) -> None:
        if self._resync_since is None or since < self._resync_since:
            self._resync_since = since
        self._wake()

    def close(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _idle_due(self) -> None:
        self._idle_timer = None
        if self._waiter is None or self._idle_at is None:
            return
        if self._loop.time() < self._idle_at:
            self._idle_timer = self._loop.call_at(self._idle_at, self._idle_due)
        elif self.idle_probe is None:
            self._wake()
        else:
            self.idle_probe(self)

    def idle_checked(self, *, moved: bool) -> None:
        """The idle probe's answer: wake the subscriber if what it follows moved (it hands
        out IDLE and the subscriber catches up), else wait another quiet period."""
        if self._waiter is None or self._waiter.done() or self._idle_timeout is None:
            return
        if moved:
            self._wake()
            return
        self._idle_at = self._loop.time() + self._idle_timeout
        if self._idle_timer is None:
            self._idle_timer = self._loop.call_at(self._idle_at, self._idle_due)

    async def get(self, timeout: float | None = None) -> dict[str, Any] | Resync | object:
        """The next event, a Resync (first), or IDLE once `timeout` seconds passed quietly."""
        if self._delivered_end:
            return DELIVERED_END
        if not self._latest and self._resync_since is None:
            loop = asyncio.get_running_loop()
            self._idle_timeout = timeout
            self._idle_at = None if timeout is None else loop.time() + timeout
            if self._idle_at is not None and (self._idle_timer is None or self._loop is not loop):
                self._loop = loop
                self._idle_timer = loop.call_at(self._idle_at, self._idle_due)
            self._waiter = loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
            if self._delivered_end:
                return DELIVERED_END
            if not self._latest and self._resync_since is None:
                return IDLE
        if self._resync_since is not None:
            resync, self._resync_since = Resync(since=self._resync_since), None
            return resync
        _, event = self._latest.popitem(last=False)
        return event


class _SlotsMoved(RedisError):
    """A shard stopped serving a channel the hub still wants (its slot moved elsewhere)."""


@dataclass
class _Link:
    """One pub/sub connection: to the one Redis, or to one shard's primary."""

    node: PubSubNode
    client: aioredis.Redis
    pubsub: aioredis.client.PubSub


class EventHub:
    """This process's pub/sub: one connection to Redis, or on a Redis Cluster one to each
    shard's primary (sharded pub/sub: SSUBSCRIBE where the channel's slot lives)."""

    def __init__(self):
        self._mailboxes: dict[str, set[Mailbox]] = {}
        self._links: list[_Link] = []
        self._sharded = progress_on_cluster()
        self._subscribe_command, self._unsubscribe_command = (
            ("SSUBSCRIBE", "SUNSUBSCRIBE") if self._sharded else ("SUBSCRIBE", "UNSUBSCRIBE")
        )
        self._unsubscribing: Counter[str] = Counter()  # our own unsubscribes not yet confirmed
        self._reader: asyncio.Task | None = None
        self._connected = asyncio.Event()
        self._confirmed: dict[str, asyncio.Event] = {}
        self._signal_channels: set[str] = set()  # channels of plain signals, not job events
        self._heard_at = time.time()  # when Redis last delivered anything to the reader

    @asynccontextmanager
    async def subscribe(self, channel: str, *, signals: bool = False) -> AsyncIterator[Mailbox]:
        """A mailbox fed from `channel`; subscribed on Redis before this returns, unless
        Redis is away (then the reader resyncs the mailbox once it has subscribed).

        A channel carries job events, checked as such, or with `signals` any JSON object
        (e.g. a user's access changes)."""
        if signals:
            self._signal_channels.add(channel)
        mailbox = Mailbox(settings.SUBSCRIPTION_BUFFER_JOBS)
        open_subscriptions.inc()
        holders = self._mailboxes.setdefault(channel, set())
        first = not holders
        holders.add(mailbox)
        if first:
            self._confirmed[channel] = asyncio.Event()
        confirmed = self._confirmed.get(channel)
        try:
            self._ensure_reader()
            try:
                async with asyncio.timeout(_SUBSCRIBE_WAIT):
                    await self._connected.wait()
                    if first:
                        await self._redis_command(self._subscribe_command, channel)
                    if confirmed is not None:
                        # Redis has confirmed the subscription: a snapshot read from here on
                        # cannot miss an event published in between.
                        await confirmed.wait()
            except TimeoutError:
                logger.warning("stream.subscribe_unconfirmed", extra={"channel": channel})
            mailbox.live = True
            yield mailbox
        finally:
            mailbox.close()
            open_subscriptions.dec()
            holders = self._mailboxes.get(channel)
            if holders is not None:
                holders.discard(mailbox)
                if not holders:
                    del self._mailboxes[channel]
                    self._signal_channels.discard(channel)
                    if self._connected.is_set():
                        self._unsubscribing[channel] += 1
                        await self._redis_command(self._unsubscribe_command, channel)

    @property
    def channel_count(self) -> int:
        return len(self._mailboxes)

    def _ensure_reader(self) -> None:
        if self._reader is None or self._reader.done():
            self._reader = asyncio.get_running_loop().create_task(self._read_forever())
            self._reader.add_done_callback(_log_reader_stopped)

    def _link_for(self, channel: str) -> _Link | None:
        return next((link for link in self._links if link.node.serves(channel)), None)

    async def _redis_command(self, command: str, channel: str) -> None:
        link = self._link_for(channel) if self._connected.is_set() else None
        if link is None:
            return  # the reader subscribes to every wanted channel once it is connected
        try:
            await link.pubsub.execute_command(command, channel)
        except RedisError:
            # The reader reconnects, subscribes to every wanted channel again and tells
            # every mailbox to resync.
            logger.warning("stream.command_failed", extra={"channel": channel, "command": command})

    async def _read_forever(self) -> None:
        backoff = 0.1
        while True:
            links: list[_Link] = []
            try:
                # Read afresh at every (re)connect: a failover moves a shard's slots.
                for node in await progress_pubsub_nodes():
                    links.append(await self._open(node))
                self._links = links
                self._connected.set()
                self._resync_live_mailboxes()
                backoff = 0.1
                await _until_one_fails([self._read(link) for link in links])
            except (RedisError, OSError) as error:
                logger.warning(
                    "stream.disconnected", extra={"error": str(error), "retry_in": backoff}
                )
            finally:
                # However the reader stops (a lost connection, cancellation, a bug), no
                # subscriber may take the hub for connected; the next one restarts it.
                self._connected.clear()
                self._links = []
                self._unsubscribing.clear()
                for link in links:
                    with contextlib.suppress(RedisError, OSError):
                        await link.pubsub.aclose()
                        await link.client.aclose()
            await asyncio.sleep(backoff * (0.5 + random.random()))
            backoff = min(backoff * 2, 5.0)

    async def _open(self, node: PubSubNode) -> _Link:
        """A connection to `node`, subscribed to every wanted channel it serves."""
        client = aioredis.Redis.from_url(
            node.url,
            socket_connect_timeout=5,
            client_name="jobstream-pubsub",
            # No silent reconnect: a new connection would hold none of the subscriptions.
            retry=Retry(NoBackoff(), 0),
        )
        link = _Link(node, client, client.pubsub())
        await link.pubsub.execute_command("PING")  # opens the connection
        wanted = [channel for channel in self._mailboxes if node.serves(channel)]
        for batch in self._subscribe_batches(wanted):
            await link.pubsub.execute_command(self._subscribe_command, *batch)
        return link

    def _subscribe_batches(self, channels: list[str]) -> list[list[str]]:
        """One SUBSCRIBE for them all; SSUBSCRIBE takes channels of one slot at a time."""
        if not self._sharded:
            return [channels] if channels else []
        by_slot: dict[int, list[str]] = {}
        for channel in channels:
            by_slot.setdefault(key_slot(channel.encode()), []).append(channel)
        return list(by_slot.values())

    async def _read(self, link: _Link) -> None:
        while True:
            message = await link.pubsub.get_message(timeout=30.0)
            if message is None:
                await link.pubsub.ping()  # an idle ping keeps the connection honest
                continue
            self._heard_at = time.time()
            self._dispatch(message)

    def _resync_live_mailboxes(self) -> None:
        """After a (re)connect: whatever was published while nobody listened may be lost."""
        since = datetime.fromtimestamp(self._heard_at, UTC) - _STAMP_SLACK
        live = [m for holders in self._mailboxes.values() for m in holders if m.live]
        if live:
            logger.info("stream.reconnected", extra={"channels": len(self._mailboxes)})
        for mailbox in live:
            mailbox.resync(since=since)

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "pong":
            return
        channel = message["channel"]
        channel = channel.decode() if isinstance(channel, bytes) else channel
        if kind in ("subscribe", "ssubscribe"):
            confirmed = self._confirmed.pop(channel, None)
            if confirmed is not None:
                confirmed.set()
            return
        if kind in ("unsubscribe", "sunsubscribe"):
            if self._unsubscribing[channel] > 0:
                self._unsubscribing[channel] -= 1
                if not self._unsubscribing[channel]:
                    del self._unsubscribing[channel]
            elif channel in self._mailboxes:
                # Not ours: the shard gave the channel's slot away (a reshard, a failover).
                raise _SlotsMoved(f"{channel} is no longer served by {self._link_for(channel)}")
            return
        if kind not in ("message", "smessage"):
            return
        holders = self._mailboxes.get(channel)
        if not holders:
            return
        try:
            event = decode(message["data"])  # decoded once, shared by every mailbox
        except ValueError:
            event = None
        well_formed = (
            isinstance(event, dict) if channel in self._signal_channels else is_event(event)
        )
        if not well_formed:
            logger.warning(
                "stream.malformed_message",
                extra={"channel": channel, "data": repr(message["data"][:200])},
            )
            return
        # One loop over the channel's mailboxes: each group's frame made once, then written
        # to each waiting socket of the group.
        written, fanout = 0, Fanout(event, asyncio.get_running_loop().time())
        for mailbox in holders:
            written += mailbox.offer(event, fanout)
        if written:  # (the hub's one loop wrote them all: one lag, observed for each)
            _delivered_live(event, written)
            subscription_frames.labels(step="written").inc(written)


async def _until_one_fails(readers: list[Coroutine[Any, Any, None]]) -> None:
    """Run the readers together until the first one raises; then stop the others."""
    tasks = [asyncio.ensure_future(reader) for reader in readers]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            task.result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _log_reader_stopped(reader: asyncio.Task) -> None:
    if not reader.cancelled() and reader.exception() is not None:
        logger.error("stream.reader_failed", exc_info=reader.exception())


_hubs: dict[asyncio.AbstractEventLoop, EventHub] = {}


def event_hub() -> EventHub:
    """This process's hub (one per event loop: ASGI servers run one loop per process)."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = EventHub()
    return hub


async def _latest_states(jobs: list[Job]) -> list[dict[str, Any]]:
    """Each job's latest state: Redis's snapshot, or the row where that is newer, missing,
    or out of reach (one round trip for all of them)."""
    from_rows = [event_from_job(job) for job in jobs]
    try:
        async with progress_async_client().pipeline(transaction=False) as pipe:
            for job in jobs:
                pipe.hget(snapshot_key(job.pk), "event")
            raws = await pipe.execute()
    except RedisError:
        return from_rows
    states = []
    for from_row, raw in zip(from_rows, raws, strict=True):
        from_redis = decode(raw) if raw is not None else None
        newer = from_redis is not None and from_redis["seq"] >= from_row["seq"]
        states.append(from_redis if newer else from_row)
    return states


async def _snapshot(job: Job) -> dict[str, Any]:
    return (await _latest_states([job]))[0]


async def _events_after(job: Job, seq: int) -> list[dict[str, Any]]:
    """Every event after `seq` from the job's log; the latest state where the log has a gap."""
    try:
        entries = await progress_async_client().xrange(log_key(job.pk), min=f"{seq + 1}-0")
    except RedisError:
        entries = []
    events = [decode(fields["e"]) for _, fields in entries]
    if events and events[0]["seq"] == seq + 1:
        return events
    snapshot = await _snapshot(job)
    return [snapshot] if snapshot["seq"] > seq else []


async def _catch_up(job: Job, last: int) -> list[dict[str, Any]]:
    """What a subscriber at seq `last` missed, ending with the row's end when the row has
    ended: that end may never have been published (Redis was down, or the publish lost)."""
    events = await _events_after(job, last)
    if job.is_terminal and not (events and is_terminal(events[-1])):
        end = event_from_job(job)
        # The row can lag events that parts published without writing it; the end still
        # comes after everything the subscriber has seen.
        end["seq"] = max(end["seq"], (events[-1]["seq"] if events else last) + 1)
        events.append(end)
    return events


async def _reload(job: Job) -> Job:
    return await Job.objects.aget(pk=job.pk)


# Subscribers of a job that went quiet together recheck its row together: each of them
# reading it would queue every connect behind thousands of reads (10,000 idle subscribers,
# 2,000 reads a second through the one thread Django's async queries take).
_IDLE_READ_SHARED_FOR = 1.0  # seconds
_idle_reads: dict[int, tuple[asyncio.AbstractEventLoop, float, asyncio.Future]] = {}


async def _reload_when_idle(job: Job) -> Job:
    """The job's row, as one read shared by the subscribers of the job that ask within
    _IDLE_READ_SHARED_FOR seconds of each other."""
    loop = asyncio.get_running_loop()
    now = loop.time()
    held = _idle_reads.get(job.pk)
    if held is None or held[0] is not loop or now - held[1] > _IDLE_READ_SHARED_FOR:
        for pk, (_, at, _) in list(_idle_reads.items()):
            if now - at > _IDLE_READ_SHARED_FOR:
                del _idle_reads[pk]
        held = _idle_reads[job.pk] = (loop, now, asyncio.ensure_future(_reload(job)))
    # shielded: one subscriber that goes away does not cancel the others' read
    return await asyncio.shield(held[2])


# Subscribers whose idle recheck is due wait for one read of their jobs' rows, made for
# every such subscriber of the process within _QUIET_GATHER seconds: 1,000 quiet subscribers
# of 10 jobs recheck 200 times a second, which each resuming its stream to read its row
# (shared per second and job) cost 27 ms of CPU a second; gathered, a few reads.
_QUIET_GATHER = 0.5  # seconds: how much later than its own timeout a recheck may come
_quiet: dict[asyncio.AbstractEventLoop, dict[int, set[Mailbox]]] = {}
_quiet_reads: set[asyncio.Task] = set()  # held while they run


def _idle_probe(job_id: int) -> Callable[[Mailbox], None]:
    def probe(mailbox: Mailbox) -> None:
        loop = asyncio.get_running_loop()
        due = _quiet.get(loop)
        if due is None:
            for gone in [other for other in _quiet if other.is_closed()]:
                del _quiet[gone]  # a loop that closed before its read (a test's)
            due = _quiet[loop] = {}
            loop.call_later(_QUIET_GATHER, _read_quiet_rows, loop)
        due.setdefault(job_id, set()).add(mailbox)

    return probe


def _read_quiet_rows(loop: asyncio.AbstractEventLoop) -> None:
    read = loop.create_task(_answer_quiet(_quiet.pop(loop)))
    _quiet_reads.add(read)
    read.add_done_callback(_quiet_reads.discard)


async def _answer_quiet(due: dict[int, set[Mailbox]]) -> None:
    """Wakes each subscriber whose job moved past what it has seen (or whose row could
    not be read: its own read meets, and reports, the same); the others wait again."""
    rows: dict[int, tuple[int, str]] | None = None
    try:
        rows = {
            pk: (seq, status)
            async for pk, seq, status in Job.objects.filter(pk__in=list(due)).values_list(
                "pk", "seq", "status"
            )
        }
    except DatabaseError:
        pass
    finally:
        for job_id, mailboxes in due.items():
            row = rows.get(job_id) if rows is not None else None
            for mailbox in mailboxes:
                seen = mailbox.delivered.get(job_id, -1)
                moved = row is None or row[1] in TERMINAL_STATUSES or row[0] > seen
                mailbox.idle_checked(moved=moved)


def _delivered_live(event: dict[str, Any], subscribers: int = 1) -> None:
    """A live event handed to its subscribers: how long since its worker emitted it."""
    lag = max(0.0, (datetime.now(UTC) - parse_at(event)).total_seconds())
    event_delivery_lag.observe(lag, subscribers)


async def job_progress_stream(
    *,
    job: Job,
    after_seq: int | None = None,
    deliver: Callable[[dict[str, Any]], bool] | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """A job's events for one subscriber: subscribe first, then catch up, then go live.

    Without `after_seq` the first event is the current snapshot, and a slow subscriber
    gets the latest state rather than every tick. With it, every event after that seq is
    replayed from the log, and any the mailbox coalesced are filled in from the log too,
    so that a resuming client sees the whole sequence. Ends after a terminal event, which
    the row supplies when Redis never carried it: after a reconnect, and whenever the
    stream has been idle for JOB_STREAM_IDLE_RECHECK seconds.

    With `deliver` (the transport's way to write an event itself), live events that find
    the subscriber waiting are written by the hub, from its own loop: this generator is
    woken only for what the hub could not write (a slow socket: then the latest state), a
    resync, an idle recheck, and the end.
    """
    every_event = after_seq is not None
    async with event_hub().subscribe(job_channel(job.pk)) as mailbox:
        mailbox.deliver, mailbox.contiguous, mailbox.ends_at_terminal = deliver, every_event, True
        mailbox.idle_probe = _idle_probe(job.pk)
        if after_seq is None:
            backlog = [await _snapshot(job)]
            last = -1
        else:
            backlog = await _events_after(job, after_seq)
            last = after_seq
            if not backlog and is_terminal(await _snapshot(job)):
                return  # the client already holds the terminal event
        live = False  # the backlog came from the mailbox (not a snapshot, the log or the row)
        while True:
            for event in backlog:
                if event["seq"] <= last:
                    continue
                last = event["seq"]
                if live:
                    _delivered_live(event)
                yield event
                if is_terminal(event):
                    return
            live = False
            mailbox.delivered[job.pk] = last
            backlog = event = None  # held for nothing while the subscriber waits, maybe long
            item = await mailbox.get(timeout=settings.JOB_STREAM_IDLE_RECHECK)
            last = max(last, mailbox.delivered[job.pk])  # what the hub wrote meanwhile
            if item is DELIVERED_END:
                return
            if item is IDLE:
                # The row alone first: an idle stream costs Redis nothing until its job moved.
                job = await _reload_when_idle(job)
                moved = job.is_terminal or job.seq > last
                backlog = await _catch_up(job, last) if moved else []
            elif isinstance(item, Resync):
                job = await _reload(job)
                backlog = await _catch_up(job, last)
            elif every_event and item["seq"] > last + 1:
                backlog = await _events_after(job, last)
            else:
                backlog, live = [item], True


async def job_events_stream(
    *, viewer: User, deliver: Callable[[dict[str, Any]], bool] | None = None
) -> AsyncIterator[dict[str, Any]]:
    """Every event of the viewer's jobs (staff: all jobs), live, for dashboards.

    After a reconnect it re-reads the viewer's jobs that may have moved meanwhile and hands
    out each one's latest state, so a dashboard never misses an end; per job, seq only rises.
    With `deliver`, the hub writes the live events that find the subscriber waiting itself
    (see job_progress_stream).
    """
    jobs = job_list(viewer=viewer)
    channel = all_jobs_channel() if viewer.is_staff else user_channel(viewer.pk)
    async with event_hub().subscribe(channel) as mailbox:
        mailbox.deliver = deliver
        # job id -> last seq, most recent last: the hub's writes and this stream's own
        handed_out = mailbox.delivered
        subscribed_at = datetime.now(UTC)  # what changed before is not this stream's to hand out
        while True:
            item = await mailbox.get()
            live = not isinstance(item, Resync)
            if live:
                events = [item]
            else:
                events = await _moved_since(jobs, handed_out, max(item.since, subscribed_at))
            for event in events:
                job_id = event["job_id"]
                if event["seq"] <= handed_out.get(job_id, -1):
                    continue
                handed_out[job_id] = event["seq"]
                handed_out.move_to_end(job_id)
                if len(handed_out) > settings.SUBSCRIPTION_BUFFER_JOBS:
                    handed_out.popitem(last=False)
                if live:
                    _delivered_live(event)
                yield event


async def _moved_since(
    jobs: QuerySet[Job], handed_out: dict[int, int], since: datetime
) -> list[dict[str, Any]]:
    """The latest state of each job that may have changed since `since`: those running now,
    those this stream saw, and those that ended since."""
    candidates = [
        job
        async for job in jobs.filter(
            Q(status__in=ACTIVE_STATUSES) | Q(pk__in=list(handed_out)) | Q(finished_at__gte=since)
        )
    ]
    states = await _latest_states(candidates)
    return [s for s in states if s["job_id"] in handed_out or parse_at(s) >= since]
