"""Worker emit -> client receive latency through the real server, against a bare relay.

For 1, 100, 1,000 and 10,000 concurrent websocket subscriptions, the same emitter (the
workers' JobReporter, in its own process) publishes progress while subscribers measure how
long each event took to arrive (the event's own `at` stamp to receipt). Each count runs,
in the same run and each on fresh processes warmed by one subscriber, through a bare relay
(one Redis subscription, raw fan-out to plain websockets: the floor), through the real
ASGI server (jobProgress over graphql-transport-ws) as one process, and as two processes
sharing the port (the kernel splits the subscribers between them).

The subscribers live in client processes of their own (bench/subscribers.py, one per
2,500 subscribers unless `--client-processes`), each reporting the CPU it spent: a client
process busy for 90% of a core or more is queueing what it measures, and the bench says
so. Each row gives p50 and p99, the target's CPU time per delivery (which a machine shared
with other work skews far less than the latencies), the ratios against the relay, what
arrived, from 1,000 subscribers the growth of the target's RSS while they were connected
and idle per subscriber and the CPU the target spends a second per 1,000 of them idle (their
timers, pings and rechecks), and the Redis connections each server process holds (CLIENT
LIST). At the end, one table for a closing note; with `--runs N`, every figure is the
median of N runs and each ratio the median (and range) of its runs' own ratios.

`--saturate` raises the event rate at 1,000 subscribers over 10 jobs, subscribers
connected once per target, doubling then bisecting until p99 passes 100 ms or under 99%
of the deliveries arrive (ours coalesces what it cannot send in time), for the relay and
for one and two server processes, within a budget (`--saturate-seconds`, 210), and
reports the deliveries per second each sustained: ours against the relay, two processes
against one. Alone it runs no latency rows (add `--counts` for both). `--seconds S`
shortens (or lengthens) every row to S seconds of events. `--profile DIR` records where
the one-process server spends its time at each count (py-spy, collapsed stacks).

    .venv/bin/python bench/progress.py [--counts 1,100,1000,10000] [--processes 1,2]
        [--runs N] [--seconds S] [--client-processes N] [--saturate [--saturate-seconds S]]
        [--profile DIR]
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

    # No per-message deflate: the server under test serves without it (as runstack does).
    async with websockets.serve(
        handler, "127.0.0.1", port, max_queue=None, backlog=4096, compression=None
    ):
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


import math  # noqa: E402
import multiprocessing  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402

import psutil  # noqa: E402
import redis  # noqa: E402
from django.conf import settings  # noqa: E402
from django.db import connections  # noqa: E402

from bench import harness  # noqa: E402  (sets Django up)
from config.embedded_redis import free_port  # noqa: E402
from domains.jobs.attempts import job_attempt_start  # noqa: E402
from domains.jobs.events import job_channel, snapshot_key  # noqa: E402
from domains.jobs.models import Job, JobKind  # noqa: E402
from domains.jobs.reporter import JobReporter  # noqa: E402
from domains.jobs.services import job_create  # noqa: E402
from schema.base import global_id  # noqa: E402
from testbed.factories import make_token, make_user  # noqa: E402
from testbed.stack import Server  # noqa: E402

SUBSCRIBE = "subscription($id: ID!) { jobProgress(id: $id) { seq at } }"
# One viewer holds every socket here: the per-viewer caps are lifted for the measurement.
UNCAPPED = {
    "GRAPHQL_WS_MAX_PER_USER": "1000000",
    "GRAPHQL_WS_MAX_SUBSCRIPTIONS_PER_USER": "1000000",
}
SATURATION_P99 = 0.100  # seconds
SATURATION_SUBSCRIBERS = 1000
SATURATION_GRACE = 2.0  # seconds after the last emit that a saturation round's clients wait
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
            total += _on_cpu(process)
    return total


def _on_cpu(process: psutil.Process) -> float:
    """Its threads' time on a CPU to the nanosecond where Linux says (schedstat): a row of
    60 deliveries is well below the 10 ms tick that cpu_times() counts in."""
    tasks = Path(f"/proc/{process.pid}/task")
    if not (tasks / str(process.pid) / "schedstat").exists():
        times = process.cpu_times()
        return times.user + times.system
    nanoseconds = 0
    for stat in tasks.glob("*/schedstat"):
        with contextlib.suppress(OSError):  # a thread that just ended
            nanoseconds += int(stat.read_text().split()[0])
    return nanoseconds / 1e9


def _emit(job_ids: list[int], events: int, rate: float, start, loaded=None, elapsed=None) -> None:
    """The worker side: `events` progress events per job, `rate` per second per job; sets
    `loaded` once ready to start, and `elapsed` to the seconds it took."""
    settings.JOB_DB_WRITE_INTERVAL = 3600  # measure the publish path, not row writes
    reporters = [JobReporter(Job.objects.get(pk=pk)) for pk in job_ids]
    if loaded is not None:
        loaded.set()
    start.wait()
    # Jobs emit independently (as separate workers would): spread evenly, not in bursts.
    interval = 1 / (rate * len(reporters))
    began = time.monotonic()
    for k in range(events * len(reporters)):
        step, reporter = divmod(k, len(reporters))
        # A count without a total emits on every call; with one, a reporter emits each 1%
        # moved, and more than 100 events per job would be thinned.
        reporters[reporter].progress(current=step + 1)
        delay = began + (k + 1) * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    if elapsed is not None:
        elapsed.value = time.monotonic() - began


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


def _measure(
    clients, jobs, events, rate, make_client, pid, while_subscribed=lambda: [], grace=None
) -> Run:
    """Every client's latencies, the clients in this process (bench/transports.py's HTTP
    streams; this bench's own rows spread theirs over client processes: `_Session`).
    With `grace` (seconds), what arrived by then after the last
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


# --- spread measurement: the subscribers in client processes of their own ----------------
SUBSCRIBERS = Path(__file__).with_name("subscribers.py")
CLIENTS_PER_PROCESS = 2500  # what one client process reads at a row's rate with room to spare
CLIENT_SATURATED = 0.9  # of a core: a client process this busy queues what it measures
CLIENT_STARVED = 0.25  # of its round waiting, runnable, for a CPU the machine gave others
RSS_FROM = 1000  # subscribers: below that, RSS growth per subscriber is noise
IDLE_CPU_SECONDS = 5.0  # idle subscribers watched this long (from RSS_FROM subscribers)
ROW_GRACE = 120.0  # seconds a latency row waits past its last emit for a laggard
SATURATION_FIRST_RATE = 2.5  # events/s per job, doubled until saturated, then bisected
SATURATION_BISECTIONS = 2
SATURATION_ROUND_SECONDS = 3.0
SATURATION_BUDGET = 210.0  # seconds for the three targets' ladders, their starts included


def _plan(clients: int, seconds: float | None = None) -> tuple[float, int]:
    """Events per second per job and events per job (`seconds` of them, when given)."""
    if clients <= 100:
        rate, events = 20.0, 60
    elif clients <= 1000:
        rate, events = 2.0, 20
    else:
        rate, events = 1.0, 15
    if seconds is not None:
        events = max(3, round(rate * seconds))
    return rate, events


def _wait_listening(port: int, popen: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise RuntimeError(f"the relay exited ({popen.returncode})")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.1)
    raise RuntimeError("the relay did not listen")


class _Relay:
    """The floor: bench/progress.py --relay in a process of its own."""

    label = "relay"
    kind = "relay"

    def __init__(self):
        port = free_port()
        self.popen = subprocess.Popen(
            [sys.executable, __file__, "--relay", str(port), settings.REDIS_URL]
        )
        _wait_listening(port, self.popen)
        self.url = f"ws://127.0.0.1:{port}"
        self.pid = self.popen.pid

    def serving(self) -> list[psutil.Process]:
        return [psutil.Process(self.pid)]

    def key(self, job: Job) -> str:
        return job_channel(job.pk)

    def redis_connections(self) -> list[int]:
        return []

    def stop(self) -> None:
        self.popen.kill()
        self.popen.wait()


class _Served:
    """The real server, as `processes` uvicorn processes on one port."""

    kind = "server"

    def __init__(self, processes: int):
        self.processes = processes
        self.label = f"{processes} process{'es' if processes > 1 else ''}"
        self.server = Server(free_port(), WEB_CONCURRENCY=str(processes), **UNCAPPED)
        self.url = self.server.ws_url
        self.pid = self.server.pid

    def serving(self) -> list[psutil.Process]:
        """uvicorn's workers (its supervisor serves nothing), or the one process."""
        root = psutil.Process(self.pid)
        workers = [p for p in root.children() if "spawn_main" in " ".join(p.cmdline())]
        return workers or [root]

    def key(self, job: Job) -> str:
        return str(global_id("Job", job.pk))

    def redis_connections(self) -> list[int]:
        return _redis_connections(self.server)

    def stop(self) -> None:
        self.server.stop()


def _rss(target) -> int:
    total = 0
    for process in target.serving():
        with contextlib.suppress(psutil.NoSuchProcess):
            total += process.memory_info().rss
    return total


def _idle_cpu(target, clients: int) -> float:
    """Milliseconds of the target's CPU a second, per 1,000 connected subscribers, while no
    event comes (what their timers, pings and rechecks cost before any delivery)."""
    before = _cpu_seconds(target.pid)
    time.sleep(IDLE_CPU_SECONDS)
    return (_cpu_seconds(target.pid) - before) / IDLE_CPU_SECONDS * 1000 * 1000 / clients


def _settled_rss(target, processes: int = 1) -> int:
    """The serving processes' RSS once it stops moving (a worker still starting, a
    subscription still being set up)."""
    deadline = time.monotonic() + 20
    while len(target.serving()) < processes and time.monotonic() < deadline:
        time.sleep(0.2)
    previous = _rss(target)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        current = _rss(target)
        if abs(current - previous) < 256 * 1024:
            return current
        previous = current
    return previous


class _Clients:
    """One measurement's subscribers, spread over client processes (bench/subscribers.py)."""

    def __init__(
        self, target, keys: list[str], processes: int, token: str, timeout: float | None = None
    ):
        self.processes = max(1, min(processes, len(keys)))
        self.popens = []
        self.errors = {}  # each process's stderr, by pid: why it ended, if it did
        for i in range(self.processes):
            spec = {
                "kind": target.kind,
                "url": target.url,
                "token": token,
                "query": SUBSCRIBE,
                "subscriptions": keys[i :: self.processes],
                "connecting": max(4, 64 // self.processes),
                "connect_timeout": timeout,
            }
            errors = tempfile.TemporaryFile()  # noqa: SIM115  (closed in stop())
            popen = subprocess.Popen(
                [sys.executable, str(SUBSCRIBERS)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
                text=True,
            )
            self.popens.append(popen)
            self.errors[popen.pid] = errors
            self._tell(popen, spec)

    @staticmethod
    def _tell(popen: subprocess.Popen, message: dict) -> None:
        popen.stdin.write(json.dumps(message) + "\n")
        popen.stdin.flush()

    def _hear(self, popen: subprocess.Popen) -> dict:
        line = popen.stdout.readline()
        if not line:
            popen.wait()
            errors = self.errors[popen.pid]
            errors.seek(0)
            said = errors.read().decode(errors="replace").strip().splitlines() or ["(nothing)"]
            raise RuntimeError(f"a client process ended ({popen.returncode}): {said[-1]}")
        return json.loads(line)

    def wait_ready(self) -> int:
        """The subscribe retries it took (the target dropped subscribers as they came)."""
        return sum(self._hear(popen)["retries"] for popen in self.popens)

    def begin(self, ends: dict[str, int], wait: float) -> None:
        """Every process has begun the round when this returns."""
        for popen in self.popens:
            self._tell(popen, {"ends": ends, "wait": wait})
        for popen in self.popens:
            self._hear(popen)

    def results(self) -> list[dict]:
        return [self._hear(popen) for popen in self.popens]

    def stop(self) -> None:
        for popen in self.popens:
            with contextlib.suppress(OSError):
                self._tell(popen, {"stop": True})
                popen.stdin.close()
        for popen in self.popens:
            try:
                popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()
        for errors in self.errors.values():
            errors.close()


@dataclass
class _Round:
    """One round of events to every subscriber of a session."""

    latencies: list[float]
    expected: int
    seconds: float  # from the first emit to the last receipt
    cpu_seconds: float  # the target's processes' CPU time (user and system)
    client_shares: list[float]  # each client process's CPU time per second of its round
    client_waits: list[float]  # and its time runnable but waiting for a CPU, per second
    emitted_rate: float  # events/s per job the emitter kept

    def p(self, fraction: float) -> float:
        return harness.percentile(self.latencies, fraction) if self.latencies else float("nan")

    @property
    def received(self) -> float:
        return len(self.latencies) / self.expected

    @property
    def deliveries_per_second(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_per_delivery(self) -> float:
        return self.cpu_seconds / len(self.latencies) if self.latencies else float("nan")

    @property
    def client_busiest(self) -> float:
        return max(self.client_shares)

    @property
    def client_saturated(self) -> bool:
        return self.client_busiest >= CLIENT_SATURATED

    @property
    def client_waited(self) -> float:
        return max(self.client_waits)

    @property
    def client_starved(self) -> bool:
        return self.client_waited >= CLIENT_STARVED

    @property
    def client_bound(self) -> bool:
        """The measuring side, not the target, may be what the latencies show."""
        return self.client_saturated or self.client_starved


def _window(result: dict, planned: float) -> float:
    """A client process's round: from its start to its last receipt."""
    return result["last"] - result["began"] if result["last"] > result["began"] else planned


class _Session:
    """A target's subscribers connected over client processes, then measured round by
    round; the target's RSS growth while they connected (idle), per subscriber."""

    def __init__(self, target, jobs, clients, client_processes, token, profile=None, timeout=None):
        self.target, self.jobs, self.clients = target, jobs, clients
        keys = [target.key(jobs[i % len(jobs)]) for i in range(clients)]
        processes = getattr(target, "processes", 1)
        before = _settled_rss(target, processes)
        self.subscribers = _Clients(target, keys, client_processes, token, timeout)
        self.recorder = None
        try:
            self.retries = self.subscribers.wait_ready()
            self.rss_per_subscriber = (_settled_rss(target, processes) - before) / clients / 1024
            self.idle_cpu = _idle_cpu(target, clients) if clients >= RSS_FROM else None
            self.connections = target.redis_connections()
        except BaseException:
            self.subscribers.stop()
            raise
        if profile is not None:
            self.recorder = subprocess.Popen(
                [
                    *(str(Path(sys.executable).parent / "py-spy"), "record", "-f", "raw"),
                    *("-o", str(profile), "-p", str(target.pid)),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )

    def round(self, events: int, rate: float, grace: float) -> _Round:
        # Each subscriber's round ends when its job's seq reaches this (the emitter publishes
        # every event, and nothing else publishes to these jobs).
        with redis.Redis.from_url(settings.REDIS_URL) as client:
            ends = {
                self.target.key(job): int(client.hget(snapshot_key(job.pk), "seq") or 0) + events
                for job in self.jobs
            }
        loaded, start = multiprocessing.Event(), multiprocessing.Event()
        elapsed = multiprocessing.Value("d", 0.0)
        connections.close_all()
        emitter = multiprocessing.Process(
            target=_emit, args=([j.pk for j in self.jobs], events, rate, start, loaded, elapsed)
        )
        emitter.start()
        try:
            if not loaded.wait(timeout=120):
                raise RuntimeError("the emitter did not start")
            self.subscribers.begin(ends, wait=events / rate + grace)
            cpu = _cpu_seconds(self.target.pid)
            began = time.monotonic()
            start.set()
            results = self.subscribers.results()
            cpu = _cpu_seconds(self.target.pid) - cpu
        finally:
            if not start.is_set():
                emitter.terminate()
            emitter.join()
        last = max(r["last"] for r in results)
        return _Round(
            latencies=[latency for r in results for latency in r["latencies"]],
            expected=self.clients * events,
            seconds=last - began if last else 0.0,
            cpu_seconds=cpu,
            client_shares=[r["cpu"] / _window(r, events / rate) for r in results],
            client_waits=[r["waited"] / _window(r, events / rate) for r in results],
            emitted_rate=events / elapsed.value if elapsed.value else rate,
        )

    def close(self) -> None:
        if self.recorder is not None:
            self.recorder.send_signal(2)  # py-spy writes its file on SIGINT
            self.recorder.wait(timeout=60)
        self.subscribers.stop()


@contextlib.contextmanager
def _started(factory, warm_job: Job | None, token: str):
    """A fresh target (one row's leftovers, memory and collector state, colour no other),
    warmed by one subscriber of `warm_job` and a few events (first-use costs are not a
    subscriber's)."""
    target = factory()
    try:
        if warm_job is not None:
            warm = _Session(target, [warm_job], 1, 1, token)
            try:
                warm.round(3, 20.0, grace=30)
            finally:
                warm.close()
        yield target
    finally:
        target.stop()


def _factories(processes: list[int]):
    return [_Relay, *(lambda n=n: _Served(n) for n in processes)]


def _jobs(user, count: int) -> list[Job]:
    jobs = []
    for _ in range(count):
        job = job_create(kind=JobKind.SALES_REPORT, owner=user)
        job_attempt_start(job_id=job.pk)[1].started()
        jobs.append(job)
    return jobs


def _client_note(measured: _Round) -> str:
    shares = measured.client_shares
    note = (
        f"{len(shares)} client process{'es' if len(shares) > 1 else ''}, busiest at "
        f"{measured.client_busiest:.0%} of a core, waited for a CPU up to "
        f"{measured.client_waited:.0%} of the round"
    )
    if measured.client_saturated:
        note += " (CLIENT SATURATED: its latencies include its own queue)"
    elif measured.client_starved:
        note += " (CLIENT STARVED: the machine is busy; latencies include its run queue)"
    return note


def latency_rows(args, user, token, run: int) -> list[dict]:
    rows = []
    for clients in args.counts:
        rate, events = _plan(clients, args.seconds)
        jobs = _jobs(user, min(clients, 10))
        spread = args.client_processes or math.ceil(clients / CLIENTS_PER_PROCESS)
        print(
            f"{clients:,} subscribers over {len(jobs)} job{'s' if len(jobs) > 1 else ''}, "
            f"{rate:g} events/s per job, {events} events each",
            flush=True,
        )
        row = {"clients": clients, "jobs": len(jobs), "rate": rate, "targets": {}}
        for factory in _factories(args.processes):
            with _started(factory, jobs[0], token) as target:
                profile = None
                if args.profile and getattr(target, "processes", 0) == 1:
                    suffix = f"-run{run}" if len(args.runs_list) > 1 else ""
                    profile = args.profile / f"progress-{clients}{suffix}.txt"
                try:
                    session = _Session(target, jobs, clients, spread, token, profile=profile)
                except RuntimeError as error:  # its subscribers not all in within the timeout
                    print(f"  {target.label:<11} not measured: {error}", flush=True)
                    row["targets"][target.label] = _unmeasured(clients, events)
                    continue
                try:
                    measured = session.round(events, rate, grace=ROW_GRACE)
                finally:
                    session.close()
            figures = {
                "p50": measured.p(0.5) * 1000,
                "p99": measured.p(0.99) * 1000,
                "cpu": measured.cpu_per_delivery * 1e6,
                "received": len(measured.latencies),
                "expected": measured.expected,
                "rss": session.rss_per_subscriber,
                "idle_cpu": session.idle_cpu,
                "connections": session.connections,
                "client_busiest": measured.client_busiest,
                "client_waited": measured.client_waited,
                "client_processes": len(measured.client_shares),
                "retries": session.retries,
            }
            row["targets"][target.label] = figures
            print(
                f"  {target.label:<11} p50 {figures['p50']:8.1f} ms  p99 {figures['p99']:8.1f} ms  "
                f"CPU/delivery {figures['cpu']:7.1f} us  received {figures['received']:,} of "
                f"{figures['expected']:,}"
                + (
                    f"  RSS {figures['rss']:+.1f} KB/subscriber, idle CPU "
                    f"{figures['idle_cpu']:.1f} ms/s per 1,000"
                    if clients >= RSS_FROM
                    else ""
                )
                + (
                    f"  Redis connections {figures['connections']}"
                    if figures["connections"]
                    else ""
                )
                + f"\n  {'':<11} {_client_note(measured)}"
                + (
                    f"; {session.retries:,} subscribes retried (dropped while subscribing)"
                    if session.retries
                    else ""
                ),
                flush=True,
            )
        rows.append(row)
    return rows


def _unmeasured(clients: int, events: int) -> dict:
    """A target whose subscribers did not all get in: nothing measured (printed as "-")."""
    nan = float("nan")
    return {
        "p50": nan,
        "p99": nan,
        "cpu": nan,
        "received": 0,
        "expected": clients * events,
        "rss": nan,
        "connections": [],
        "client_busiest": 0.0,
        "client_waited": 0.0,
        "client_processes": 0,
        "retries": 0,
    }


def saturation(args, user, token) -> dict[str, dict]:
    """Each target's deliveries/s at the highest rate it kept up with (p99 within
    SATURATION_P99 and SATURATION_RECEIVED of the deliveries), on one ladder of rates per
    target with its subscribers connected once, within the budget."""
    clients = SATURATION_SUBSCRIBERS
    jobs = _jobs(user, 10)
    spread = args.client_processes or max(2, math.ceil(clients / CLIENTS_PER_PROCESS))
    factories = _factories(args.processes)
    share = args.saturate_seconds / len(factories)
    ends = time.monotonic() + args.saturate_seconds
    print(
        f"saturation: {clients:,} subscribers over {len(jobs)} jobs, the rate doubled then "
        f"bisected until p99 passes {SATURATION_P99 * 1000:.0f} ms or under "
        f"{SATURATION_RECEIVED:.0%} arrive; {share:.0f} s per target (what one leaves, the "
        "next may use)",
        flush=True,
    )
    sustained = {}
    for left, factory in enumerate(factories):
        deadline = time.monotonic() + (ends - time.monotonic()) / (len(factories) - left)
        # No warm-up: the ladder's first round is one, and the budget is short.
        with _started(factory, None, token) as target:
            try:
                session = _Session(
                    target,
                    jobs,
                    clients,
                    spread,
                    token,
                    timeout=max(10.0, deadline - time.monotonic()),
                )
            except RuntimeError as error:  # its subscribers not in within the budget
                print(f"  {target.label:<11} not measured: {error}", flush=True)
                sustained[target.label] = _sustained(None, None, None)
                continue
            try:
                sustained[target.label] = _ladder(target, session, deadline)
            finally:
                session.close()
    return sustained


def _ladder(target, session: _Session, deadline: float) -> dict:
    best = limit = good = bad = None
    bisections = 0
    rate = SATURATION_FIRST_RATE
    while True:
        events = max(10, round(rate * SATURATION_ROUND_SECONDS))
        if time.monotonic() + events / rate + SATURATION_GRACE + 3 > deadline:
            print(f"  {target.label:<11} budget spent", flush=True)
            break
        measured = session.round(events, rate, grace=SATURATION_GRACE)
        saturated = measured.p(0.99) > SATURATION_P99 or measured.received < SATURATION_RECEIVED
        print(
            f"  {target.label:<11} {rate:6.1f} events/s per job: "
            f"p99 {measured.p(0.99) * 1000:8.1f} ms, "
            f"{measured.deliveries_per_second:8.0f} deliveries/s, "
            f"{measured.received:6.1%} received, "
            f"CPU/delivery {measured.cpu_per_delivery * 1e6:6.1f} us"
            + (" SATURATED" if saturated else "")
            + (
                f"; emitter kept {measured.emitted_rate:.1f}/s"
                if measured.emitted_rate < 0.8 * rate
                else ""
            )
            + f"\n  {'':<11} {_client_note(measured)}",
            flush=True,
        )
        if saturated:
            bad, limit = rate, measured
        else:
            good = rate
            if best is None or measured.deliveries_per_second > best.deliveries_per_second:
                best = measured
        if bad is None:
            rate *= 2
        elif good is None or bisections == SATURATION_BISECTIONS:
            break
        else:
            rate, bisections = math.sqrt(good * bad), bisections + 1
    return _sustained(best, limit, bad)


def _sustained(best: _Round | None, limit: _Round | None, limit_rate: float | None) -> dict:
    # Saturated at the first rate: what it delivered then, as a ceiling.
    figure = best or limit
    return {
        "rate": figure.deliveries_per_second if figure else float("nan"),
        "cpu": figure.cpu_per_delivery * 1e6 if figure else float("nan"),
        # What stopped the ladder was the client, or the emitter: the figure is a floor.
        "client_bound": bool(limit and limit.client_bound),
        "emitter_bound": bool(limit and limit.emitted_rate < 0.8 * limit_rate),
        "unsaturated": limit is None and best is not None,
        "unmeasured": best is None and limit is None,
        "first_saturated": best is None and limit is not None,
    }


# --- the tables ------------------------------------------------------------------------
def _number(value: float) -> str:
    if value != value:  # nan
        return "-"
    return f"{value:,.2f}" if value < 10 else f"{value:,.1f}" if value < 1000 else f"{value:,.0f}"


def _median(values) -> float:
    """Of the runs that measured it (nan: one that did not)."""
    measured = [v for v in values if v == v]
    return statistics.median(measured) if measured else float("nan")


def _ratio(values: list[float]) -> str:
    values = [v for v in values if v == v and v != float("inf")]
    if not values:
        return "-"
    median = f"{statistics.median(values):.2f}x"
    if len(values) == 1:
        return median
    return f"{median} ({min(values):.2f}-{max(values):.2f})"


def _over(ours: float, baseline: float) -> float:
    return ours / baseline if baseline else float("inf")


def latency_table(runs: list[list[dict]]) -> str:
    lines = [
        "| subscribers | target | p50 ms | p99 ms | CPU/delivery us | p50 vs relay "
        "| p99 vs relay | CPU vs relay | received | RSS/subscriber KB "
        "| idle CPU ms/s per 1,000 | Redis conns/process | busiest client process |",
        "|---" * 13 + "|",
    ]
    saturated = []
    for index, row in enumerate(runs[0]):
        heading = (
            f"{row['clients']:,} over {row['jobs']} job{'s' if row['jobs'] > 1 else ''}, "
            f"{row['rate']:g} ev/s each"
        )
        for label in row["targets"]:
            each = [run[index]["targets"][label] for run in runs]
            relay = [run[index]["targets"]["relay"] for run in runs]
            median = {k: _median(f[k] for f in each) for k in ("p50", "p99", "cpu", "rss")}
            idle = [f["idle_cpu"] for f in each if f.get("idle_cpu") is not None]
            ratios = (
                ["", "", ""]
                if label == "relay"
                else [
                    _ratio([_over(f[k], r[k]) for f, r in zip(each, relay, strict=True)])
                    for k in ("p50", "p99", "cpu")
                ]
            )
            worst = min(each, key=lambda f: f["received"] / f["expected"])
            received = (
                "all"
                if worst["received"] >= worst["expected"]
                else f"{worst['received'] / worst['expected']:.1%} ({worst['received']:,} of {worst['expected']:,})"
            )
            connections = [max(c) for c in zip(*(f["connections"] for f in each), strict=True)]
            busiest = max(f["client_busiest"] for f in each)
            waited = max(f["client_waited"] for f in each)
            if busiest >= CLIENT_SATURATED or waited >= CLIENT_STARVED:
                saturated.append(f"{heading}, {label}")
            lines.append(
                "| "
                + " | ".join(
                    [
                        heading,
                        label,
                        _number(median["p50"]),
                        _number(median["p99"]),
                        _number(median["cpu"]),
                        *ratios,
                        received,
                        _number(median["rss"]) if row["clients"] >= RSS_FROM else "",
                        _number(_median(idle)) if idle else "",
                        ", ".join(f"{c}{' (over 2!)' if c > 2 else ''}" for c in connections),
                        f"{busiest:.0%} of a core, waited {waited:.0%}, "
                        f"{each[0]['client_processes']} process"
                        + ("es" if each[0]["client_processes"] > 1 else "")
                        + (" SATURATED" if busiest >= CLIENT_SATURATED else "")
                        + (" STARVED" if waited >= CLIENT_STARVED else ""),
                    ]
                )
                + " |"
            )
    retried = [
        f"{row['clients']:,} subscribers, {label}: {max(r[index]['targets'][label]['retries'] for r in runs):,}"
        for index, row in enumerate(runs[0])
        for label in row["targets"]
        if any(r[index]["targets"][label]["retries"] for r in runs)
    ]
    if retried:
        lines.append("")
        lines.append(
            "Subscribes the target dropped while they came in (retried; at most, of the runs): "
            + "; ".join(retried)
        )
    if saturated:
        lines.append("")
        lines.append(
            f"Client-bound (a client process at {CLIENT_SATURATED:.0%} of a core or more, or "
            f"waiting for a CPU {CLIENT_STARVED:.0%} of its round or more: its latencies include "
            "its own queue or the machine's): " + "; ".join(saturated)
        )
    return "\n".join(lines)


def saturation_table(runs: list[dict[str, dict]]) -> str:
    lines = [
        f"| saturation: {SATURATION_SUBSCRIBERS:,} subscribers over 10 jobs | deliveries/s "
        "| CPU/delivery us | deliveries per CPU-second | vs relay | vs one process | note |",
        "|---" * 7 + "|",
    ]
    for label in runs[0]:
        each = [run[label] for run in runs]
        notes = []
        if any(f["client_bound"] for f in each):
            notes.append("client-bound: a floor")
        if any(f["emitter_bound"] for f in each):
            notes.append("emitter-bound: a floor")
        if any(f["unsaturated"] for f in each):
            notes.append("not saturated within the budget: a floor")
        if any(f["first_saturated"] for f in each):
            notes.append(
                f"saturated at the first rate ({SATURATION_FIRST_RATE:g}/s per job): "
                "what it delivered then"
            )
        if any(f["unmeasured"] for f in each):
            notes.append("no round within the budget (raise --saturate-seconds)")
        lines.append(
            "| "
            + " | ".join(
                [
                    label,
                    _number(_median(f["rate"] for f in each)),
                    _number(_median(f["cpu"] for f in each)),
                    # What the target's CPU alone allows: steadier than the p99 criterion on
                    # a machine busy with other work.
                    _number(_over(1e6, _median(f["cpu"] for f in each))),
                    ""
                    if label == "relay"
                    else _ratio([_over(run[label]["rate"], run["relay"]["rate"]) for run in runs]),
                    _ratio([_over(run[label]["rate"], run["1 process"]["rate"]) for run in runs])
                    if label != "1 process" and label != "relay" and "1 process" in runs[0]
                    else "",
                    "; ".join(notes),
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--counts",
        default=None,
        help="subscriber counts, comma-separated (default 1,100,1000,10000; none with --saturate)",
    )
    parser.add_argument("--processes", default="1,2", help="server process counts")
    parser.add_argument("--runs", type=int, default=1, help="repeat everything; medians printed")
    parser.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="events per row for this long (default: each row's plan)",
    )
    parser.add_argument(
        "--client-processes",
        type=int,
        default=None,
        help=f"client processes per measurement (default: one per {CLIENTS_PER_PROCESS:,} subscribers, two at saturation)",
    )
    parser.add_argument("--saturate", action="store_true")
    parser.add_argument(
        "--saturate-seconds",
        type=float,
        default=SATURATION_BUDGET,
        help="the saturation ladders' budget, every target together",
    )
    parser.add_argument("--profile", type=Path, default=None)
    args = parser.parse_args()
    # Stopped (a timeout, a test): the finally blocks and atexit stop what the run started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    limit = _raise_open_files_limit()
    if args.counts is None:
        args.counts = "" if args.saturate else "1,100,1000,10000"
    args.counts = [int(c) for c in args.counts.split(",") if c]
    args.processes = [int(n) for n in args.processes.split(",") if n]
    args.runs_list = list(range(1, args.runs + 1))
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)

    user = make_user()
    token = make_token(user)
    print(
        f"progress latency, emit -> receive; ours (jobProgress over graphql-transport-ws) vs a "
        f"bare Redis -> websocket relay, each row on fresh processes; Redis {settings.REDIS_URL}; "
        f"open files {limit}; load average {psutil.getloadavg()[0]:.2f} on "
        f"{psutil.cpu_count()} cores",
        flush=True,
    )
    latency_runs, saturation_runs = [], []
    for run in args.runs_list:
        if args.runs > 1:
            print(f"run {run} of {args.runs}", flush=True)
        if args.counts:
            latency_runs.append(latency_rows(args, user, token, run))
        if args.saturate:
            saturation_runs.append(saturation(args, user, token))
    what = f"medians of {args.runs} runs; ratios: median (range)" if args.runs > 1 else "one run"
    if latency_runs:
        print(f"\nlatency ({what}); ratios against the relay in the same run\n")
        print(latency_table(latency_runs))
    if saturation_runs:
        print(f"\nsaturation ({what})\n")
        print(saturation_table(saturation_runs))
    print(f"\nload average at the end {psutil.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
