"""How a job's state changes reach the world: its progress, its claim, and its one end.

Each change is one Redis round trip (a Lua script): the seq is incremented, the event is
stored as the job's snapshot, appended to the job's capped log (a stream whose entry ids
are the seqs, so a resume is one XRANGE), and PUBLISHed to the job's, the owner's and the
all-jobs channels. The database row is written at status changes and at a bounded rate;
each write renews the job's lease.

`job_end` is the one transition that ends a job, whatever the path (a task's outcome, a
chord's callbacks, a cancel, the watchdog): the conditional update of the row and the
domain record's terminal state (the handler its domain registered for the job's kind) in
one transaction, exactly once, then the terminal event.
"""

import json
import logging
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import redis
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.db.models.functions import Greatest
from django.utils import timezone

from domains.jobs.events import (
    EVENT_FIELDS,
    all_jobs_channel,
    decode,
    event_from_job,
    job_channel,
    log_key,
    snapshot_key,
    user_channel,
)
from domains.jobs.models import ACTIVE_STATUSES, TERMINAL_STATUSES, Job, JobKind, JobStatus
from domains.metrics import job_duration, jobs_finished, jobs_started
from domains.redis import (
    progress_client,
    progress_on_cluster,
    progress_publish,
    progress_publish_command,
    sync_client,
)

logger = logging.getLogger(__name__)

# KEYS: snapshot hash, log stream. ARGV: floor seq, ttl seconds, log maxlen, status,
# event body without its opening brace, whether the floor is the row's ('1' or '0'), the
# publish command (PUBLISH, or SPUBLISH on a cluster), the cancel request's time as a JSON
# string ('' when the caller knows of none), the seq the snapshot must still have ('-':
# any), then the channels to publish to (on a cluster only the job's, which shares the
# keys' slot).
# The hash's `cancel` field holds the accepted cancel's time; every event carries it as
# `cancel_requested_at` (null while none), so the latest event alone says so.
# Returns {seq, cancel request or ''}; seq -1 when the job already ended, -2 when Redis has
# lost the job's seq (a restart or a flush) and the floor is not the row's, -3 when the
# snapshot moved past the expected seq (nothing is written then).
_EMIT = """
local cancel = redis.call('HGET', KEYS[1], 'cancel')
local current = redis.call('HGET', KEYS[1], 'status')
if current == 'SUCCESS' or current == 'FAILURE' or current == 'CANCELLED' or current == 'TIMEOUT' then
  return {-1, cancel or ''}
end
if ARGV[9] ~= '-' and (redis.call('HGET', KEYS[1], 'seq') or '') ~= ARGV[9] then
  return {-3, cancel or ''}
end
if ARGV[6] == '0' and redis.call('HEXISTS', KEYS[1], 'seq') == 0 then
  return {-2, cancel or ''}
end
if not cancel and ARGV[8] ~= '' then
  cancel = ARGV[8]
  redis.call('HSET', KEYS[1], 'cancel', cancel)
end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local floor = tonumber(ARGV[1])
if seq <= floor then
  seq = floor + 1
  redis.call('HSET', KEYS[1], 'seq', seq)
end
local event = '{"seq":' .. seq .. ',"cancel_requested_at":' .. (cancel or 'null') .. ',' .. ARGV[5]
redis.call('HSET', KEYS[1], 'event', event, 'status', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.pcall('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], seq .. '-0', 'e', event)
redis.call('EXPIRE', KEYS[2], ARGV[2])
for i = 10, #ARGV do
  redis.call(ARGV[7], ARGV[i], event)
end
return {seq, cancel or ''}
"""


class JobCancelled(Exception):
    """Raised inside a task when its job was cancelled; the task base ends it CANCELLED."""


class JobAlreadyFinished(Exception):
    """The job reached a terminal status elsewhere (cancelled, or finished by another run)."""


# --- publishing ---------------------------------------------------------------------------
def _emit(
    *,
    job_id: int,
    owner_id: int | None,
    state: dict[str, Any],
    floor: int,
    floor_is_rows: bool,
    cancel_requested_at: str = "",
    expect_seq: str = "-",
) -> tuple[int, bool]:
    """Publish `state` with a seq above `floor`; -1 when the job already ended, -2 when
    Redis has lost the job's seq and `floor` was not read from the row, -3 when the
    snapshot's seq is no longer `expect_seq`. Also returns whether a cancel was accepted."""
    body = json.dumps(
        {"job_id": job_id, **state, "at": timezone.now().isoformat()},
        default=str,
        separators=(",", ":"),
    )[1:]
    channels = [job_channel(job_id), all_jobs_channel()]
    if owner_id:
        channels.append(user_channel(owner_id))
    # On a cluster the script publishes in its own slot; the rest go to their own shards.
    in_script, after = (channels[:1], channels[1:]) if progress_on_cluster() else (channels, [])
    client = progress_client()
    seq, cancel = _emit_script()(
        keys=[snapshot_key(job_id), log_key(job_id)],
        args=[
            floor,
            int(settings.JOB_SNAPSHOT_TTL.total_seconds()),
            settings.JOB_EVENT_LOG_MAXLEN,
            state["status"],
            body,
            "1" if floor_is_rows else "0",
            progress_publish_command(),
            cancel_requested_at,
            expect_seq,
            *in_script,
        ],
        client=client,  # the process's client of the moment, not the first one's
    )
    seq = int(seq)
    if seq > 0:
        for channel in after:
            event = f'{{"seq":{seq},"cancel_requested_at":{cancel or "null"},{body}'
            progress_publish(client, channel, event)
    return seq, bool(cancel)


_script = None


def _emit_script():
    global _script
    if _script is None:
        _script = progress_client().register_script(_EMIT)
    return _script


def _lease_until() -> Any:
    return timezone.now() + timedelta(seconds=settings.JOB_LEASE_SECONDS)


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
        lease = _lease_until() + timedelta(seconds=countdown)
        self._change(JobStatus.RETRY, {"error": error}, extra_db={"lease_expires_at": lease})

    def succeeded(self, result: Any = None) -> bool:
        return self._end(JobStatus.SUCCESS, result=result)

    def failed(self, error: str) -> bool:
        return self._end(JobStatus.FAILURE, error=error)

    def cancelled(self) -> bool:
        return self._end(JobStatus.CANCELLED)

    def timed_out(self, error: str) -> bool:
        return self._end(JobStatus.TIMEOUT, error=error)

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
            seq, cancel = _emit(
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
                seq, cancel = _emit(
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
        _lease_renewed_at[self.job_id] = self._last_db_write
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
            "lease_expires_at": _lease_until(),
            **extra,
        }
        return bool(Job.objects.filter(pk=self.job_id, status__in=ACTIVE_STATUSES).update(**fields))


# --- the claim and the lease ----------------------------------------------------------
def job_attempt_start(
    *, job_id: int, redelivered: bool = False, retry: bool = False
) -> tuple[Job, JobReporter] | None:
    """Claim a delivery of a job's task: count the attempt, hold the lease.

    A delivery may claim a job that is pending or waiting for its retry, one whose lease
    lapsed (its worker stopped), or any running job when the broker says the message was
    redelivered (its worker was lost) or when it is a retry (sent by the run before it,
    which may not have recorded RETRY yet). Anything else is a duplicate of a delivery that is
    alive, or of a job that ended: None, and the caller drops it. A Celery retry is not
    another attempt (retries have their own budget); a redelivery is.
    """
    claimable = Q(status__in=[JobStatus.PENDING, JobStatus.RETRY]) | Q(
        lease_expires_at__lt=timezone.now()
    )
    if redelivered or retry:
        # The delivery before it is gone (its worker was lost, or it sent this retry and
        # ended): this one carries the job on, whatever state that one left.
        claimable |= Q(status__in=ACTIVE_STATUSES)
    claimed = Job.objects.filter(claimable, pk=job_id, status__in=ACTIVE_STATUSES).update(
        attempts=F("attempts") + (0 if retry and not redelivered else 1),
        lease_expires_at=_lease_until(),
    )
    if not claimed:
        return None
    job = Job.objects.get(pk=job_id)
    if job.attempts == 1 and not retry:
        jobs_started.labels(kind=job.kind).inc()
    return job, JobReporter(job)


# When this process last renewed each job's lease (every row write renews it).
_lease_renewed_at: dict[int, float] = {}


def job_lease_renewed_ago(job_id: int) -> float:
    """Seconds since this process last renewed the job's lease (inf: never)."""
    return time.monotonic() - _lease_renewed_at.get(job_id, float("-inf"))


def job_lease_forget(job_id: int) -> None:
    """This process no longer runs the job."""
    _lease_renewed_at.pop(job_id, None)


def job_lease_renew(*, job_id: int, extra_seconds: float = 0) -> bool:
    """Keep a running job's lease while its worker is busy (and `extra_seconds` more, for
    a part that waits to be retried); False once the job ended."""
    lease = _lease_until() + timedelta(seconds=extra_seconds)
    _lease_renewed_at[job_id] = time.monotonic()
    return bool(
        Job.objects.filter(pk=job_id, status__in=ACTIVE_STATUSES).update(lease_expires_at=lease)
    )


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


# KEYS: the job's parts-done hash. ARGV: part id, its units, ttl. Returns the sum.
_PART_DONE = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
local sum = 0
for _, units in ipairs(redis.call('HVALS', KEYS[1])) do sum = sum + tonumber(units) end
return sum
"""


def job_part_done(*, job_id: int, part_id: str, units: int = 1) -> int:
    """Count a finished part of a job, across every worker; returns the units done so far.

    Counted by part, so a part that runs twice (redelivered) is counted once.
    """
    ttl = int(settings.JOB_SNAPSHOT_TTL.total_seconds())
    script = sync_client().register_script(_PART_DONE)
    return int(script(keys=[f"job:{job_id}:parts_done"], args=[part_id, units, ttl]))


# --- the one end -----------------------------------------------------------------------
JobEndHandler = Callable[[Job, JobStatus, str], None]
_end_handlers: dict[str, JobEndHandler] = {}


def job_end_handler_register(kind: JobKind, handler: JobEndHandler) -> None:
    """What a domain's record does when a job of `kind` ends (called in the transaction
    that ends the job, with the terminal status and its reason). One per kind."""
    if _end_handlers.get(kind, handler) is not handler:
        raise RuntimeError(f"a job end handler for {kind} is already registered")
    _end_handlers[kind] = handler


def job_end_handlers() -> dict[str, JobEndHandler]:
    return dict(_end_handlers)


# What else every job's end writes in its transaction, whatever the kind (e.g. webhooks).
JobEndHook = Callable[[Job, JobStatus], None]
_end_hooks: list[JobEndHook] = []


def job_end_hook_register(hook: JobEndHook) -> None:
    if hook not in _end_hooks:
        _end_hooks.append(hook)


def job_end_record_fields(
    status: JobStatus, reason: str, *, completed: str, failed: str, cancelled: str
) -> dict[str, Any]:
    """What a record with `status`, `error_message` and `completed_at` becomes when its
    job ends: completed, failed with the reason (a time limit too), or cancelled."""
    ended = {JobStatus.SUCCESS: completed, JobStatus.CANCELLED: cancelled}.get(status, failed)
    return {
        "status": ended,
        "error_message": reason if ended == failed else "",
        "completed_at": timezone.now(),
    }


_REASONS = {
    JobStatus.CANCELLED: "Cancelled.",
    JobStatus.TIMEOUT: "The job ran past its time limit.",
    JobStatus.FAILURE: "The job failed.",
}


def job_end(
    *,
    job_id: int,
    status: JobStatus,
    result: Any = None,
    error: str | None = None,
    state: dict[str, Any] | None = None,
) -> bool:
    """End a job once: the row and its domain record in one transaction, then the event.

    Returns False (and changes nothing) when the job had already ended. `state` carries
    the last progress a reporter knew; the Redis snapshot fills in what it holds that is
    newer than the row.
    """
    if status not in (JobStatus.SUCCESS, *_REASONS):
        raise ValueError(f"{status} does not end a job")
    job = Job.objects.filter(pk=job_id).first()
    if job is None or job.is_terminal:
        return False
    latest = _latest_state(job)
    latest.update(state or {})
    reason = error or _REASONS.get(status, "")
    latest.update(
        status=status,
        result=result if status == JobStatus.SUCCESS else latest.get("result"),
        error=None if status in (JobStatus.SUCCESS, JobStatus.CANCELLED) else reason,
        message="Cancelled." if status == JobStatus.CANCELLED else latest.get("message"),
    )
    if status == JobStatus.SUCCESS:
        latest["progress"] = 1.0
    floor = max(job.seq, latest.get("seq") or 0)
    with transaction.atomic():
        ending = Job.objects.filter(pk=job_id, status__in=ACTIVE_STATUSES)
        if status == JobStatus.SUCCESS:
            # The other half of job_cancel's conditional update: a cancel accepted first
            # wins, so that no accepted cancel is followed by SUCCESS.
            ending = ending.filter(cancel_requested_at__isnull=True)
        ended = ending.update(
            status=status,
            progress=latest.get("progress"),
            current=latest.get("current"),
            total=latest.get("total"),
            stage=latest.get("stage") or "",
            message=(latest.get("message") or "")[:500],
            result=latest["result"],
            error=latest["error"] or "",
            seq=Greatest(F("seq"), floor + 1),
            finished_at=timezone.now(),
            lease_expires_at=None,
        )
        if not ended:
            if status == JobStatus.SUCCESS and _cancel_won(job_id):
                logger.info("job.cancel_won", extra={"job_id": job_id, "kind": job.kind})
                return job_end(job_id=job_id, status=JobStatus.CANCELLED, state=state)
            return False
        handler = _end_handlers.get(job.kind)
        if handler is not None or _end_hooks:
            job.refresh_from_db()
        if handler is not None:
            handler(job, status, reason)
        for hook in _end_hooks:
            hook(job, status)
        transaction.on_commit(lambda: _publish_end(job, latest, floor))
    logger.info("job.ended", extra={"job_id": job_id, "status": status, "kind": job.kind})
    jobs_finished.labels(kind=job.kind, status=status).inc()
    job_duration.labels(kind=job.kind).observe(
        (timezone.now() - (job.started_at or job.created_at)).total_seconds()
    )
    return True


def _cancel_won(job_id: int) -> bool:
    """Whether the job is still running because a cancel was accepted before its success:
    it then ends CANCELLED instead, and its record undoes the work (its end handler)."""
    return Job.objects.filter(
        pk=job_id, status__in=ACTIVE_STATUSES, cancel_requested_at__isnull=False
    ).exists()


def _latest_state(job: Job) -> dict[str, Any]:
    """The row's state, or the Redis snapshot's where that is newer (progress is written
    to the row at a bounded rate)."""
    state = event_from_job(job)
    try:
        raw = progress_client().hget(snapshot_key(job.pk), "event")
    except redis.RedisError:
        return state
    if raw is not None:
        snapshot = decode(raw)
        if snapshot["seq"] >= state["seq"]:
            state.update({k: snapshot.get(k) for k in ("seq", *EVENT_FIELDS)})
    return state


def _publish_end(job: Job, state: dict[str, Any], floor: int) -> None:
    fields = {name: state.get(name) for name in EVENT_FIELDS}
    try:
        # The floor is the row's (or the snapshot's where that is newer).
        seq, _ = _emit(
            job_id=job.pk,
            owner_id=job.owner_id,
            state=fields,
            floor=floor,
            floor_is_rows=True,
            cancel_requested_at=cancel_literal(job),
        )
    except redis.RedisError:
        # Subscribers re-read the row when their stream is idle; the end is not lost.
        logger.warning("job.end_unpublished", extra={"job_id": job.pk}, exc_info=True)
        return
    if seq > floor + 1:
        Job.objects.filter(pk=job.pk).update(seq=Greatest(F("seq"), seq))


# --- a cancel, told at once ------------------------------------------------------------
def cancel_literal(job: Job) -> str:
    """The job's cancel request as the events carry it (a JSON string), or ''."""
    if job.cancel_requested_at is None:
        return ""
    return json.dumps(job.cancel_requested_at.isoformat())


def job_cancel_publish(job: Job, *, event: bool = True) -> None:
    """Tell the job's worker and its subscribers, at once, that a cancel was accepted.

    The snapshot's `cancel` field is what a worker looks for (`domains.jobs.cancellation`,
    and every emit answers it); then, with `event`, the job's latest state is published
    again with `cancel_requested_at` set. That event is conditional on the snapshot's seq:
    if a worker emitted in between, its event already carried the cancel (the field was
    set first), and nothing more is sent. Redis down: the row still holds the cancel, which
    the job's end honours, and the streams read it from there.
    """
    key = snapshot_key(job.pk)
    client = progress_client()
    try:
        client.hset(key, "cancel", cancel_literal(job))
        client.expire(key, int(settings.JOB_SNAPSHOT_TTL.total_seconds()))
        if not event:
            return
        raw, seq = client.hmget(key, "event", "seq")
        state = decode(raw) if raw is not None else event_from_job(job)
        _emit(
            job_id=job.pk,
            owner_id=job.owner_id,
            state={name: state.get(name) for name in EVENT_FIELDS},
            floor=max(job.seq, state.get("seq") or 0),
            floor_is_rows=raw is None,
            cancel_requested_at=cancel_literal(job),
            expect_seq=seq or "",
        )
    except redis.RedisError:
        logger.warning("job.cancel_unpublished", extra={"job_id": job.pk}, exc_info=True)
