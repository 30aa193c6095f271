"""Fair starts end to end: real servers, real workers, real Redis. One user's backlog never
holds another's job, a user never runs more than the limit, a waiting job can be
cancelled, retried and watched, and a long backlog is not mistaken for a loss.

Every assertion counts (which jobs ended before which, how many ran at once by their
rows' start and end); none times anything."""

import asyncio
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from itertools import cycle

import pytest

from domains.jobs.models import Job, JobStatus
from schema.base import global_id, node_pk
from testbed.factories import make_order, make_token, make_user
from testbed.graphql import GraphQLClient, Subscription
from testbed.stack import Server, stack_alone, start_worker
from testbed.waiting import job_finished, wait_until
from tests.fixtures.commerce import COMMERCE_ENV, clear_sandbox_state, stocked_product

pytestmark = [pytest.mark.e2e, pytest.mark.broker]

PAY = """
mutation($input: PaymentProcessInput!) {
  paymentProcess(input: $input) { job { id } errors { code message } }
}
"""
CANCEL = "mutation($id: ID!) { jobCancel(id: $id) { job { status } errors { code } } }"
RETRY = "mutation($id: ID!) { jobRetry(id: $id) { job { id status } errors { code } } }"
JOB = "query($id: ID!) { job(id: $id) { status queuePosition waitingReason } }"
PROGRESS = """
subscription($id: ID!) { jobProgress(id: $id) { seq status queuePosition waitingReason } }
"""
# tok_slow: the sandbox gateway answers after SANDBOX_GATEWAY_SLOW_SECONDS.
ENV = {
    **COMMERCE_ENV,
    "SANDBOX_GATEWAY_SLOW_SECONDS": "2",
    "JOB_MAX_RUNNING_PER_USER": "2",
    "JOB_LANE_SLOTS": "interactive:2",
}


@pytest.fixture(scope="module")
def two_of_each(django_db_setup, django_db_blocker):
    """Two server processes and two worker processes (one slot each), all on one database
    and one Redis: the cap and the turns must hold across them."""
    with stack_alone("fair", concurrency=1, **ENV) as stack:
        # Every process calls the one sandbox gateway, the first server's.
        env = {**ENV, "SANDBOX_BASE_URL": f"{stack.server.url}/sandbox"}
        second_server = Server(name="fair-server-2", **env)
        second_worker = start_worker("fair-worker-2", concurrency=1, **env)
        try:
            yield [stack.server, second_server]
        finally:
            second_server.stop()
            second_worker.stop()


@cache
def _token(user) -> str:
    return make_token(user)


def _pay(server: Server, user, method: str = "tok_slow") -> int:
    return _pay_many([server], user, 1, method)[0]


def _pay_many(servers: list[Server], user, count: int, method: str = "tok_slow") -> list[int]:
    """`count` payments of the user's, their mutations sent at once (10 at a time) over
    `servers` in turn: their jobs, oldest first."""
    orders = [
        make_order(customer=user, lines=[(stocked_product(), 1)], status="pending")
        for _ in range(count)
    ]
    token = _token(user)

    def pay(server: Server, order) -> int:
        variables = {
            "input": {
                "orderId": str(global_id("Order", order.pk)),
                "method": method,
                "idempotencyKey": f"fair-{order.pk}",
            }
        }
        payload = GraphQLClient(server.graphql_url, token).data(PAY, variables)["paymentProcess"]
        assert payload["errors"] == [], payload
        return node_pk(payload["job"]["id"], "Job")

    with ThreadPoolExecutor(max_workers=min(count, 10)) as pool:
        started = list(pool.map(pay, cycle(servers), orders))
    return list(
        Job.objects.filter(pk__in=started).order_by("created_at", "pk").values_list("pk", flat=True)
    )


def _waiting(job_ids: list[int]) -> int:
    return Job.objects.filter(pk__in=job_ids, admitted_at__isnull=True).count()


def _most_running_at_once(jobs: list[Job]) -> int:
    """The most of `jobs` that ran at once, by their rows' start and end."""
    moments = [(job.started_at, 1) for job in jobs] + [(job.finished_at, -1) for job in jobs]
    running = most = 0
    for _, step in sorted(moments, key=lambda moment: (moment[0], moment[1])):
        running += step
        most = max(most, running)
    return most


@pytest.fixture
def shoppers(transactional_db):
    clear_sandbox_state()
    return make_user(), make_user()


def test_another_users_job_ends_before_at_most_three_of_a_flooding_users(two_of_each, shoppers):
    flooder, other = shoppers
    flood = _pay_many(two_of_each, flooder, 10)
    assert _waiting(flood) >= 5  # a backlog: at most 2 running, a few more ended

    single = _pay(two_of_each[1], other)

    ended = [job_finished(pk, timeout=120) for pk in [*flood, single]]
    assert {job.status for job in ended} == {JobStatus.SUCCESS}
    single_end = ended[-1].finished_at
    assert sum(job.finished_at < single_end for job in ended[:-1]) <= 3
    assert _most_running_at_once(ended[:-1]) <= 2  # JOB_MAX_RUNNING_PER_USER, every process


def test_a_waiting_job_shows_its_place_and_its_subscribers_see_it_move(two_of_each, shoppers):
    user, _ = shoppers
    jobs = _pay_many(two_of_each, user, 5)
    last = str(global_id("Job", jobs[-1]))
    client = GraphQLClient(two_of_each[1].graphql_url, _token(user))

    waiting = client.data(JOB, {"id": last})["job"]

    assert waiting["status"] == "PENDING"
    assert waiting["queuePosition"] >= 2  # 3 unless one of the first two ended already
    assert waiting["waitingReason"] == "2 of your jobs are running; the limit is 2"

    async def places() -> list[dict]:
        seen = []
        async with Subscription(
            two_of_each[1].ws_url, PROGRESS, {"id": last}, token=_token(user)
        ) as sub:
            while (event := (await sub.next(timeout=60))["jobProgress"])["status"] == "PENDING":
                seen.append(event)
            seen.append(event)
        return seen

    seen = asyncio.run(places())
    positions = [event["queuePosition"] for event in seen if event["status"] == "PENDING"]
    assert positions == sorted(positions, reverse=True)  # it only moves forward
    assert positions[-1] == 1
    assert len(set(positions)) >= 2
    assert seen[-1]["queuePosition"] is None  # started: no place any more
    for pk in jobs:
        job_finished(pk, timeout=60)


def test_a_waiting_job_is_cancelled_at_once_and_its_retry_runs(two_of_each, shoppers):
    user, _ = shoppers
    jobs = _pay_many(two_of_each, user, 3)
    waiting = str(global_id("Job", jobs[-1]))
    client = GraphQLClient(two_of_each[1].graphql_url, _token(user))

    cancelled = client.data(CANCEL, {"id": waiting})["jobCancel"]

    assert cancelled == {"job": {"status": "CANCELLED"}, "errors": []}
    assert Job.objects.get(pk=jobs[-1]).dispatched_at is None  # never sent
    retried = client.data(RETRY, {"id": waiting})["jobRetry"]
    assert retried["errors"] == []
    retry = job_finished(node_pk(retried["job"]["id"], "Job"), timeout=60)
    assert retry.status == JobStatus.SUCCESS, retry.error
    assert [job_finished(pk).status for pk in jobs[:2]] == [JobStatus.SUCCESS] * 2


def test_with_a_limit_of_one_no_user_ever_has_two_jobs_running(transactional_db):
    clear_sandbox_state()
    users = [make_user(), make_user()]
    env = {**ENV, "JOB_MAX_RUNNING_PER_USER": "1", "SANDBOX_GATEWAY_SLOW_SECONDS": "0.5"}
    with stack_alone("capone", concurrency=2, **env) as stack:
        started = {user.pk: _pay_many([stack.server], user, 4) for user in users}
        ended = {
            owner: [job_finished(pk, timeout=120) for pk in jobs] for owner, jobs in started.items()
        }

    for jobs in ended.values():
        assert {job.status for job in jobs} == {JobStatus.SUCCESS}
        assert _most_running_at_once(jobs) == 1
    # The two users' jobs did run beside each other: the limit is per user.
    assert _most_running_at_once([job for jobs in ended.values() for job in jobs]) == 2


def test_a_backlog_on_one_slot_past_the_grace_and_lease_is_not_taken_for_a_loss(
    transactional_db,
):
    clear_sandbox_state()
    user = make_user()
    env = {
        **ENV,
        "JOB_LANE_SLOTS": "interactive:1",
        "JOB_MAX_RUNNING_PER_USER": "4",
        "SANDBOX_GATEWAY_SLOW_SECONDS": "0.3",
        "JOB_PENDING_GRACE_SECONDS": "2",
        "JOB_LEASE_SECONDS": "3",
        "JOB_WATCHDOG_INTERVAL": "1",
        "JOB_MAX_REVIVALS": "3",
    }
    with stack_alone("backlog", concurrency=1, beat=True, **env) as stack:
        jobs = _pay_many([stack.server], user, 50)
        wait_until(
            lambda: not Job.objects.filter(pk__in=jobs, finished_at__isnull=True).exists(),
            timeout=300,
            message="the backlog to drain",
        )
        swept = "Task jobs.watchdog[" in "\n".join(stack.worker.log_lines())

    ended = Job.objects.filter(pk__in=jobs)
    assert {job.status for job in ended} == {JobStatus.SUCCESS}
    # None given up: none was revived as often as that takes. (The 49 waiting were never
    # sent, so their grace never ran; the one sent may be sent again when the busy slot,
    # which also runs the watchdog, takes it past its 2 s grace.)
    assert max(job.revivals for job in ended) < 3
    assert swept  # the watchdog did run meanwhile
