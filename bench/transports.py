"""The HTTP transports against the websocket path, and the async view against what it
replaced, all in the same run on one server process.

1. Progress latency, worker emit -> client receive (the event's own `at` stamp to
   receipt), for 1 and 100 subscribers: jobProgress over SSE and over multipart against
   jobProgress over graphql-transport-ws (bench/progress.py's emitter and ws client).
2. Mutation -> task start (paymentProcess until its worker starts the task, bench/
   payments.py's path): through the async view (/graphql/) against Strawberry's sync
   GraphQLView on the same schema (/graphql-sync/, mounted for this bench only,
   bench/sync_view.py) and against a bare `send_task` of the same task.

The HTTP subscribers read the stream off a plain asyncio socket (`_RawStream`: HTTP/1.1,
chunked, SSE or multipart parsed as testbed/graphql.py's HTTPStream parses them), as
lean a client as the websocket one: httpx's path per chunk (httpcore, h11, anyio) costs the
client process 1.7 times the websocket client's CPU per event, and the clients share the
machine with the server they measure. `--http-client httpx` measures with HTTPStream.

`--profile DIR` records where the server spends its time while each transport streams
(py-spy, collapsed stacks, DIR/<transport>-<count>.txt).

    .venv/bin/python bench/transports.py [--counts 1,100] [--runs 30] [--rate 20] [--profile DIR]
                                    [--http-client raw|httpx]
"""

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import psutil

from bench import harness  # sets Django up
from bench.payments import BENCH_ENV, PORT, _sent_bare, _through_the_mutation
from bench.progress import _measure, _received_at, _server_client
from domains.catalog.models import Inventory
from domains.jobs.attempts import job_attempt_start
from domains.jobs.models import JobKind
from domains.jobs.services import job_create
from schema.base import global_id
from testbed.factories import make_product, make_token, make_user
from testbed.graphql import MULTIPART, SSE, HTTPStream
from testbed.stack import Server, start_worker

SUBSCRIBE = "subscription($id: ID!) { jobProgress(id: $id) { seq at } }"
SERVER_ENV = {
    **BENCH_ENV,
    "DJANGO_SETTINGS_MODULE": "bench.sync_view",
    # One viewer holds every subscriber here: lift the per-viewer caps above the count.
    "GRAPHQL_WS_MAX_PER_USER": "1000",
    "GRAPHQL_WS_MAX_SUBSCRIPTIONS_PER_USER": "1000",
    # A hundred streams opened at once queue for the request gate's slots (each held until
    # its response starts): let them wait rather than answer 503.
    "SERVER_QUEUE_TIMEOUT": "60",
}


class _RawStream:
    """One subscription over HTTP/1.1 on a bare asyncio connection: `next()` is the next
    result's data, None once the stream completed (heartbeats skipped)."""

    def __init__(self, url, query, variables, *, transport, token):
        self.url, self.transport = httpx.URL(url), transport
        self.body = json.dumps({"query": query, "variables": variables}).encode()
        self.token = token
        self.buffer = b""

    async def __aenter__(self) -> "_RawStream":
        self.reader, self.writer = await asyncio.open_connection(self.url.host, self.url.port)
        accept = "text/event-stream" if self.transport == SSE else _MULTIPART_ACCEPT
        self.writer.write(
            f"POST {self.url.raw_path.decode()} HTTP/1.1\r\nHost: {self.url.host}\r\n"
            f"Authorization: Bearer {self.token}\r\nAccept: {accept}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(self.body)}\r\n\r\n".encode()
            + self.body
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        self.status_code = int(head.split(b" ", 2)[1])
        assert b"transfer-encoding: chunked" in head.lower(), head
        return self

    async def __aexit__(self, *exc) -> None:
        self.writer.close()

    async def body(self) -> str:
        return self.buffer.decode()

    async def _chunk(self) -> bool:
        size = int((await self.reader.readuntil(b"\r\n"))[:-2], 16)
        if not size:
            return False
        self.buffer += (await self.reader.readexactly(size + 2))[:-2]
        return True

    def _take(self):
        """The next result's data, None at the end, False when none is whole yet."""
        while True:
            if self.transport == SSE:
                block, found, rest = self.buffer.partition(b"\r\n\r\n")
                if not found:
                    return False
                self.buffer = rest
                fields = dict(
                    line.split(b": ", 1) for line in block.split(b"\r\n") if line[:1] != b":"
                )
                if fields.get(b"event") == b"complete":
                    return None
                if fields.get(b"event") == b"next":
                    return json.loads(fields[b"data"])["data"]
            else:
                if self.buffer.lstrip(b"\r\n").startswith(b"--graphql--"):
                    return None
                start = self.buffer.find(b"\r\n\r\n")
                end = self.buffer.find(b"\r\n--graphql", start + 4) if start >= 0 else -1
                if end < 0:
                    return False
                part = json.loads(self.buffer[start + 4 : end])
                self.buffer = self.buffer[end + len(b"\r\n--graphql") :]
                if "payload" in part:  # {} is a heartbeat
                    return part["payload"]["data"]

    async def next(self, timeout: float = 30):
        async with asyncio.timeout(timeout):
            while (data := self._take()) is False:
                if not await self._chunk():
                    return None
        return data


_MULTIPART_ACCEPT = 'multipart/mixed; subscriptionSpec="1.0", application/json'
_HTTP_CLIENTS = {"raw": _RawStream, "httpx": HTTPStream}


async def _http_client(
    url, transport, token, job_gid, client, events, latencies, ready, connecting
):
    stream = client(url, SUBSCRIBE, {"id": job_gid}, transport=transport, token=token)
    async with connecting:  # as the websocket clients connect: a bounded storm
        await stream.__aenter__()
    try:
        assert getattr(stream, "response", stream).status_code == 200, await stream.body()
        first = (await stream.next(timeout=120))["jobProgress"]["seq"]
        ready()
        while True:
            event = (await stream.next(timeout=120))["jobProgress"]
            latencies.append(_received_at(event["at"]))
            if event["seq"] >= first + events:
                return
    finally:
        await stream.__aexit__(None, None, None)


class _Watch:
    """While one measurement's subscribers are connected: the CPU time the server and this
    process (the clients) spend, and with a profile directory, where (py-spy, collapsed
    stacks; the clients' sampled without pausing them)."""

    def __init__(self, server: Server, profile: Path | None, name: str):
        self.server = psutil.Process(server.pid)
        self.profile, self.name = profile, name
        self.recorders: list[subprocess.Popen] = []

    def _cpu(self) -> tuple[float, float]:
        times = self.server.cpu_times()
        return times.user + times.system, time.process_time()

    def start(self) -> list:
        if self.profile is not None:
            py_spy = str(Path(sys.executable).parent / "py-spy")
            for pid, side, extra in (
                (self.server.pid, "server", []),
                (os.getpid(), "clients", ["--nonblocking"]),
            ):
                out = str(self.profile / f"{self.name}-{side}.txt")
                self.recorders.append(
                    subprocess.Popen(
                        [py_spy, "record", "-f", "raw", "-o", out, "-p", str(pid), *extra],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
        self.began = self._cpu()
        return []

    def stop(self) -> tuple[float, float]:
        """CPU seconds (server, clients) since start."""
        ended = self._cpu()
        for recorder in self.recorders:
            recorder.send_signal(2)  # py-spy writes its file on SIGINT
            recorder.wait(timeout=30)
        return ended[0] - self.began[0], ended[1] - self.began[1]


def _progress_latency(
    server: Server, token: str, user, counts: list[int], profile: Path | None, client, rate
) -> None:
    print("progress latency, emit -> receive (ms); HTTP stream vs websocket (graphql-transport-ws)")
    for clients in counts:
        events = int(rate * 3)
        jobs = []
        for _ in range(min(clients, 10)):
            running = job_create(kind=JobKind.SALES_REPORT, owner=user)
            job_attempt_start(job_id=running.pk)[1].started()
            jobs.append(running)

        def over(transport):
            if transport == "ws":
                return lambda job, *rest: _server_client(
                    server.ws_url, token, str(global_id("Job", job.pk)), *rest
                )
            return lambda job, *rest: _http_client(
                server.graphql_url, transport, token, str(global_id("Job", job.pk)), client, *rest
            )

        measured, cpu = {}, {}
        for t in ("ws", SSE, MULTIPART):
            watch = _Watch(server, profile, f"{t}-{clients}")
            run = _measure(
                clients, jobs, events, rate, over(t), server.pid, while_subscribed=watch.start
            )
            measured[t] = run.latencies
            cpu[t] = [seconds / len(run.latencies) for seconds in watch.stop()]
        print(
            f"{clients} subscribers over {len(jobs)} jobs, {rate:g} events/s per job; received "
            + ", ".join(f"{t} {len(measured[t])}" for t in measured)
            + f" of {clients * events} each"
        )
        for side, index in (("server", 0), ("clients", 1)):
            for transport in (SSE, MULTIPART):
                print(
                    harness.row(
                        f"{transport} {side} CPU per delivery",
                        cpu[transport][index] * 1e6,
                        cpu["ws"][index] * 1e6,
                        "us",
                    )
                )
        for transport in (SSE, MULTIPART):
            for label, fraction in (("p50", 0.5), ("p99", 0.99)):
                print(
                    harness.row(
                        f"{transport} {label}",
                        harness.percentile(measured[transport], fraction) * 1000,
                        harness.percentile(measured["ws"], fraction) * 1000,
                        "ms",
                    )
                )


def _mutation_to_task_start(server: Server, token: str, user, runs: int) -> None:
    product = make_product(price="10.00")
    Inventory.objects.create(product=product, available=1_000_000)
    headers = {"Authorization": f"Bearer {token}"}
    # Kept-alive connections, as an app holds them.
    views = {
        "async view": httpx.Client(base_url=server.graphql_url, headers=headers),
        "sync view": httpx.Client(base_url=f"{server.url}/graphql-sync/", headers=headers),
    }
    worker = start_worker("bench-transports", concurrency=1, **BENCH_ENV)
    try:
        for _ in range(3):  # warm the server, the worker and the connections
            for client in views.values():
                _through_the_mutation(client, user, product)
            _sent_bare(user, product)
        latencies = {name: [] for name in (*views, "bare")}
        for _ in range(runs):  # interleaved, so that drift touches every path alike
            for name, client in views.items():
                latencies[name].append(_through_the_mutation(client, user, product)[0])
            latencies["bare"].append(_sent_bare(user, product)[0])
    finally:
        for client in views.values():
            client.close()
        worker.stop()

    print(f"paymentProcess -> task start, {runs} runs each, one worker process (ms)")
    for ours, baseline in (
        ("async view", "sync view"),
        ("async view", "bare"),
        ("sync view", "bare"),
    ):
        for label, fraction in (("p50", 0.5), ("p90", 0.9)):
            print(
                harness.row(
                    f"{ours} vs {baseline} {label}",
                    harness.percentile(latencies[ours], fraction) * 1000,
                    harness.percentile(latencies[baseline], fraction) * 1000,
                    "ms",
                )
            )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--counts", default="1,100")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--rate", type=float, default=20.0, help="events/s per job")
    parser.add_argument("--profile", type=Path, default=None)
    parser.add_argument("--http-client", choices=sorted(_HTTP_CLIENTS), default="raw")
    args = parser.parse_args()
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    print(f"load average {psutil.getloadavg()[0]:.2f} on {psutil.cpu_count()} cores")

    user = make_user()
    token = make_token(user)
    server = Server(PORT, **SERVER_ENV)
    try:
        counts = [int(c) for c in args.counts.split(",") if c]  # "": the mutations only
        client = _HTTP_CLIENTS[args.http_client]
        _progress_latency(server, token, user, counts, args.profile, client, args.rate)
        _mutation_to_task_start(server, token, user, args.runs)
    finally:
        server.stop()
    print(f"load average at the end {psutil.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
