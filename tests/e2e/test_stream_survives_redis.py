"""Redis going away mid-stream: 50 websocket subscribers follow one job on a real server
while the server's Redis is SIGKILLed, kept down for 5 s and started again (with its
append-only file, as `make run` runs it; in one variant flushed before the end). The job runs as a chord would: its task and a part report progress, each
through its own JobReporter, and the chord's callback ends it from the row. Every
subscriber gets the job's end and completes, and none sees its seq go backwards."""

import asyncio
import threading
import time
from collections.abc import Callable

import pytest

from domains.infra.redis import sync_client
from domains.jobs.attempts import job_attempt_start
from domains.jobs.models import Job, JobKind, JobStatus
from domains.jobs.reporter import JobReporter
from domains.jobs.services import job_create
from schema.base import global_id
from testbed.factories import make_token
from testbed.graphql import JOB_PROGRESS, followed, subscriptions
from testbed.stack import RedisServer, Server
from tests.fixtures.redis import redis_at

pytestmark = pytest.mark.e2e

SUBSCRIBERS = 50
OUTAGE_SECONDS = 5
RESULT = {"rows": 4}


def _end_from_the_row(job_id: int) -> None:
    """What a chord's callback does: a reporter made from the row ends the job."""
    JobReporter(Job.objects.get(pk=job_id)).succeeded(RESULT)


def _outage(
    redis: RedisServer, task: JobReporter, part: JobReporter, variant: str
) -> Callable[[threading.Event], bool]:
    """The workers' side; returns whether every subscriber completed while Redis was down."""

    def run(all_completed: threading.Event) -> bool:
        for done in range(1, 4):
            task.progress(current=done, total=8, force=True)
        redis.kill()
        task.progress(current=4, total=8, force=True)  # unpublished: only the row has it
        if variant == "ends_while_down":
            _end_from_the_row(task.job_id)  # the end never reaches Redis
            completed_while_down = all_completed.wait(timeout=60)
            redis.restart()
            return completed_while_down
        time.sleep(OUTAGE_SECONDS)
        redis.restart()
        if variant == "flushed_before_the_end":
            task.progress(current=5, total=8, force=True)
            sync_client().flushall()
        part.progress(current=6, total=8, force=True)  # the part's own seq is far behind
        _end_from_the_row(task.job_id)
        return False

    return run


async def _follow(server: Server, job_id: str, token: str, outage) -> tuple[list, bool]:
    """Each subscriber's (completed, events) while `outage` runs, and what it returned."""
    all_completed = threading.Event()
    async with subscriptions(
        SUBSCRIBERS, server.ws_url, JOB_PROGRESS, {"id": job_id}, token=token
    ) as subs:
        firsts = await asyncio.gather(*(s.next() for s in subs))

        async def collect_all():
            try:
                return await asyncio.gather(*(s.collect(timeout=90) for s in subs))
            finally:
                all_completed.set()

        rests = asyncio.ensure_future(collect_all())
        outcome = await asyncio.to_thread(outage, all_completed)
        return followed(subs, firsts, await rests, "jobProgress"), outcome


@pytest.mark.parametrize("variant", ["restarted", "flushed_before_the_end", "ends_while_down"])
def test_every_subscriber_gets_the_end_across_a_redis_outage(user, tmp_path, variant):
    redis = RedisServer(tmp_path / "redis")
    try:
        with redis_at(redis.url):
            # 50 subscribers of one user, each on its own socket (the per-user cap is 20).
            server = Server(REDIS_URL=redis.url, GRAPHQL_WS_MAX_PER_USER="60")
            try:
                job = job_create(kind=JobKind.SALES_REPORT, owner=user)
                _, task = job_attempt_start(job_id=job.pk)
                task.started()
                part = JobReporter(Job.objects.get(pk=job.pk))
                followed, completed_while_down = asyncio.run(
                    _follow(
                        server,
                        str(global_id("Job", job.pk)),
                        make_token(user),
                        _outage(redis, task, part, variant),
                    )
                )
            finally:
                server.stop()
    finally:
        redis.kill()

    ended = Job.objects.get(pk=job.pk)
    assert ended.status == JobStatus.SUCCESS
    assert len(followed) == SUBSCRIBERS
    for completed, events in followed:
        seqs = [e["seq"] for e in events]
        assert completed
        assert seqs == sorted(set(seqs)), f"seq went backwards or repeated: {seqs}"
        assert events[0]["status"] == JobStatus.STARTED
        assert (events[-1]["status"], events[-1]["result"]) == (JobStatus.SUCCESS, RESULT)
        assert events[-1]["seq"] == ended.seq
    if variant == "ends_while_down":
        assert completed_while_down, "subscriptions outlived their job while Redis was down"
