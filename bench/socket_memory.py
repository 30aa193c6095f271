"""What an idle subscriber costs the server in memory, against what a socket alone costs.

Issue 18 asks for at most 20 KB of server memory per idle subscriber. This bench puts that
figure beside two floors, each a fresh process given the same number of idle websockets:

- the relay of bench/progress.py (websockets' own server, no ASGI: the bench's baseline);
- a bare ASGI app under uvicorn, served as our server is (the same websocket
  implementation and flags): it accepts, answers one frame and waits. No Django, Channels,
  Strawberry or code of ours: what uvicorn alone keeps per open socket;
- our server, each socket a `jobProgress` subscriber over graphql-transport-ws.

Each figure is the growth of the serving process's RSS from a few warm sockets to `--count`
more, once it settles, divided by `--count`.

    .venv/bin/python bench/socket_memory.py [--count 1000]
"""

import argparse
import asyncio
import json
import subprocess
import sys
from pathlib import Path

import psutil
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness  # sets Django up
from bench.progress import (
    SUBSCRIBE,
    UNCAPPED,
    _jobs,
    _raise_open_files_limit,
    _Relay,
    _settled_rss,
    _wait_listening,
)
from config.embedded_redis import free_port
from schema.base import global_id
from testbed.factories import make_token, make_user
from testbed.stack import Server, server_command

WARM = 10  # sockets opened before the first reading: first-use costs are no socket's
CONNECTING = 100  # handshakes in flight at once


async def _bare_app(scope, receive, send):
    """Accept, answer one frame, wait for the close: a socket and nothing else."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] != "websocket":
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    while (await receive())["type"] != "websocket.disconnect":
        await send({"type": "websocket.send", "text": "ready"})


class _Bare:
    """uvicorn serving `_bare_app`, with the flags our server is served with."""

    label = "bare ASGI app, uvicorn"

    def __init__(self):
        port = free_port()
        command = server_command("bench.socket_memory:_bare_app", port)
        self.popen = subprocess.Popen(command, cwd=harness.ROOT)
        _wait_listening(port, self.popen)
        self.pid = self.popen.pid
        self.url = f"ws://127.0.0.1:{port}/"

    def serving(self) -> list[psutil.Process]:
        return [psutil.Process(self.pid)]

    async def open(self, _index: int):
        ws = await websockets.connect(self.url, max_queue=None, open_timeout=120)
        await ws.send("hello")
        await ws.recv()
        return ws

    def stop(self) -> None:
        self.popen.terminate()
        self.popen.wait()


class _RelaySockets(_Relay):
    label = "relay (websockets, no ASGI)"

    async def open(self, index: int):
        ws = await websockets.connect(self.url, max_queue=None, open_timeout=120)
        await ws.send(f"bench:idle:{index % 10}")
        await ws.recv()
        return ws


class _Subscribers:
    """Our server; each socket a jobProgress subscriber of one of 10 jobs."""

    label = "ours: jobProgress subscriber"

    def __init__(self):
        user = make_user()
        self.token = make_token(user)
        self.jobs = [str(global_id("Job", job.pk)) for job in _jobs(user, 10)]
        self.server = Server(free_port(), **UNCAPPED)
        self.pid = self.server.pid
        self.url = self.server.ws_url

    def serving(self) -> list[psutil.Process]:
        return [psutil.Process(self.pid)]

    async def open(self, index: int):
        ws = await websockets.connect(
            self.url, subprotocols=["graphql-transport-ws"], max_queue=None, open_timeout=120
        )
        init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {self.token}"}}
        await ws.send(json.dumps(init))
        await ws.recv()
        variables = {"id": self.jobs[index % len(self.jobs)]}
        subscribe = {"query": SUBSCRIBE, "variables": variables}
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": subscribe}))
        await ws.recv()  # the job's snapshot
        return ws

    def stop(self) -> None:
        self.server.stop()


async def _open(target, first: int, count: int, sockets: list) -> None:
    gate = asyncio.Semaphore(CONNECTING)

    async def one(index: int) -> None:
        async with gate:
            sockets.append(await target.open(index))

    await asyncio.gather(*(one(i) for i in range(first, first + count)))


def _per_socket(target, count: int) -> float:
    """KB of the target's RSS per idle socket, from WARM sockets to WARM + count."""

    async def measure() -> float:
        sockets: list = []
        try:
            await _open(target, 0, WARM, sockets)
            before = await asyncio.to_thread(_settled_rss, target)
            await _open(target, WARM, count, sockets)
            after = await asyncio.to_thread(_settled_rss, target)
            return (after - before) / count / 1024
        finally:
            await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)

    return asyncio.run(measure())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1000, help="idle sockets per target")
    args = parser.parse_args()
    _raise_open_files_limit()
    print(f"server RSS per idle websocket, {args.count:,} sockets per target, fresh processes\n")
    print("| target | RSS per socket KB | vs relay |")
    print("|---|---|---|")
    relay = None
    for factory in (_RelaySockets, _Bare, _Subscribers):
        target = factory()
        try:
            kb = _per_socket(target, args.count)
        finally:
            target.stop()
        relay = kb if relay is None else relay
        if target.label.startswith("relay"):
            versus = ""
        else:  # a few sockets may fit in pages the process already had
            versus = f"{kb / relay:.2f}x" if relay > 0 else "n/a (the relay grew by nothing)"
        print(f"| {target.label} | {kb:.1f} | {versus} |", flush=True)


if __name__ == "__main__":
    main()
