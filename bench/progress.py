"""Worker emit -> client receive latency through the real server, against a bare relay.

For 1, 100, 1,000 and 10,000 concurrent websocket subscriptions, the same emitter (the
workers' JobReporter, in its own process) publishes progress while clients measure how
long each event took to arrive (the event's own `at` stamp to receipt), and what CPU time
each delivery cost the target's processes (which a machine shared with other work skews
far less than the latencies). Each count runs in the same run through a bare relay (one
Redis subscription, raw fan-out to plain websockets: the floor), through the real ASGI
server (jobProgress over graphql-transport-ws) as one process, and as two processes
sharing the port (the subscribers split between them by the kernel). Each row gives the Redis connections every
server process holds while its subscribers are connected (from CLIENT LIST).

`--saturate` then raises the event rate, at 1,000 subscribers over 10 jobs, until p99
passes 100 ms or under 99% of the deliveries arrive (the relay drops what a full socket
cannot take, ours coalesces), for the relay and for one and two server processes, and
reports the deliveries per second each sustained. `--profile DIR` records where the one-process
server spends its time at each count (py-spy, collapsed stacks, for a flame graph).

    .venv/bin/python bench/progress.py [--counts 1,100,1000,10000] [--processes 1,2]
                                       [--saturate] [--profile DIR]
"""

import argparse
import asyncio
import contextlib
import gc
import json
import resource
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


async def _relay(port: int, redis_url: str) -> None:
    """The floor: Redis pub/sub straight to websockets, nothing in between."""
    import redis.asyncio as aioredis

    pubsub = aioredis.from_url(redis_url).pubsub()
    await pubsub.subscribe("bench:relay")
    sockets: dict[str, set] = {}

    async def pump():
        while True:
            message = await pubsub.get_message(timeout=1.0)
            if message and message["type"] == "message":
                websockets.broadcast(
                    sockets.get(message["channel"].decode(), ()), message["data"].decode()
                )

    async def handler(ws):
        channel = await ws.recv()
        if channel not in sockets:
            sockets[channel] = set()
            await pubsub.subscribe(channel)
        sockets[channel].add(ws)
        await ws.send("ready")
        await ws.wait_closed()
        sockets[channel].discard(ws)

    async with websockets.serve(handler, "127.0.0.1", port, max_queue=None, backlog=4096):
        await pump()


def _raise_open_files_limit() -> int:
    """10,000 sockets a side: the soft limit up to the hard one (the children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


if __name__ == "__main__" and sys.argv[1:2] == ["--relay"]:
    _raise_open_files_limit()
    asyncio.run(_relay(int(sys.argv[2]), sys.argv[3]))
    sys.exit()


import multiprocessing  # noqa: E402
import subprocess  # noqa: E402

import psutil  # noqa: E402
import redis  # noqa: E402
from django.conf import settings  # noqa: E402
from django.db import connections  # noqa: E402

from bench import harness  # noqa: E402  (sets Django up)
from config.embedded_redis import free_port  # noqa: E402
from domains.jobs.events import job_channel  # noqa: E402
from domains.jobs.models import Job, JobKind  # noqa: E402
from domains.jobs.progress import JobReporter, job_attempt_start  # noqa: E402
from domains.jobs.services import job_create  # noqa: E402
from schema.base import global_id  # noqa: E402
from tests.fixtures.factories import make_token, make_user  # noqa: E402
from tests.fixtures.stack import Server  # noqa: E402

SUBSCRIBE = "subscription($id: ID!) { jobProgress(id: $id) { seq at } }"
# One viewer holds every socket here: the per-viewer caps are lifted for the measurement.
UNCAPPED = {
    "GRAPHQL_WS_MAX_PER_USER": "1000000",
    "GRAPHQL_WS_MAX_SUBSCRIPTIONS_PER_USER": "1000000",
}
SATURATION_P99 = 0.100  # seconds
SATURATION_SUBSCRIBERS = 1000
SATURATION_RATES = (5, 20, 40, 80, 160, 320)  # events/s per job, 10 jobs
SATURATION_GRACE = 5.0  # seconds after the last emit that a saturated run's clients wait
SATURATION_RECEIVED = 0.99  # of every event to every subscriber


class _Arrivals(list):
    """Latencies as they arrive, and when the last one did."""

    last = 0.0

    def append(self, latency: float) -> None:
        super().append(latency)
        self.last = time.monotonic()


@dataclass
class Run:
    latencies: list[float]
    seconds: float  # from the first emit to the last receipt
    connections: list[int]  # Redis connections of each server process while subscribed
    cpu_seconds: float  # the target's processes' CPU time (user and system) while measured

    @property
    def deliveries_per_second(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def p(self, fraction: float) -> float:
        return harness.percentile(self.latencies, fraction)

    @property
    def cpu_per_delivery(self) -> float:
        """Seconds of the target's CPU per delivery: what a loaded machine does not skew."""
        return self.cpu_seconds / len(self.latencies) if self.latencies else 0.0


def _cpu_seconds(pid: int) -> float:
    """CPU time of a process and its children (uvicorn's workers)."""
    root = psutil.Process(pid)
    processes = [root, *root.children(recursive=True)]
    total = 0.0
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def _emit(job_ids: list[int], events: int, rate: float, start) -> None:
    """The worker side: `events` progress events per job, `rate` per second per job."""
    settings.JOB_DB_WRITE_INTERVAL = 3600  # measure the publish path, not row writes
    reporters = [JobReporter(Job.objects.get(pk=pk)) for pk in job_ids]
    start.wait()
    # Jobs emit independently (as separate workers would): spread evenly, not in bursts.
    interval = 1 / (rate * len(reporters))
    began = time.monotonic()
    for k in range(events * len(reporters)):
        step, reporter = divmod(k, len(reporters))
        reporters[reporter].progress(current=step + 1, total=events)
        delay = began + (k + 1) * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def _received_at(at: str) -> float:
    return time.time() - datetime.fromisoformat(at).timestamp()


async def _server_client(url, token, job_gid, events, latencies, ready, connecting):
    async with connecting:
        ws = await websockets.connect(
            url, subprotocols=["graphql-transport-ws"], max_queue=None, open_timeout=120
        )
        await ws.send(
            json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
        )
        await ws.recv()
        await ws.send(
            json.dumps(
                {
                    "id": "1",
                    "type": "subscribe",
                    "payload": {"query": SUBSCRIBE, "variables": {"id": job_gid}},
                }
            )
        )
        first = json.loads(await ws.recv())["payload"]["data"]["jobProgress"]["seq"]
    ready()
    async with ws:
        while True:
            event = json.loads(await ws.recv())["payload"]["data"]["jobProgress"]
            latencies.append(_received_at(event["at"]))
            if event["seq"] >= first + events:
                return


async def _relay_client(url, channel, events, latencies, ready, connecting):
    async with connecting:
        ws = await websockets.connect(url, max_queue=None, open_timeout=120)
        await ws.send(channel)
        await ws.recv()
    ready()
    async with ws:
        seen = 0
        while seen < events:
            event = json.loads(await ws.recv())
            latencies.append(_received_at(event["at"]))
            seen += 1


def _measure(
    clients, jobs, events, rate, make_client, pid, while_subscribed=lambda: [], grace=None
) -> Run:
    """Every client's latencies. With `grace` (seconds), what arrived by then after the last
    emit, the rest abandoned: past saturation a relay drops what a full socket cannot take
    (websockets.broadcast), and a subscriber that waits for every event would wait for ever."""
    latencies = _Arrivals()
    start = multiprocessing.Event()
    connections.close_all()
    emitter = multiprocessing.Process(
        target=_emit, args=([j.pk for j in jobs], events, rate, start)
    )
    emitter.start()
    held: list[int] = []
    cpu: list[float] = []

    async def run() -> float:
        waiting = clients
        all_ready = asyncio.Event()
        connecting = asyncio.Semaphore(
            200
        )  # a connect storm past the listen backlog is not the measure

        def ready():
            nonlocal waiting
            waiting -= 1
            if not waiting:
                all_ready.set()

        tasks = [
            asyncio.create_task(
                make_client(jobs[i % len(jobs)], events, latencies, ready, connecting)
            )
            for i in range(clients)
        ]
        # A loaded machine connects slowly: a subscriber a few milliseconds, given time.
        await asyncio.wait_for(all_ready.wait(), timeout=60 + clients / 5)
        held.extend(while_subscribed())
        # The measuring side's own collector pauses (a full pass over thousands of client
        # sockets' objects) are not the target's latency.
        gc.collect()
        gc.disable()
        try:
            cpu.append(_cpu_seconds(pid))
            began = time.monotonic()
            start.set()
            if grace is None:
                await asyncio.wait_for(asyncio.gather(*tasks), timeout=events / rate + 120)
            else:
                _, late = await asyncio.wait(tasks, timeout=events / rate + grace)
                for task in late:
                    task.cancel()
                await asyncio.gather(*late, return_exceptions=True)
            cpu.append(_cpu_seconds(pid))
            return (latencies.last or time.monotonic()) - began
        finally:
            gc.enable()

    try:
        seconds = asyncio.run(run())
    finally:
        if not start.is_set():  # the subscribers never all got in: no emitter to wait for
            emitter.terminate()
        emitter.join()
    return Run(latencies, seconds, held, cpu[-1] - cpu[0])


def _redis_connections(server: Server) -> list[int]:
    """Per server process (uvicorn's workers; its supervisor serves nothing), its
    connections among those Redis lists (CLIENT LIST)."""
    redis_port = int(settings.REDIS_URL.rsplit(":", 1)[1].split("/")[0])
    listed = redis.Redis.from_url(settings.REDIS_URL).client_list()
    client_ports = {int(c["addr"].rsplit(":", 1)[1]) for c in listed}
    root = psutil.Process(server.pid)
    workers = [p for p in root.children() if "spawn_main" in " ".join(p.cmdline())]
    counts = []
    for process in workers or [root]:
        counts.append(
            sum(
                1
                for c in process.net_connections("tcp")
                if c.raddr and c.raddr.port == redis_port and c.laddr.port in client_ports
            )
        )
    return counts


class Targets:
    """The relay and the servers, started once for the run."""

    def __init__(self, processes: list[int]):
        self.user = make_user()
        self.token = make_token(self.user)
        self.relay_port = free_port()
        self.relay = subprocess.Popen(
            [sys.executable, __file__, "--relay", str(self.relay_port), settings.REDIS_URL]
        )
        self.servers = {
            n: Server(free_port(), WEB_CONCURRENCY=str(n), **UNCAPPED) for n in processes
        }
        time.sleep(1.0)

    def stop(self) -> None:
        self.relay.kill()
        for server in self.servers.values():
            server.stop()

    def jobs(self, count: int) -> list[Job]:
        jobs = []
        for _ in range(count):
            job = job_create(kind=JobKind.SALES_REPORT, owner=self.user)
            job_attempt_start(job_id=job.pk)[1].started()
            jobs.append(job)
        return jobs

    def relayed(self, clients, jobs, events, rate, grace=None) -> Run:
        url = f"ws://127.0.0.1:{self.relay_port}"
        return _measure(
            clients,
            jobs,
            events,
            rate,
            lambda job, *rest: _relay_client(url, job_channel(job.pk), *rest),
            self.relay.pid,
            grace=grace,
        )

    def served(
        self, processes, clients, jobs, events, rate, profile: Path | None = None, grace=None
    ) -> Run:
        server = self.servers[processes]
        recorder = None

        def while_subscribed():
            nonlocal recorder
            if profile is not None:
                recorder = subprocess.Popen(
                    [
                        str(Path(sys.executable).parent / "py-spy"),
                        "record",
                        "-f",
                        "raw",
                        "-o",
                        str(profile),
                        "-p",
                        str(server.pid),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            return _redis_connections(server)

        run = _measure(
            clients,
            jobs,
            events,
            rate,
            lambda job, *rest: _server_client(
                server.ws_url, self.token, str(global_id("Job", job.pk)), *rest
            ),
            server.pid,
            while_subscribed=while_subscribed,
            grace=grace,
        )
        if recorder is not None:
            recorder.send_signal(2)  # py-spy writes its file on SIGINT
            recorder.wait(timeout=30)
        return run


def _plan(clients: int) -> tuple[float, int]:
    """Events per second per job and events per job: one client process reads them all."""
    if clients <= 100:
        return 20.0, 60
    if clients <= 1000:
        return 2.0, 20
    return 1.0, 15


def latency(targets: Targets, counts: list[int], processes: list[int], profile: Path | None):
    for clients in counts:
        rate, events = _plan(clients)
        jobs = targets.jobs(min(clients, 10))
        relayed = targets.relayed(clients, jobs, events, rate)
        print(
            f"{clients} subscriptions over {len(jobs)} jobs, {rate:g} events/s per job "
            f"(relay received {len(relayed.latencies)} of {clients * events})"
        )
        for n in processes:
            path = profile / f"progress-{clients}.txt" if profile and n == 1 else None
            served = targets.served(n, clients, jobs, events, rate, profile=path)
            label = f"{n} server process{'es' if n > 1 else ''}"
            for name, fraction in (("p50", 0.5), ("p99", 0.99)):
                print(
                    harness.row(
                        f"{label}: {name}",
                        served.p(fraction) * 1000,
                        relayed.p(fraction) * 1000,
                        "ms",
                    )
                )
            print(
                harness.row(
                    f"{label}: CPU per delivery",
                    served.cpu_per_delivery * 1e6,
                    relayed.cpu_per_delivery * 1e6,
                    "us",
                )
            )
            print(
                f"  {label}: received {len(served.latencies)} of {clients * events}; "
                f"Redis connections per server process {served.connections}"
            )


def saturate(targets: Targets, processes: list[int]) -> None:
    clients = SATURATION_SUBSCRIBERS
    jobs = targets.jobs(10)
    print(
        f"saturation: {clients} subscriptions over {len(jobs)} jobs, the rate raised until "
        f"p99 passes {SATURATION_P99 * 1000:.0f} ms or under {SATURATION_RECEIVED:.0%} arrive"
    )
    sustained = {}
    for name, measure in (
        ("relay", targets.relayed),
        *((f"{n} process", lambda *a, n=n, **kw: targets.served(n, *a, **kw)) for n in processes),
    ):
        best = 0.0
        for rate in SATURATION_RATES:
            events = max(10, rate * 3)
            run = measure(clients, jobs, events, rate, grace=SATURATION_GRACE)
            received = len(run.latencies) / (clients * events)
            print(
                f"  {name:<10} {rate:>4} events/s per job: p99 {run.p(0.99) * 1000:8.1f} ms, "
                f"{run.deliveries_per_second:9.0f} deliveries/s, {received:6.1%} received"
            )
            # Saturated: too late, or shedding (the relay drops, ours coalesces) what it
            # cannot send in time.
            if run.p(0.99) > SATURATION_P99 or received < SATURATION_RECEIVED:
                break
            best = max(best, run.deliveries_per_second)
        sustained[name] = best
    for name, rate in sustained.items():
        if name != "relay":
            print(harness.row(f"sustained deliveries/s, {name}", rate, sustained["relay"], "/s"))
    if {1, 2} <= set(processes):
        one, two = sustained["1 process"], sustained["2 process"]
        print(harness.row("two processes against one", two, one, "/s"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--counts", default="1,100,1000,10000")
    parser.add_argument("--processes", default="1,2")
    parser.add_argument("--saturate", action="store_true")
    parser.add_argument("--profile", type=Path, default=None)
    args = parser.parse_args()
    limit = _raise_open_files_limit()
    counts = [int(c) for c in args.counts.split(",") if c]
    processes = [int(n) for n in args.processes.split(",")]
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)

    targets = Targets(processes)
    print(
        f"progress latency, emit -> receive (ms); server vs bare relay; Redis {settings.REDIS_URL}; "
        f"open files {limit}; load average {psutil.getloadavg()[0]:.2f} on {psutil.cpu_count()} cores"
    )
    try:
        latency(targets, counts, processes, args.profile)
        if args.saturate:
            saturate(targets, processes)
    finally:
        targets.stop()
    print(f"load average at the end {psutil.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
