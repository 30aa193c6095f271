"""A job's one end: `job_end` is the one transition that ends a job, whatever the path
(a task's outcome, a chord's callbacks, a cancel, the watchdog). In one transaction and
exactly once: the conditional update of the row, its record's end (the job-backed model
registered for its kind, `domains.jobs.models.JobBacked`), the one handler its domain
registered, and the hooks every end runs; then the terminal event.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from django.db import transaction
from django.db.models import F
from django.db.models.functions import Greatest
from django.utils import timezone

from domains.infra.metrics import job_duration, jobs_finished
from domains.infra.redis import progress_client
from domains.jobs.events import EVENT_FIELDS, decode, event_from_job, snapshot_key
from domains.jobs.models import ACTIVE_STATUSES, Job, JobBacked, JobKind, JobStatus
from domains.jobs.publish import cancel_literal, emit

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobEnd:
    """How a job ended, as its record's handler is told: the terminal status, its reason,
    and whether this end moved the record (False: the record had already moved on, or
    its model leaves this end to the record's own steps)."""

    job: Job
    status: JobStatus
    reason: str
    record_moved: bool


# The one handler form: (the record, its job's end), in the transaction that ends the job.
JobEndHandler = Callable[[Any, JobEnd], None]


@dataclass(frozen=True)
class JobRecord:
    """What a kind's job works on, and its domain's handler (None: the end transition's
    update of the record is all its end does)."""

    model: type[JobBacked]
    handler: JobEndHandler | None = None


_records: dict[str, JobRecord] = {}


def job_record_register(model: type[JobBacked]) -> None:
    """The job-backed model of its `job_kind`; one per kind."""
    known = _records.get(model.job_kind)
    if known is not None and known.model is not model:
        raise RuntimeError(f"{model.job_kind} jobs already work on {known.model.__name__}")
    _records[model.job_kind] = JobRecord(model=model, handler=known.handler if known else None)


def job_end_handler_register(kind: JobKind | str, handler: JobEndHandler) -> None:
    """What a domain's record does when a job of `kind` ends, beyond the end transition's
    update of it (called in the transaction that ends the job). One per kind, of a kind
    with a registered job-backed model."""
    known = _records.get(kind)
    if known is None:
        raise RuntimeError(f"no job-backed model is registered for {kind}")
    if known.handler not in (None, handler):
        raise RuntimeError(f"a job end handler for {kind} is already registered")
    _records[kind] = JobRecord(model=known.model, handler=handler)


def job_end_handlers() -> dict[str, JobRecord]:
    """Every kind's record and handler, by kind."""
    return dict(_records)


# What else every job's end writes in its transaction, whatever the kind (e.g. webhooks).
JobEndHook = Callable[[Job, JobStatus], None]
_end_hooks: list[JobEndHook] = []


def job_end_hook_register(hook: JobEndHook) -> None:
    if hook not in _end_hooks:
        _end_hooks.append(hook)


def _record_fields(model: type[JobBacked], status: JobStatus, reason: str) -> dict[str, Any]:
    """What the record becomes with its job's end (empty: this end leaves it as it is)."""
    fields: dict[str, Any] = {}
    names = {field.name for field in model._meta.get_fields()}
    failed = status in (JobStatus.FAILURE, JobStatus.TIMEOUT)
    if "status" in names:
        ended = model.job_end_statuses.get(status)
        if ended is None:
            return {}
        fields["status"] = ended
        failed = ended == model.job_end_statuses[JobStatus.FAILURE]
    if failed and status == JobStatus.CANCELLED:
        reason = model.job_cancel_reason or reason
    fields["error_message"] = reason[:1000] if failed else ""
    if "completed_at" in names:
        fields["completed_at"] = timezone.now()
    return fields


def _record_end(job: Job, status: JobStatus, reason: str) -> None:
    """The job's record ends with it, and its domain's handler does the rest. A record
    that vanished has nothing to end: the job's own row says why it ended."""
    registered = _records.get(job.kind)
    if registered is None:
        return
    model = registered.model
    record = model.objects.filter(job=job).first()
    if record is None:
        logger.info("job.record_vanished", extra={"job_id": job.pk, "kind": job.kind})
        return
    fields = _record_fields(model, status, reason)
    ending = model.objects.filter(pk=record.pk)
    if "status" in fields:
        ending = ending.filter(status__in=model.job_open_statuses)
    moved = bool(fields) and bool(ending.update(**fields))
    if moved:
        record.refresh_from_db()
    if registered.handler is not None:
        registered.handler(
            record, JobEnd(job=job, status=status, reason=reason, record_moved=moved)
        )


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
        job.refresh_from_db()
        _record_end(job, status, reason)
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
        seq, _ = emit(
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
