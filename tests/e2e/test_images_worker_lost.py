"""An image part whose worker keeps dying is given up on, like any job's task: its job
ends FAILURE instead of the part being redelivered for ever."""

import os
import signal
import time

import pytest
from celery import current_app
from django.conf import settings
from django.db import transaction

from domains.jobs.services import job_dispatch
from domains.media.models import Image, ImageStatus
from tests.fixtures.waiting import job_finished
from tests.media import images
from tests.media.factories import make_image

pytestmark = pytest.mark.e2e

PART = "media.optimize_image"


def _running(
    task_name: str, task_id: str | None, dead: set[int], timeout: float = 60
) -> tuple[str, int]:
    """(task id, worker pid) of `task_name` once a live process of the suite's worker runs
    it (the worker may list a task under a process it has not yet noticed is dead)."""
    worker = f"worker@{os.uname().nodename}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        active = current_app.control.inspect([worker], timeout=1, limit=1).active() or {}
        for task in active.get(worker, []):
            if (
                task["name"] == task_name
                and task_id in (None, task["id"])
                and (task["worker_pid"] not in dead)
            ):
                return task["id"], task["worker_pid"]
        time.sleep(0.02)
    raise AssertionError(f"{task_name} {task_id or ''} never ran")


def test_a_part_that_keeps_killing_its_worker_ends_the_job_failed(live, user):
    # A large PNG: each part decodes it whole, so a part runs long enough to be caught.
    original = images.photo((8000, 6000), image_format="PNG", gps=False)
    with transaction.atomic():
        image = make_image(owner=user, original=original)
        job_dispatch(job=image.job, task_name="media.process_image", image_id=image.pk)

    part_id, dead = None, set()
    for _ in range(settings.JOB_MAX_ATTEMPTS):
        part_id, pid = _running(PART, part_id, dead)
        os.kill(pid, signal.SIGKILL)
        dead.add(pid)

    job = job_finished(image.job_id, timeout=90)
    image = Image.objects.get(pk=image.pk)
    assert job.status == "FAILURE"
    assert f"Gave up after {settings.JOB_MAX_ATTEMPTS} attempts" in job.error
    assert image.status == ImageStatus.FAILED
    assert image.error_message == job.error
    assert live.worker.alive()
