"""A job event: the whole visible state of a job at one seq, as workers publish it.

Every event carries the full state, so the latest one is always enough: a slow consumer
may skip intermediate events without missing anything that matters.
"""

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from domains.infra.redis import channel_name
from domains.jobs.models import TERMINAL_STATUSES, Job, JobStatus

EVENT_FIELDS = ("status", "progress", "current", "total", "stage", "message", "result", "error")


# A job's channel, snapshot and log share its hash tag, so that on a Redis Cluster they sit
# in one slot: one node writes the snapshot and log and publishes, in one script.
def job_channel(job_id: int) -> str:
    return channel_name(f"job:{{{job_id}}}")


def user_channel(user_id: int) -> str:
    return channel_name(f"user:{user_id}")


def all_jobs_channel() -> str:
    return channel_name("jobs:all")


def snapshot_key(job_id: int) -> str:
    return f"job:{{{job_id}}}:snapshot"


def log_key(job_id: int) -> str:
    return f"job:{{{job_id}}}:log"


def is_terminal(event: Mapping[str, Any]) -> bool:
    return event["status"] in TERMINAL_STATUSES


def event_from_job(job: Job) -> dict[str, Any]:
    """The event a job's database row stands for (used when Redis has no snapshot)."""
    return {
        "seq": job.seq,
        "job_id": job.pk,
        **{name: getattr(job, name) for name in EVENT_FIELDS},
        "stage": job.stage or None,
        "message": job.message or None,
        "error": job.error or None,
        "cancel_requested_at": (
            job.cancel_requested_at.isoformat() if job.cancel_requested_at else None
        ),
        "queue_position": job.queue_position,
        "waiting_reason": job.waiting_reason or None,
        "at": (job.finished_at or job.updated_at or job.created_at).isoformat(),
    }


def decode(raw: str | bytes) -> dict[str, Any]:
    return json.loads(raw)


_STATUSES = frozenset(JobStatus.values)  # (Django builds `values` anew at each use: 4 us)


def is_event(value: object) -> bool:
    """Whether a decoded message holds what every stream relies on (the emit writes all of it)."""
    return (
        isinstance(value, dict)
        and isinstance(value.get("job_id"), int)
        and isinstance(value.get("seq"), int)
        and isinstance(value.get("status"), str)
        and value["status"] in _STATUSES
        and isinstance(value.get("at"), str)
    )


def parse_at(event: Mapping[str, Any]) -> datetime:
    return datetime.fromisoformat(event["at"])
