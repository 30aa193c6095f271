"""The progress path on a three-node Redis Cluster that the test starts itself: a real
server and a real worker with REDIS_CLUSTER_URL, sharded pub/sub (SPUBLISH/SSUBSCRIBE),
one pub/sub connection per shard. A job is followed to its end, resumed with afterSeq,
and followed across a restart of the node that holds its slot."""

import asyncio

import pytest
from django.test import override_settings

from domains.infra.redis import cluster_client
from domains.jobs.attempts import job_attempt_start
from domains.jobs.events import job_channel, log_key, snapshot_key
from domains.jobs.models import Job, JobKind, JobStatus
from domains.jobs.reporter import JobReporter
from domains.jobs.services import job_create
from schema.base import global_id
from testbed.factories import make_token
from testbed.graphql import JOB_PROGRESS, followed, subscriptions
from testbed.stack import RedisServer, Server, start_worker
from testbed.waiting import wait_until
from tests.conftest import Stack
from tests.e2e.test_job_progress import _collect, _sales, _start_report
from tests.fixtures.redis_cluster import RedisCluster, cluster_binaries

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.cluster,
    pytest.mark.skipif(
        cluster_binaries() is None,
        reason="no redis-server 7+ and redis-cli on PATH: the Redis Cluster tests need them",
    ),
]

SUBSCRIBERS = 10


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster"))
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def cluster_stack(cluster, django_db_setup, django_db_blocker, tmp_path_factory):
    """A server and a worker whose progress path is the cluster, on a broker of their own
    (the suite's stack has a worker on the suite's broker, which would take their tasks)."""
    broker = RedisServer(tmp_path_factory.mktemp("cluster-broker"))
    env = {
        "REDIS_CLUSTER_URL": cluster.url,
        "CELERY_BROKER_URL": broker.url,
        "REPORT_MAX_ROWS_PER_SECOND": "4000",
    }
    worker = start_worker("cluster-worker", **env)
    server = Server(**env)
    yield Stack(server, worker)
    server.stop()
    worker.stop()
    broker.kill()


@pytest.fixture
def on_cluster(cluster, cluster_stack, transactional_db):
    """This process publishes and reads the progress path on the cluster too; each test
    starts with it empty (job ids are reused once rows are flushed)."""
    cluster.flush()
    cluster_client.cache_clear()
    with override_settings(REDIS_CLUSTER_URL=cluster.url):
        yield cluster_stack
    cluster_client.cache_clear()


def _pubsub_connections(cluster: RedisCluster) -> list[int]:
    """The hub's pub/sub connections on each node (with no subscription left, a pub/sub
    connection is listed as a normal one)."""
    return [
        sum(1 for c in node.client().client_list() if c["name"] == "jobstream-pubsub")
        for node in cluster.nodes
    ]


def test_a_job_is_followed_to_its_end_through_its_shard(on_cluster, cluster, user):
    _sales(user, 2_000)
    client = on_cluster.client(user)
    job_id, job_pk = _start_report(client)

    events = asyncio.run(_collect(on_cluster, job_id, client.token))

    finished = Job.objects.get(pk=job_pk)
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(set(seqs))
    assert (events[-1]["status"], events[-1]["seq"]) == (JobStatus.SUCCESS, finished.seq)
    assert events[-1]["result"]["rowCount"] == 2_000
    shard = cluster.node_serving(job_channel(job_pk))
    assert shard.client().exists(snapshot_key(job_pk), log_key(job_pk)) == 2
    assert _pubsub_connections(cluster) == [1, 1, 1]


def test_resume_with_after_seq_replays_exactly_the_missed_events(on_cluster, user):
    _sales(user, 4_000)
    client = on_cluster.client(user)
    job_id, _ = _start_report(client)
    everything = asyncio.run(_collect(on_cluster, job_id, client.token, after_seq=0))
    assert [e["seq"] for e in everything] == list(range(1, len(everything) + 1))
    cut = len(everything) // 2

    resumed = asyncio.run(_collect(on_cluster, job_id, client.token, after_seq=cut))

    assert resumed == everything[cut:]
    assert resumed[-1]["status"] == "SUCCESS"


def _restart_mid_stream(cluster: RedisCluster, reporter: JobReporter):
    """The worker's side: progress, the job's shard killed and started again, progress
    while it is down (only the row has it) and after, then the end."""

    def run() -> None:
        shard = cluster.node_serving(job_channel(reporter.job_id))
        for done in range(1, 4):
            reporter.progress(current=done, total=8, force=True)
        shard.kill()
        reporter.progress(current=4, total=8, force=True)
        shard.restart()
        cluster.wait_until_ok()
        for done in range(5, 8):
            reporter.progress(current=done, total=8, force=True)
        reporter.succeeded({"rows": 8})

    return run


async def _follow_across(server: Server, job_id: str, token: str, workers_side) -> list:
    async with subscriptions(
        SUBSCRIBERS, server.ws_url, JOB_PROGRESS, {"id": job_id}, token=token
    ) as subs:
        firsts = await asyncio.gather(*(s.next() for s in subs))
        rests = asyncio.ensure_future(asyncio.gather(*(s.collect(timeout=90) for s in subs)))
        await asyncio.to_thread(workers_side)
        return followed(subs, firsts, await rests, "jobProgress")


def test_every_subscriber_gets_every_end_across_a_restart_of_the_jobs_shard(
    on_cluster, cluster, user
):
    job = job_create(kind=JobKind.SALES_REPORT, owner=user)
    _, reporter = job_attempt_start(job_id=job.pk)
    reporter.started()

    followed = asyncio.run(
        _follow_across(
            on_cluster.server,
            str(global_id("Job", job.pk)),
            make_token(user),
            _restart_mid_stream(cluster, reporter),
        )
    )

    ended = Job.objects.get(pk=job.pk)
    assert ended.status == JobStatus.SUCCESS
    for completed, events in followed:
        seqs = [e["seq"] for e in events]
        assert completed
        assert seqs == sorted(set(seqs)), f"seq went backwards or repeated: {seqs}"
        assert events[0]["status"] == JobStatus.STARTED
        assert (events[-1]["status"], events[-1]["result"]) == (JobStatus.SUCCESS, {"rows": 8})
        assert events[-1]["seq"] == ended.seq
    # The hub is back on every shard, one connection each.
    assert wait_until(lambda: _pubsub_connections(cluster) == [1, 1, 1], timeout=30)
