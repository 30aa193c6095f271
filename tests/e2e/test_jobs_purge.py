"""Retention on a real server and worker: after `manage.py jobs_purge`, a purged job's files
(its report's CSV, its image's optimized copy and thumbnails) answer 404 and the job is
not found, while the user's records stay (the report without its file, the image and its
original) and a younger job keeps everything."""

from datetime import timedelta
from io import StringIO

import httpx
import pytest
from django.core.management import call_command
from django.utils import timezone

from domains.jobs.models import Job
from schema.base import node_pk
from testbed.waiting import job_finished
from tests.domains.media import images
from tests.domains.media.conftest import IMAGE, upload, uploaded
from tests.e2e.test_job_progress import _sales

pytestmark = pytest.mark.e2e

REPORT = "query($id: ID!) { report(id: $id) { id fileUrl job { id } } }"
JOB = "query($id: ID!) { job(id: $id) { id status } }"
GENERATE_REPORT = """
mutation($input: SalesReportInput!) { salesReportGenerate(input: $input) { report { id } job { id } errors { code } } }
"""


def _fetch(url: str, token: str) -> int:
    return httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=30).status_code


def _report(client) -> tuple[str, str]:
    today = timezone.now().date().isoformat()
    started = client.data(GENERATE_REPORT, {"input": {"startDate": today, "endDate": today}})
    payload = started["salesReportGenerate"]
    assert payload["errors"] == []
    return payload["report"]["id"], payload["job"]["id"]


def _ended_days_ago(job_id: str, days: int) -> None:
    pk = node_pk(job_id, "Job")
    assert job_finished(pk).status == "SUCCESS"
    Job.objects.filter(pk=pk).update(finished_at=timezone.now() - timedelta(days=days))


def test_a_purged_jobs_files_answer_404_and_a_younger_ones_stay(live, user):
    _sales(user, 50)
    client = live.client(user)
    old_report, old_report_job = _report(client)
    young_report, young_report_job = _report(client)
    image = uploaded(upload(live.server.graphql_url, images.photo((640, 400)), token=client.token))
    for job_id, days in ((old_report_job, 45), (young_report_job, 10), (image["job"]["id"], 31)):
        _ended_days_ago(job_id, days)
    old_csv = client.data(REPORT, {"id": old_report})["report"]["fileUrl"]
    young_csv = client.data(REPORT, {"id": young_report})["report"]["fileUrl"]
    before = client.data(IMAGE, {"id": image["image"]["id"]})["image"]
    derivatives = [before["optimizedUrl"], *(t["url"] for t in before["thumbnails"])]
    assert [_fetch(u, client.token) for u in [old_csv, young_csv, *derivatives]] == [200] * 6

    printed = StringIO()
    call_command("jobs_purge", "--older-than-days", "30", stdout=printed)

    assert _fetch(old_csv, client.token) == 404
    assert [_fetch(u, client.token) for u in derivatives] == [404] * 4
    assert _fetch(before["originalUrl"], client.token) == 200  # the user's upload stays
    assert _fetch(young_csv, client.token) == 200
    assert client.data(JOB, {"id": old_report_job}) == {"job": None}
    assert client.data(JOB, {"id": image["job"]["id"]}) == {"job": None}
    assert client.data(JOB, {"id": young_report_job})["job"]["status"] == "SUCCESS"
    assert client.data(REPORT, {"id": old_report}) == {
        "report": {"id": old_report, "fileUrl": None, "job": None}
    }
    after = client.data(IMAGE, {"id": image["image"]["id"]})["image"]
    assert (after["optimizedUrl"], after["thumbnails"], after["job"]) == (None, [], None)
    assert "  jobs: 2" in printed.getvalue().splitlines()
    assert "  image derivatives: 4" in printed.getvalue().splitlines()
