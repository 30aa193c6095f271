"""The progress reporter: how a worker tells the world about a job.

Each change is one Redis round trip (a Lua script): the seq is incremented, the event is
stored as the job's snapshot, appended to the job's capped log (a stream whose entry ids
are the seqs, so a resume is one XRANGE), and PUBLISHed to the job's, the owner's and the
all-jobs channels. The database row is written at status changes and at a bounded rate.
"""

import contextlib
import json
import logging
import time
from typing import Any

import redis
from django.conf import settings
from django.db.models import F
from django.db.models.functions import Greatest
from django.utils import timezone

from domains.jobs.events import (
    ALL_JOBS_CHANNEL,
    EVENT_FIELDS,
    job_channel,
    log_key,
    snapshot_key,
    user_channel,
)
from domains.jobs.models import ACTIVE_STATUSES, TERMINAL_STATUSES, Job, JobStatus
from domains.redis import sync_client

logger = logging.getLogger(__name__)

# KEYS: snapshot hash, log stream. ARGV: floor seq, ttl seconds, log maxlen, status,
# event body without its opening brace, whether the floor is the row's ('1' or '0'), then
# the channels to publish to.
# Returns {seq, cancel flag}; seq -1 when the job already ended, -2 when Redis has lost the
# job's seq (a restart or a flush) and the floor is not the row's (nothing is written).
_EMIT = """
local current = redis.call('HGET', KEYS[1], 'status')
if current == 'SUCCESS' or current == 'FAILURE' or current == 'CANCELLED' or current == 'TIMEOUT' then
  return {-1, redis.call('HGET', KEYS[1], 'cancel') or '0'}
end
if ARGV[6] == '0' and redis.call('HEXISTS', KEYS[1], 'seq') == 0 then
  return {-2, redis.call('HGET', KEYS[1], 'cancel') or '0'}
end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local floor = tonumber(ARGV[1])
if seq <= floor then
  seq = floor + 1
  redis.call('HSET', KEYS[1], 'seq', seq)
end
local event = '{"seq":' .. seq .. ',' .. ARGV[5]
redis.call('HSET', KEYS[1], 'event', event, 'status', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.pcall('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], seq .. '-0', 'e', event)
redis.call('EXPIRE', KEYS[2], ARGV[2])
for i = 7, #ARGV do
  redis.call('PUBLISH', ARGV[i], event)
end
return {seq, redis.call('HGET', KEYS[1], 'cancel') or '0'}
"""


class JobCancelled(Exception):
    """Raised inside a task when its job was cancelled; the task base marks it CANCELLED."""


class JobAlreadyFinished(Exception):
    """The job reached a terminal status elsewhere (cancelled, or finished by another run)."""


class JobReporter:
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
        self._script = sync_client().register_script(_EMIT)

    # --- lifecycle (the task base calls these) ---------------------------------------
    def started(self) -> None:
        self._change(JobStatus.STARTED, {"error": None}, extra_db={"started_at": timezone.now()})

    def retrying(self, error: str) -> None:
        self._change(JobStatus.RETRY, {"error": error})

    def succeeded(self, result: Any = None) -> bool:
        return self._finish(JobStatus.SUCCESS, {"result": result, "progress": 1.0})

    def failed(self, error: str) -> bool:
        return self._finish(JobStatus.FAILURE, {"error": error})

    def cancelled(self) -> bool:
        return self._finish(JobStatus.CANCELLED, {"message": "Cancelled."})

    def timed_out(self, error: str) -> bool:
        return self._finish(JobStatus.TIMEOUT, {"error": error})

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
        cancel = self._emit()
        if now - self._last_db_write >= settings.JOB_DB_WRITE_INTERVAL or force:
            self._write_row(JobStatus.PROGRESS, {})
        if cancel:
            raise JobCancelled

    def raise_if_cancelled(self) -> None:
        if Job.objects.filter(pk=self.job_id, cancel_requested=True).exists():
            raise JobCancelled

    # --- internals -------------------------------------------------------------------
    def _change(
        self, status: JobStatus, changes: dict[str, Any], extra_db: dict | None = None
    ) -> None:
        self.state.update(changes, status=status)
        cancel = self._emit()
        self._write_row(status, extra_db or {})
        if cancel:
            raise JobCancelled

    def _finish(self, status: JobStatus, changes: dict[str, Any]) -> bool:
        """End the job; the database's conditional update decides who ends it, once."""
        self.state.update(changes, status=status)
        if not self._write_row(status, {"finished_at": timezone.now()}, seq=self.seq + 1):
            logger.info("job.already_finished", extra={"job_id": self.job_id, "status": status})
            return False
        expected_seq = self.seq + 1
        # A terminal snapshot left by an earlier run may refuse it; the row is the authority.
        with contextlib.suppress(JobAlreadyFinished):
            self._emit()
        if self.seq != expected_seq:
            Job.objects.filter(pk=self.job_id).update(seq=self.seq)
        return True

    def _emit(self) -> bool:
        """Publish the current state; returns whether cancellation was requested."""
        body = json.dumps(
            {"job_id": self.job_id, **self.state, "at": timezone.now().isoformat()},
            default=str,
            separators=(",", ":"),
        )[1:]
        channels = [job_channel(self.job_id), ALL_JOBS_CHANNEL]
        if self.owner_id:
            channels.append(user_channel(self.owner_id))
        try:
            seq, cancel = self._publish(body, channels, floor_is_rows=False)
            if int(seq) == -2:
                # A new job, or Redis restarted or was flushed: other parts may have moved the
                # row on since this reporter last emitted, and nothing goes out below it.
                row_seq, row_status = Job.objects.values_list("seq", "status").get(pk=self.job_id)
                if row_status in TERMINAL_STATUSES:
                    if self.state["status"] not in TERMINAL_STATUSES:
                        raise JobAlreadyFinished
                    row_seq -= 1  # the end's own seq: written to the row just before this emit
                self.seq = max(self.seq, row_seq)
                seq, cancel = self._publish(body, channels, floor_is_rows=True)
        except redis.RedisError:
            # Progress is not worth failing the job over; the row still records it.
            logger.warning("job.progress_unpublished", extra={"job_id": self.job_id}, exc_info=True)
            self.seq += 1
            return False
        if int(seq) == -1:
            raise JobAlreadyFinished
        self.seq = int(seq)
        return cancel == "1"

    def _publish(self, body: str, channels: list[str], *, floor_is_rows: bool) -> tuple[int, str]:
        return self._script(
            keys=[snapshot_key(self.job_id), log_key(self.job_id)],
            args=[
                self.seq,
                int(settings.JOB_SNAPSHOT_TTL.total_seconds()),
                settings.JOB_EVENT_LOG_MAXLEN,
                self.state["status"],
                body,
                "1" if floor_is_rows else "0",
                *channels,
            ],
        )

    def _write_row(self, status: JobStatus, extra: dict[str, Any], seq: int | None = None) -> bool:
        self._last_db_write = time.monotonic()
        fields = {
            "status": status,
            "progress": self.state["progress"],
            "current": self.state["current"],
            "total": self.state["total"],
            "stage": self.state["stage"] or "",
            "message": (self.state["message"] or "")[:500],
            "result": self.state["result"],
            "error": self.state["error"] or "",
            # Parts of one job write the row in any order: the greater seq stays.
            "seq": Greatest(F("seq"), seq if seq is not None else self.seq),
            **extra,
        }
        return bool(Job.objects.filter(pk=self.job_id, status__in=ACTIVE_STATUSES).update(**fields))


def job_attempt_start(*, job_id: int) -> tuple[Job, JobReporter] | None:
    """Claim a delivery of a job's task: count the attempt, mark it STARTED.

    Returns None when the job is gone or already ended (a redelivered task that finished).
    """
    claimed = Job.objects.filter(pk=job_id, status__in=ACTIVE_STATUSES).update(
        attempts=F("attempts") + 1
    )
    if not claimed:
        return None
    job = Job.objects.get(pk=job_id)
    return job, JobReporter(job)


def job_part_redelivered(*, job_id: int, part_id: str) -> int:
    """Count a redelivery of one part of a job (its worker was lost while running it).

    A part does not claim the job, so its attempts are not the job's: they are counted
    per part, in Redis, where every worker sees them. Returns the part's deliveries so
    far, the first included.
    """
    key = f"job:{job_id}:part:{part_id}:redeliveries"
    with sync_client().pipeline() as pipe:
        pipe.incr(key)
        pipe.expire(key, settings.JOB_SNAPSHOT_TTL)
        redeliveries, _ = pipe.execute()
    return redeliveries + 1
