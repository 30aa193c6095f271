"""Worker emit -> client receive latency through the real server, against a bare relay.

For 1, 100 and 1,000 concurrent websocket subscriptions, the same emitter (the workers'
JobReporter, in its own process) publishes progress while clients measure how long each
event took to arrive (the event's own `at` stamp to receipt). Each count runs twice in
the same run: through the real ASGI server (jobProgress over graphql-transport-ws) and
through a bare relay (one Redis subscription, raw fan-out to plain websockets), the floor.
It also counts the server process's Redis connections at the largest count.

    .venv/bin/python bench/progress.py [--counts 1,100,1000]
"""

import argparse
import asyncio
import json
import sys
import time
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

    async with websockets.serve(handler, "127.0.0.1", port, max_queue=None):
        await pump()


if __name__ == "__main__" and sys.argv[1:2] == ["--relay"]:
    asyncio.run(_relay(int(sys.argv[2]), sys.argv[3]))
    sys.exit()


import multiprocessing  # noqa: E402
import subprocess  # noqa: E402

import psutil  # noqa: E402
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


async def _server_client(url, token, job_gid, events, latencies, ready):
    async with websockets.connect(url, subprotocols=["graphql-transport-ws"], max_queue=None) as ws:
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
        while True:
            event = json.loads(await ws.recv())["payload"]["data"]["jobProgress"]
            latencies.append(_received_at(event["at"]))
            if event["seq"] >= first + events:
                return


async def _relay_client(url, channel, events, latencies, ready):
    async with websockets.connect(url, max_queue=None) as ws:
        await ws.send(channel)
        await ws.recv()
        ready()
        seen = 0
        while seen < events:
            event = json.loads(await ws.recv())
            latencies.append(_received_at(event["at"]))
            seen += 1


def _measure(
    clients, jobs, events, rate, make_client, while_subscribed=lambda: None
) -> list[float]:
    latencies: list[float] = []
    start = multiprocessing.Event()
    connections.close_all()
    emitter = multiprocessing.Process(
        target=_emit, args=([j.pk for j in jobs], events, rate, start)
    )
    emitter.start()

    async def run():
        waiting = clients
        all_ready = asyncio.Event()

        def ready():
            nonlocal waiting
            waiting -= 1
            if not waiting:
                all_ready.set()

        tasks = [
            asyncio.create_task(make_client(jobs[i % len(jobs)], events, latencies, ready))
            for i in range(clients)
        ]
        await asyncio.wait_for(all_ready.wait(), timeout=120)
        while_subscribed()
        start.set()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=events / rate + 60)

    asyncio.run(run())
    emitter.join()
    return latencies


def _redis_connections(pid: int) -> int:
    port = int(settings.REDIS_URL.rsplit(":", 1)[1].split("/")[0])
    process = psutil.Process(pid)
    everyone = [process, *process.children(recursive=True)]
    return sum(
        1 for p in everyone for c in p.net_connections("tcp") if c.raddr and c.raddr.port == port
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--counts", default="1,100,1000")
    args = parser.parse_args()

    user = make_user()
    token = make_token(user)
    server = Server(free_port())
    relay_port = free_port()
    relay = subprocess.Popen(
        [sys.executable, __file__, "--relay", str(relay_port), settings.REDIS_URL]
    )
    time.sleep(1.0)
    print(
        f"progress latency, emit -> receive (ms); server vs bare relay; Redis {settings.REDIS_URL}"
    )
    connection_counts: list[int] = []
    try:
        for clients in (int(c) for c in args.counts.split(",")):
            # The client side is one Python process; at 1,000 sockets it is held to what it can read.
            rate = 20.0 if clients <= 100 else 2.0
            events = 60 if clients <= 100 else 20
            jobs = []
            for _ in range(min(clients, 10)):
                job = job_create(kind=JobKind.SALES_REPORT, owner=user)
                job_attempt_start(job_id=job.pk)[1].started()
                jobs.append(job)
            relayed = _measure(
                clients,
                jobs,
                events,
                rate,
                lambda job, *rest: _relay_client(
                    f"ws://127.0.0.1:{relay_port}", job_channel(job.pk), *rest
                ),
            )
            served = _measure(
                clients,
                jobs,
                events,
                rate,
                lambda job, *rest: _server_client(
                    server.ws_url, token, str(global_id("Job", job.pk)), *rest
                ),
                while_subscribed=lambda: connection_counts.append(_redis_connections(server.pid)),
            )
            print(
                f"{clients} subscriptions over {len(jobs)} jobs, {rate:g} events/s per job, {len(served)} events received"
            )
            for label, fraction in (("p50", 0.5), ("p99", 0.99)):
                print(
                    harness.row(
                        label,
                        harness.percentile(served, fraction) * 1000,
                        harness.percentile(relayed, fraction) * 1000,
                        "ms",
                    )
                )
            print(f"  Redis connections held by the server process: {connection_counts[-1]}")
    finally:
        relay.kill()
        server.stop()


if __name__ == "__main__":
    main()
