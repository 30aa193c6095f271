"""Another user's jobs, reports, streams and files are refused; staff see all."""

import asyncio

import httpx
import pytest
from django.utils import timezone
from strawberry.relay import GlobalID

from domains.jobs.models import JobStatus
from testbed.graphql import JOB_PROGRESS, GraphQLClient, Subscription, SubscriptionError
from testbed.waiting import job_finished

pytestmark = pytest.mark.e2e

GENERATE = """
mutation($input: SalesReportInput!) { salesReportGenerate(input: $input) { report { id } job { id } errors { code } } }
"""
READ = """
query($job: ID!, $report: ID!) {
  job(id: $job) { id status }
  report(id: $report) { id fileUrl }
  jobs { totalCount edges { node { id } } }
  reports { totalCount }
}
"""
CANCEL = "mutation($id: ID!) { jobCancel(id: $id) { job { id } errors { code } } }"


@pytest.fixture
def finished_report(live, user):
    owner = live.client(user)
    today = timezone.now().date().isoformat()
    started = owner.data(GENERATE, {"input": {"startDate": today, "endDate": today}})[
        "salesReportGenerate"
    ]
    job = job_finished(int(GlobalID.from_id(started["job"]["id"]).node_id), timeout=30)
    assert job.status == JobStatus.SUCCESS
    return owner, started["job"]["id"], started["report"]["id"]


def test_the_owner_reads_their_job_report_and_file(live, finished_report):
    owner, job_id, report_id = finished_report

    seen = owner.data(READ, {"job": job_id, "report": report_id})

    assert seen["job"]["status"] == "SUCCESS"
    # The report's job, and the email that told its owner it was ready.
    assert (seen["jobs"]["totalCount"], seen["reports"]["totalCount"]) == (2, 1)
    download = httpx.get(
        seen["report"]["fileUrl"], headers={"Authorization": f"Bearer {owner.token}"}
    )
    assert download.status_code == 200
    assert download.text.startswith("order_number,")


def test_another_user_sees_nothing_of_them(live, finished_report, other_user):
    owner, job_id, report_id = finished_report
    file_url = owner.data(READ, {"job": job_id, "report": report_id})["report"]["fileUrl"]
    stranger = live.client(other_user)

    seen = stranger.data(READ, {"job": job_id, "report": report_id})

    assert seen["job"] is None
    assert seen["report"] is None
    assert seen["jobs"] == {"totalCount": 0, "edges": []}
    assert seen["reports"]["totalCount"] == 0
    assert stranger.data(CANCEL, {"id": job_id})["jobCancel"]["errors"][0]["code"] == "NOT_FOUND"
    assert (
        httpx.get(file_url, headers={"Authorization": f"Bearer {stranger.token}"}).status_code
        == 404
    )
    assert httpx.get(file_url).status_code == 404


def test_another_users_job_progress_subscription_is_refused(live, finished_report, other_user):
    _, job_id, _ = finished_report
    stranger = live.client(other_user)

    async def subscribe():
        async with Subscription(
            live.server.ws_url, JOB_PROGRESS, {"id": job_id}, token=stranger.token
        ) as sub:
            return await sub.next()

    with pytest.raises(SubscriptionError) as refused:
        asyncio.run(subscribe())
    assert "No such job" in str(refused.value.payload)


def test_anonymous_viewers_get_no_data(live, finished_report):
    _, job_id, report_id = finished_report
    anonymous = GraphQLClient(live.server.graphql_url)

    body = anonymous.execute(READ, {"job": job_id, "report": report_id})

    assert body["data"]["job"] is None
    assert body["data"]["report"] is None
    assert body["data"]["jobs"]["edges"] == []
    assert body["data"]["reports"]["totalCount"] in (0, None)


def test_a_bad_token_is_refused_at_connection_init(live):
    async def connect():
        async with Subscription(live.server.ws_url, JOB_PROGRESS, {"id": "x"}, token="jst_forged"):
            pass

    with pytest.raises(Exception) as refused:
        asyncio.run(connect())
    assert "4403" in str(refused.value) or "Forbidden" in str(refused.value)


def test_staff_see_every_job(live, finished_report, staff_user):
    _, job_id, report_id = finished_report

    seen = live.client(staff_user).data(READ, {"job": job_id, "report": report_id})

    assert seen["job"]["id"] == job_id
    assert seen["report"]["id"] == report_id
