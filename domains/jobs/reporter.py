"""A running job's progress, as its task (or a part of it) reports it.

Each change is published at once (domains.jobs.publish); the row is written at status
changes and at a bounded rate, and each write renews the job's lease.
"""

import logging
import time
from typing import Any

import redis
from django.conf import settings
from django.db.models import F
from django.db.models.functions import Greatest
from django.utils import timezone

from domains.jobs.ending import job_end
from domains.jobs.events import EVENT_FIELDS
from domains.jobs.lease import job_lease_renewed, lease_until
from domains.jobs.models import ACTIVE_STATUSES, TERMINAL_STATUSES, Job, JobStatus
from domains.jobs.publish import emit

logger = logging.getLogger(__name__)


class JobCancelled(Exception):
    """Raised inside a task when its job was cancelled; the task base ends it CANCELLED."""


class JobAlreadyFinished(Exception):
    """The job reached a terminal status elsewhere (cancelled, or finished by another run)."""


class JobReporter:
    """A running job's progress, as the task (or a part of it) reports it."""

    def __init__(self, job: Job):
        self.job_id = job.pk
        self.owner_id = job.owner_id
        self.seq = job.seq
        self.state: dict[str, Any] = {name: getattr(job, name) for name in EVENT_FIELDS}
        self.state.update(
            stage=job.stage or None, message=job.message or None, error=job.error or None
        )
        self._last_db_write = 0.0
        self._last_emit = 0.0
        self._last_emitted_progress: float | None = None

    # --- lifecycle (the task base calls these) ---------------------------------------
    def started(self) -> None:
        self._change(JobStatus.STARTED, {"error": None}, extra_db={"started_at": timezone.now()})

    def retrying(self, error: str, *, countdown: float = 0) -> None:
        """Waiting for a retry: the lease covers the wait, so the watchdog leaves it."""
        lease = lease_until(countdown)
        self._change(JobStatus.RETRY, {"error": error}, extra_db={"lease_expires_at": lease})

    def succeeded(self, result: Any = None) -> bool:
        return self._end(JobStatus.SUCCESS, result=result)

    def failed(self, error: str) -> bool:
        return self._end(JobStatus.FAILURE, error=error)

    # --- progress (the domain code calls this) ---------------------------------------
    def progress(
        self,
        *,
        current: int | None = None,
        total: int | None = None,
        stage: str | None = None,
        message: str | None = None,
        progress: float | None = None,
        force: bool = False,
    ) -> None:
        """Record progress; emits when it moved by 1% or a second passed (or `force`).

        Raises JobCancelled once the job has been asked to stop.
        """
        changes: dict[str, Any] = {}
        if current is not None:
            changes["current"] = current
        if total is not None:
            changes["total"] = total
        if stage is not None and stage != self.state["stage"]:
            changes["stage"] = stage
            force = True
        if message is not None:
            changes["message"] = message
        self.state.update(changes)
        if progress is None and self.state["total"]:
            progress = min(1.0, (self.state["current"] or 0) / self.state["total"])
        if progress is not None:
            self.state["progress"] = round(progress, 6)
        now = time.monotonic()
        moved = (
            self._last_emitted_progress is None
            or self.state["progress"] is None
            or self.state["progress"] - self._last_emitted_progress >= 0.01
        )
        if not (force or moved or now - self._last_emit >= 1.0):
            return
        self._last_emit = now
        self._last_emitted_progress = self.state["progress"]
        self.state["status"] = JobStatus.PROGRESS
        cancel = self._publish()
        if now - self._last_db_write >= settings.JOB_DB_WRITE_INTERVAL or force:
            self._write_row(JobStatus.PROGRESS, {})
        if cancel:
            raise JobCancelled

    # --- internals -------------------------------------------------------------------
    def _change(self, status: JobStatus, changes: dict[str, Any], extra_db: dict) -> None:
        self.state.update(changes, status=status)
        cancel = self._publish()
        self._write_row(status, extra_db)
        if cancel:
            raise JobCancelled

    @property
    def progress_state(self) -> dict[str, Any]:
        """What the reporter knows that the row may not have yet (for the job's end)."""
        return {name: self.state[name] for name in ("progress", "current", "total", "stage")}

    def _end(self, status: JobStatus, **changes: Any) -> bool:
        ended = job_end(job_id=self.job_id, status=status, state=self.progress_state, **changes)
        if ended:
            self.seq = Job.objects.values_list("seq", flat=True).get(pk=self.job_id)
        return ended

    def _publish(self) -> bool:
        """Publish the current state; returns whether cancellation was requested."""
        try:
            seq, cancel = emit(
                job_id=self.job_id,
                owner_id=self.owner_id,
                state=self.state,
                floor=self.seq,
                floor_is_rows=False,
            )
            if seq == -2:
                # A new job, or Redis restarted or was flushed: other parts may have moved the
                # row on since this reporter last emitted, and nothing goes out below it.
                row_seq, row_status = Job.objects.values_list("seq", "status").get(pk=self.job_id)
                if row_status in TERMINAL_STATUSES:
                    raise JobAlreadyFinished
                self.seq = max(self.seq, row_seq)
                seq, cancel = emit(
                    job_id=self.job_id,
                    owner_id=self.owner_id,
                    state=self.state,
                    floor=self.seq,
                    floor_is_rows=True,
                )
        except redis.RedisError:
            # Progress is not worth failing the job over; the row still records it.
            logger.warning("job.progress_unpublished", extra={"job_id": self.job_id}, exc_info=True)
            self.seq += 1
            return False
        if seq == -1:
            raise JobAlreadyFinished
        self.seq = seq
        return cancel

    def _write_row(self, status: JobStatus, extra: dict[str, Any]) -> bool:
        self._last_db_write = time.monotonic()
        job_lease_renewed(self.job_id)
        fields = {
            "status": status,
            "progress": self.state["progress"],
            "current": self.state["current"],
            "total": self.state["total"],
            "stage": self.state["stage"] or "",
            "message": (self.state["message"] or "")[:500],
            "error": self.state["error"] or "",
            # Parts report from several processes: the row keeps the greatest seq.
            "seq": Greatest(F("seq"), self.seq),
            "lease_expires_at": lease_until(),
            **extra,
        }
        return bool(Job.objects.filter(pk=self.job_id, status__in=ACTIVE_STATUSES).update(**fields))
