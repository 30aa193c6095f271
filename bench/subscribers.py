"""Subscribers for bench/progress.py, in a process of their own.

A large count is spread over several of these processes, so that the measuring side is not
what saturates; each reports the CPU time it spent, so that the bench can say when it was.
A subscriber is an asyncio protocol over websockets' sans-I/O core: every frame that one
read brings is parsed in one pass, with no task woken and no queue per message, which
costs the client a fraction of what `websockets.connect` and `recv()` do.

Spoken to over stdin and stdout, one JSON line each way:

    in   {"kind": "server" | "relay", "url": ..., "token": ..., "query": ...,
          "subscriptions": [key, ...], "connecting": n, "connect_timeout": seconds}
    out  {"ready": true, "retries": n}           every subscriber has its first frame
    in   {"ends": {key: seq}, "wait": seconds}   a round: until each subscriber has seen its
                                                 job reach `ends[key]`, or `wait` passed
    out  {"begun": true}                        (then the events may start)
    out  {"latencies": [...], "began": ..., "last": ..., "cpu": ..., "waited": ...,
          "reached": n}
    in   {"stop": true}                         (or end of input)

A key is what a subscriber follows: a job's global id (server), or its channel (relay).
`began` and `last` are the round's start and its last receipt, on time.monotonic() (one
clock for every process of the machine); `cpu` is this process's CPU time in the round,
`waited` the time it was runnable but waited for a CPU.
Nothing here imports Django: the process starts at once and its CPU is the clients' own.
"""

import asyncio
import contextlib
import gc
import json
import sys
import time
from datetime import datetime

from websockets.client import ClientProtocol
from websockets.frames import Close, Opcode
from websockets.http11 import Response
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

GRAPHQL_TRANSPORT_WS = Subprotocol("graphql-transport-ws")
# A subscriber the target drops while it subscribes (a loaded server's 4408, its
# connection_init read too late) tries again this many times, and the bench says so.
RETRIES = 5


class Hub:
    """What one round of this process's subscribers received."""

    def __init__(self, subscribers: int):
        self.subscribers = subscribers
        self.latencies: list[float] = []
        self.last = 0.0
        self.reached = 0
        self.ready = 0
        self.retries = 0
        self.all_ready = asyncio.Event()
        self.all_reached = asyncio.Event()
        self.failure: asyncio.Future = asyncio.get_running_loop().create_future()

    def subscribed(self) -> None:
        self.ready += 1
        if self.ready == self.subscribers:
            self.all_ready.set()

    def fail(self, reason: str) -> None:
        if not self.failure.done():
            self.failure.set_exception(RuntimeError(reason))

    def begin_round(self) -> None:
        self.latencies = []
        self.last = 0.0
        self.reached = 0
        self.all_reached.clear()

    def received(self, subscriber: "Subscriber", seq: int, at: str) -> None:
        self.latencies.append(time.time() - datetime.fromisoformat(at).timestamp())
        self.last = time.monotonic()
        if seq >= subscriber.end and not subscriber.reached:
            subscriber.reached = True
            self.reached += 1
            if self.reached == self.subscribers:
                self.all_reached.set()


class Subscriber(asyncio.Protocol):
    """One websocket: the server's jobProgress over graphql-transport-ws, or the relay's
    channel."""

    def __init__(self, hub: Hub, spec: dict, key: str):
        self.hub, self.key = hub, key
        self.kind = spec["kind"]
        self.spec = spec
        self.ws = ClientProtocol(
            parse_uri(spec["url"]),
            subprotocols=[GRAPHQL_TRANSPORT_WS] if self.kind == "server" else None,
            max_size=None,
        )
        self.subscribing = True
        self.end = float("inf")
        self.reached = False
        self.transport: asyncio.Transport | None = None
        self.ready = asyncio.get_running_loop().create_future()
        self.refused = asyncio.get_running_loop().create_future()  # its reason

    # --- asyncio ---------------------------------------------------------------------
    def connection_made(self, transport) -> None:
        self.transport = transport
        self.ws.send_request(self.ws.connect())
        self._flush()

    def data_received(self, data: bytes) -> None:
        self.ws.receive_data(data)
        for event in self.ws.events_received():
            if isinstance(event, Response):
                if self.ws.handshake_exc is not None:
                    self.hub.fail(f"handshake refused: {self.ws.handshake_exc!r}")
                    return
                self._hello()
            elif event.opcode is Opcode.TEXT:
                self._text(event.data)
            elif event.opcode is Opcode.CLOSE and self.subscribing:
                self._refuse(f"closed while subscribing: {Close.parse(event.data)}")
        self._flush()  # pongs, and our own messages

    def connection_lost(self, exc) -> None:
        if self.subscribing:
            self._refuse(f"connection lost while subscribing: {exc!r}")

    def _refuse(self, reason: str) -> None:
        if not self.refused.done():
            self.refused.set_result(reason)

    # --- the two protocols --------------------------------------------------------------
    def _send(self, message) -> None:
        text = message if isinstance(message, str) else json.dumps(message)
        self.ws.send_text(text.encode())

    def _hello(self) -> None:
        if self.kind == "relay":
            self._send(self.key)
        else:
            auth = {"Authorization": f"Bearer {self.spec['token']}"}
            self._send({"type": "connection_init", "payload": auth})

    def _text(self, data: bytes) -> None:
        if self.kind == "relay":
            if self.subscribing:  # the relay's "ready"
                self._subscribed()
                return
            event = json.loads(data)
            self.hub.received(self, event["seq"], event["at"])
            return
        message = json.loads(data)
        kind = message["type"]
        if kind == "next":
            event = message["payload"]["data"]["jobProgress"]
            if self.subscribing:  # the job's state as it stands: not an event
                self._subscribed()
            else:
                self.hub.received(self, event["seq"], event["at"])
        elif kind == "connection_ack":
            query = {"query": self.spec["query"], "variables": {"id": self.key}}
            self._send({"id": "1", "type": "subscribe", "payload": query})
        elif kind == "ping":
            self._send({"type": "pong"})
        elif kind in ("error", "complete"):
            self.hub.fail(f"subscription ended: {data[:300]!r}")

    def _subscribed(self) -> None:
        self.subscribing = False
        self.ready.set_result(None)
        self.hub.subscribed()

    def _flush(self) -> None:
        for chunk in self.ws.data_to_send():
            if chunk:
                self.transport.write(chunk)
            else:  # the protocol is done with the connection
                self.transport.close()


async def _lines():
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        yield json.loads(line)


def _run_delay() -> float:
    """Seconds this process has waited, runnable, for a CPU (Linux's schedstat): a machine
    busy with other work delays the measuring side too, whatever its own CPU time."""
    try:
        return int(open("/proc/self/schedstat").read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def _say(message: dict) -> None:
    sys.stdout.write(json.dumps(message, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def serve(spec: dict) -> None:
    keys = spec["subscriptions"]
    hub = Hub(len(keys))
    uri = parse_uri(spec["url"])
    loop = asyncio.get_running_loop()
    # So many subscribing at once at most: a connect storm past the listen backlog, or past
    # what the target answers within its connection_init timeout, is not the measure.
    connecting = asyncio.Semaphore(spec.get("connecting", 50))
    subscribers: list[Subscriber] = []

    async def connect(key: str) -> None:
        for attempt in range(RETRIES + 1):
            if attempt:
                hub.retries += 1
                await asyncio.sleep(0.5 * attempt)
            async with connecting:
                try:
                    _, subscriber = await loop.create_connection(
                        lambda: Subscriber(hub, spec, key), uri.host, uri.port
                    )
                except OSError as error:
                    reason = f"could not connect: {error!r}"
                    continue
                await asyncio.wait(
                    [subscriber.ready, subscriber.refused, hub.failure],
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if subscriber.ready.done():
                    subscribers.append(subscriber)
                    return
                if hub.failure.done():
                    return
                reason = subscriber.refused.result()
                subscriber.transport.close()
        hub.fail(f"a subscriber gave up after {RETRIES} retries: {reason}")

    connects = asyncio.gather(*(connect(key) for key in keys))
    # A loaded machine connects slowly: a subscriber a few milliseconds, given time.
    ready = asyncio.ensure_future(hub.all_ready.wait())
    done, _ = await asyncio.wait(
        [ready, hub.failure],
        timeout=spec.get("connect_timeout") or 60 + len(keys) / 5,
        return_when=asyncio.FIRST_COMPLETED,
    )
    if ready not in done:
        connects.cancel()
        ready.cancel()
        await asyncio.gather(connects, ready, return_exceptions=True)
        raise RuntimeError(
            f"{hub.failure.exception()}"
            if hub.failure.done()
            else f"{hub.ready} of {len(keys)} subscribers ready in time"
        )
    await connects
    _say({"ready": True, "retries": hub.retries})

    by_key: dict[str, list[Subscriber]] = {}
    for subscriber in subscribers:
        by_key.setdefault(subscriber.key, []).append(subscriber)
    async for command in _lines():
        if command.get("stop"):
            break
        hub.begin_round()
        for key, end in command["ends"].items():
            for subscriber in by_key.get(key, ()):
                subscriber.end, subscriber.reached = end, False
        _say({"begun": True})
        # This process's own collector pauses (a full pass over thousands of sockets'
        # objects) are not the target's latency.
        gc.collect()
        gc.disable()
        began, cpu, waited = time.monotonic(), time.process_time(), _run_delay()
        with contextlib.suppress(TimeoutError):  # what arrived by then is the round's
            await asyncio.wait_for(hub.all_reached.wait(), timeout=command["wait"])
        cpu, waited = time.process_time() - cpu, _run_delay() - waited
        gc.enable()
        _say(
            {
                "latencies": [round(latency, 6) for latency in hub.latencies],
                "began": began,
                "last": hub.last,
                "cpu": cpu,
                "waited": waited,
                "reached": hub.reached,
            }
        )
    for subscriber in subscribers:
        subscriber.transport.close()


def main() -> None:
    try:
        asyncio.run(serve(json.loads(sys.stdin.readline())))
    except RuntimeError as error:  # the subscribers could not all get in: say why, in a line
        print(error, file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
