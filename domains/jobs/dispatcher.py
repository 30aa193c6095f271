"""Fair starts (ARCHITECTURE, 15): a job waits in the database until the dispatcher gives
it a slot, and only then is its task sent, to its lane's Celery queue.

`dispatcher_run` is one pass, run once at a time across every process (a PostgreSQL
advisory lock held by its transaction; SQLite's IMMEDIATE transactions serialise writers
already). It counts what is admitted and not ended, and admits waiting jobs while:
- their owner has fewer than JOB_MAX_RUNNING_PER_USER jobs admitted (and fewer than its
  kind's JOB_MAX_RUNNING_PER_USER_BY_KIND), a chain's or chord's parts counting as their
  job (they are one job);
- their lane has a free worker slot (JOB_LANE_SLOTS): the broker never holds more of a
  lane's jobs than it has slots, so that the order is decided here, not by the broker's
  FIFO, and a lane's backlog never takes another lane's slots.
Owners take turns (round robin): the owner admitted least recently goes first, and an
owner's own jobs go oldest first; the order lives in the rows (`admitted_at`), so it holds
across processes and restarts.

A pass runs after the commit of every `job_dispatch`, after every job's end (a slot
freed), and on each watchdog sweep (which also covers a restart). A waiting job has not
been sent, so the watchdog's pending grace counts from its send, not from its creation.
Each waiting job keeps its estimated place (`queue_position`, the order the round robin
would admit its lane's waiting jobs in) and why it waits (`waiting_reason`); a change of
either is published on its stream.
"""

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from typing import Any

import redis
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Max
from django.utils import timezone

from domains.infra.metrics import job_wait
from domains.infra.redis import (
    progress_client,
    sync_client,
)
from domains.jobs.events import (
    EVENT_FIELDS,
    event_from_job,
    snapshot_key,
)
from domains.jobs.models import ACTIVE_STATUSES, Job, JobStatus

logger = logging.getLogger(__name__)

# Admitted jobs in these hold (or are about to hold) a worker slot of their lane; a job
# waiting for its retry's countdown holds none, but still counts towards its owner's cap.
SLOT_HOLDING = (JobStatus.PENDING, JobStatus.STARTED, JobStatus.PROGRESS)
_LOCK_KEY = 0x6A6F6273  # "jobs": the advisory lock of the dispatcher's pass
_PLACES_KEY = "jobs:dispatcher:places"  # set while the waiting jobs' places are fresh
INTERACTIVE_LANE = "interactive"  # what no lane's routes name: payments, checkouts, emails
ALWAYS_FRESH_PLACES = 20  # a lane's first places are written at every pass
_EPOCH = datetime.min.replace(tzinfo=UTC)


def job_lane(task_name: str) -> str:
    """The lane a task runs in: where settings.JOB_LANE_TASKS routes its name (matched once
    per name while the routes stay the same object: a pass asks it of every job it counts)."""
    global _lanes_memo
    routes, lanes = _lanes_memo
    if routes is not settings.JOB_LANE_TASKS:
        routes, lanes = settings.JOB_LANE_TASKS, {}
        _lanes_memo = (routes, lanes)  # the routes held: no other object takes their place
    lane = lanes.get(task_name)
    if lane is None:
        lane = lanes[task_name] = next(
            (
                name
                for name, patterns in routes.items()
                if any(fnmatchcase(task_name, pattern) for pattern in patterns)
            ),
            INTERACTIVE_LANE,
        )
    return lane


_lanes_memo: tuple[Any, dict[str, str]] = (None, {})


@dataclass
class _Waiting:
    pk: int
    owner_id: int | None
    kind: str
    lane: str
    created_at: datetime
    queue_position: int | None
    waiting_reason: str


@dataclass
class _Counts:
    """What is admitted and not ended: per owner, per (owner, kind), per lane."""

    owner: dict[int | None, int] = field(default_factory=lambda: defaultdict(int))
    owner_kind: dict[tuple[int | None, str], int] = field(default_factory=lambda: defaultdict(int))
    lane: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, owner_id: int | None, kind: str, lane: str, holds_slot: bool = True) -> None:
        self.owner[owner_id] += 1
        self.owner_kind[(owner_id, kind)] += 1
        if holds_slot:
            self.lane[lane] += 1


def waiting_reason(job: _Waiting, counts: _Counts) -> str:
    """Why `job` cannot be admitted now ("" when it can)."""
    running = counts.owner[job.owner_id]
    if running >= settings.JOB_MAX_RUNNING_PER_USER:
        return _running_sentence(running, "", settings.JOB_MAX_RUNNING_PER_USER)
    kind_limit = settings.JOB_MAX_RUNNING_PER_USER_BY_KIND.get(job.kind)
    if kind_limit is not None and counts.owner_kind[(job.owner_id, job.kind)] >= kind_limit:
        kind = job.kind.replace("_", " ").lower()
        return _running_sentence(counts.owner_kind[(job.owner_id, job.kind)], kind, kind_limit)
    slots = settings.JOB_LANE_SLOTS.get(job.lane, 1)
    if counts.lane[job.lane] >= slots:
        busy = "slot is" if slots == 1 else f"{slots} slots are"
        return f"Every {job.lane} worker slot is busy (the lane's {busy} in use)."
    return ""


def _running_sentence(running: int, kind: str, limit: int) -> str:
    jobs = f"{kind} jobs".strip()
    verb = "is" if running == 1 else "are"
    return f"{running} of your {jobs} {verb} running; the limit is {limit}"


def dispatcher_run(*, every_place: bool = False) -> int:
    """One pass: admit what may run now and send it; returns how many jobs it admitted.
    `every_place`: write every waiting job's place now, however recently that was done.

    Call it outside any transaction (after a commit): it must see what was committed."""
    if not _waiting().exists():  # the common case, without the lock (a job queued after
        return 0  # this read runs its own pass once its transaction commits)
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_KEY])
        admitted, moved = _pass(now=timezone.now(), every_place=every_place)
        # Under the lock, so that passes publish places in the order they found them (and
        # no job published here can have been admitted and started meanwhile).
        _publish_waiting(moved)
    sent = sum(_send(job) for job in admitted)
    if admitted:
        logger.debug("jobs.dispatched", extra={"admitted": len(admitted), "sent": sent})
    return len(admitted)


def _pass(*, now: datetime, every_place: bool) -> tuple[list[Job], list[Job]]:
    counts = _Counts()
    for owner_id, kind, task_name, status in Job.objects.filter(
        status__in=ACTIVE_STATUSES, admitted_at__isnull=False
    ).values_list("owner_id", "kind", "task_name", "status"):
        counts.add(owner_id, kind, job_lane(task_name), holds_slot=status in SLOT_HOLDING)
    waiting = [
        _Waiting(pk, owner_id, kind, job_lane(task_name), created_at, position, reason)
        for pk, owner_id, kind, task_name, created_at, position, reason in _waiting()
        .order_by("created_at", "id")
        .values_list(
            "pk",
            "owner_id",
            "kind",
            "task_name",
            "created_at",
            "queue_position",
            "waiting_reason",
        )
    ]
    if not waiting:
        return [], []
    last = _last_admitted({job.owner_id for job in waiting})
    admit = _admissions(waiting, _turn_order(waiting, last), counts)
    if admit:
        # Still PENDING: a cancel committed since the read above ended it, and it stays so.
        Job.objects.filter(
            pk__in=[job.pk for job in admit], admitted_at__isnull=True, status=JobStatus.PENDING
        ).update(admitted_at=now, queue_position=None, waiting_reason="")
        for job in admit:
            job_wait.labels(kind=job.kind, lane=job.lane).observe(
                (now - job.created_at).total_seconds()
            )
    # What is left waiting: its place if slots opened one at a time, and its reason.
    admitted_pks = {job.pk for job in admit}
    left = [job for job in waiting if job.pk not in admitted_pks]
    # Every waiting job moves at each admission: all places are written (and published)
    # at most every JOB_QUEUE_PLACES_INTERVAL; a new job's, and those near the front of
    # their lane, at every pass.
    every = every_place or _places_due()
    moved: dict[int, tuple[int, str]] = {}
    last.update((job.owner_id, now) for job in admit)
    reasons: dict[tuple, str] = {}  # one answer per owner, kind and lane
    for job, position in _positions(left, _turn_order(left, last)):
        group = (job.owner_id, job.kind, job.lane)
        if group not in reasons:
            reasons[group] = waiting_reason(job, counts) or "Waiting for the dispatcher."
        reason = reasons[group]
        due = every or job.queue_position is None or position <= ALWAYS_FRESH_PLACES
        if due and (job.queue_position, job.waiting_reason) != (position, reason):
            moved[job.pk] = (position, reason)
    pks = list(moved)
    for start in range(0, len(pks), 500):
        _write_places({pk: moved[pk] for pk in pks[start : start + 500]})
    admitted_jobs = list(
        Job.objects.filter(pk__in=admitted_pks, admitted_at=now, status=JobStatus.PENDING).order_by(
            "pk"
        )
    )
    return admitted_jobs, list(Job.objects.filter(pk__in=pks, admitted_at__isnull=True))


def _places_due() -> bool:
    """Whether this pass writes every waiting job's place: once per
    JOB_QUEUE_PLACES_INTERVAL across processes (a key in Redis that expires); always when
    Redis cannot say."""
    interval_ms = int(settings.JOB_QUEUE_PLACES_INTERVAL * 1000)
    if interval_ms <= 0:
        return True
    try:
        return bool(sync_client().set(_PLACES_KEY, "1", nx=True, px=interval_ms))
    except redis.RedisError:
        return True


def _write_places(places: dict[int, tuple[int, str]]) -> None:
    """Each waiting job's place and reason, in one statement (hundreds move at once; the
    ORM's Case/When costs a millisecond a row to build, the SQL a few for them all)."""
    table = connection.ops.quote_name(Job._meta.db_table)
    cases = " ".join(["WHEN %s THEN %s"] * len(places))
    ids = ", ".join(["%s"] * len(places))
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET queue_position = CASE id {cases} END, "
            f"waiting_reason = CASE id {cases} END "
            f"WHERE id IN ({ids}) AND admitted_at IS NULL",
            [
                *(v for pk, (place, _) in places.items() for v in (pk, place)),
                *(v for pk, (_, reason) in places.items() for v in (pk, reason)),
                *places,
            ],
        )


def _waiting():
    """The jobs waiting for a slot: their task is stored, they were never admitted."""
    return Job.objects.filter(status=JobStatus.PENDING, admitted_at__isnull=True).exclude(
        task_name=""
    )


def _last_admitted(owners: set[int | None]) -> dict[int | None, datetime]:
    """When each owner last had a job admitted (the round robin's turn)."""
    last: dict[int | None, datetime] = dict(
        Job.objects.filter(owner_id__in=[o for o in owners if o is not None])
        .filter(admitted_at__isnull=False)
        .values("owner_id")
        .annotate(last=Max("admitted_at"))
        .values_list("owner_id", "last")
    )
    if None in owners:
        last[None] = (
            Job.objects.filter(owner__isnull=True, admitted_at__isnull=False).aggregate(
                last=Max("admitted_at")
            )["last"]
            or _EPOCH
        )
    return last


def _turn_order(
    waiting: list[_Waiting], last: dict[int | None, datetime]
) -> dict[int | None, tuple]:
    """Each waiting owner's turn key: least recently admitted first, then whose oldest job
    waited longest (every owner is in the rows' order, so this is the same in every process)."""
    oldest: dict[int | None, tuple] = {}
    for job in waiting:  # oldest first
        oldest.setdefault(job.owner_id, (job.created_at, job.pk))
    return {owner: (last.get(owner) or _EPOCH, *first) for owner, first in oldest.items()}


def _admissions(
    waiting: list[_Waiting], turns: dict[int | None, tuple], counts: _Counts
) -> list[_Waiting]:
    """Round robin: each owner in turn admits its oldest job that may run now, then waits
    for the next round; an owner with nothing that may run drops out of the pass."""
    queues: dict[int | None, list[_Waiting]] = defaultdict(list)
    for job in waiting:
        queues[job.owner_id].append(job)
    rotation = sorted(queues, key=lambda owner: turns[owner])
    admitted: list[_Waiting] = []
    while rotation:
        owner = rotation.pop(0)
        job = _next_of_owner(queues[owner], counts)
        if job is None:
            continue
        queues[owner].remove(job)
        counts.add(owner, job.kind, job.lane)
        admitted.append(job)
        if queues[owner]:
            rotation.append(owner)
    return admitted


def _next_of_owner(jobs: list[_Waiting], counts: _Counts) -> _Waiting | None:
    """The owner's oldest job that may run now, an interactive one first: a user's own
    backlog of reports never holds their payment, nor the email a finished report sends."""
    first = None
    looked: set[tuple[str, str]] = set()
    for job in jobs:
        # The owner's jobs of one kind and lane get one answer: look at the oldest only
        # (a backlog of hundreds is one look, not hundreds, at every pass).
        if (job.kind, job.lane) in looked:
            continue
        looked.add((job.kind, job.lane))
        if waiting_reason(job, counts):
            continue
        if job.lane == INTERACTIVE_LANE:
            return job
        first = first or job
    return first


def _positions(
    waiting: list[_Waiting], turns: dict[int | None, tuple]
) -> list[tuple[_Waiting, int]]:
    """Each job's place in its lane if slots opened one at a time: the round robin's order
    (an owner's k-th job comes in round k, owners in turn order within a round)."""
    ranked: dict[str, list[tuple[tuple, _Waiting]]] = defaultdict(list)
    rounds: dict[tuple[str, int | None], int] = defaultdict(int)
    for job in waiting:  # oldest first
        k = rounds[(job.lane, job.owner_id)]
        rounds[(job.lane, job.owner_id)] += 1
        ranked[job.lane].append(((k, turns[job.owner_id]), job))
    placed: list[tuple[_Waiting, int]] = []
    for jobs in ranked.values():
        jobs.sort(key=lambda pair: pair[0])
        placed.extend((job, place) for place, (_, job) in enumerate(jobs, start=1))
    return placed


def _send(job: Job) -> bool:
    from domains.jobs.services import job_send

    return job_send(job=job)


def _publish_waiting(jobs: list[Job]) -> None:
    """Each waiting job's new place and reason on its stream, as a PENDING event of its
    own, unless its snapshot moved on since it was read here (a cancel's end came first).

    Hundreds of waiting jobs move at each admission, so the events go in two round trips
    (the snapshots' seqs, then every job's emit script in one pipeline), with the progress
    path's own script (domains.jobs.publish.emit_pipelined)."""
    from domains.jobs.publish import emit_pipelined

    if not jobs:
        return
    try:
        reads = progress_client().pipeline(transaction=False)
        for job in jobs:
            reads.hget(snapshot_key(job.pk), "seq")
        seqs = reads.execute()
        emit_pipelined(
            [
                {
                    "job_id": job.pk,
                    "owner_id": job.owner_id,
                    "state": _waiting_state(job),
                    "floor": job.seq,
                    "floor_is_rows": True,
                    "expect_seq": seq.decode() if isinstance(seq, bytes) else (seq or ""),
                }
                for job, seq in zip(jobs, seqs, strict=True)
            ]
        )
    except redis.RedisError:
        logger.warning("jobs.positions_unpublished", extra={"jobs": len(jobs)})


def _waiting_state(job: Job) -> dict[str, Any]:
    event = event_from_job(job)
    state = {name: event[name] for name in EVENT_FIELDS}
    state.update(queue_position=job.queue_position, waiting_reason=job.waiting_reason or None)
    return state


def dispatcher_after_end(job: Job, status: JobStatus) -> None:
    """The job-end hook: a slot may have freed (or a waiting job left the queue). A pass
    that fails is logged (robust) and left to the watchdog's next sweep."""
    transaction.on_commit(dispatcher_run, robust=True)


def jobs_waiting_counts() -> dict[tuple[str, str], int]:
    """How many jobs wait for a slot, by (kind, lane) (what /metrics reports)."""
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for kind, task_name, n in (
        _waiting()
        .values("kind", "task_name")
        .annotate(n=Count("pk"))
        .values_list("kind", "task_name", "n")
    ):
        counts[(kind, job_lane(task_name))] += n
    return dict(counts)
