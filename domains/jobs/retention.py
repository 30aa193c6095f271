"""Retention: finished jobs older than JOB_RETENTION_DAYS go, with what only they needed.

A purge takes the oldest finished jobs a batch at a time (JOB_PURGE_BATCH_SIZE), each
batch in one short transaction, so no lock is held for long and a purge cut short leaves
nothing half done that the next one does not finish. For each batch:
- each domain's purge handler (`job_purge_handlers` in its AppConfig) removes what its
  records keep for those jobs alone: a report's CSV and row, an image's derivatives (the
  original the user uploaded stays). Files go before rows, so that a batch that fails
  leaves rows the next purge takes again, never a file no row names;
- the jobs' event logs and snapshots in Redis are deleted;
- the Job rows are deleted: what belongs to a job alone goes with it (its webhook
  deliveries, its job tokens: CASCADE), and records the user still owns (orders,
  payments, images, sync logs...) keep their rows and lose only the job link (SET_NULL).
Then the outbox's follow-ups done before the same cutoff go, a batch at a time (those not
done stay: the watchdog still owes them a send), and the idempotency keys past their 24
hours (a key is new again then; its job stays for its own retention).

A dry run counts the same without changing anything.
"""

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import router, transaction
from django.db.models import Q, QuerySet
from django.db.models.deletion import SET_NULL, Collector
from django.utils import timezone
from redis import RedisError

from domains.infra.metrics import purged_rows
from domains.infra.redis import progress_client
from domains.jobs.events import log_key, snapshot_key
from domains.jobs.idempotency import idempotency_keys_purge
from domains.jobs.models import TERMINAL_STATUSES, FollowUp, Job

logger = logging.getLogger(__name__)

# (job_ids, dry_run) -> what it removed (or would), by kind: {"report files": 3, ...}
JobPurgeHandler = Callable[..., dict[str, int]]
_purge_handlers: list[JobPurgeHandler] = []

EVENT_LOGS = "event logs"
FOLLOW_UPS = "follow-ups"
IDEMPOTENCY_KEYS = "idempotency keys"


def job_purge_handler_register(handler: JobPurgeHandler) -> None:
    if handler not in _purge_handlers:
        _purge_handlers.append(handler)


@dataclass
class PurgeCounts:
    """What a purge removed (or, dry, would remove), and the records it kept but unlinked
    from their job, by kind ("jobs", "report files", "orders"...)."""

    removed: Counter = field(default_factory=Counter)
    unlinked: Counter = field(default_factory=Counter)

    def add(self, other: "PurgeCounts") -> None:
        self.removed.update(other.removed)
        self.unlinked.update(other.unlinked)


def purgeable_jobs(*, older_than: timedelta) -> QuerySet[Job]:
    """Finished jobs that ended more than `older_than` ago (one that ended without a
    finish time: created that long ago)."""
    cutoff = timezone.now() - older_than
    return Job.objects.filter(
        Q(finished_at__lt=cutoff) | Q(finished_at__isnull=True, created_at__lt=cutoff),
        status__in=TERMINAL_STATUSES,
    )


def jobs_purge(
    *,
    older_than: timedelta,
    dry_run: bool = False,
    batch_size: int | None = None,
    max_batches: int | None = None,
) -> PurgeCounts:
    """Purge (or count, `dry_run`) the finished jobs older than `older_than`, a batch at a
    time; at most `max_batches` batches (None: until none is left)."""
    batch_size = batch_size or settings.JOB_PURGE_BATCH_SIZE
    counts = PurgeCounts()
    after = 0  # a dry run changes nothing, so it pages on by id
    batches = 0
    while max_batches is None or batches < max_batches:
        ids = list(
            purgeable_jobs(older_than=older_than)
            .filter(pk__gt=after)
            .order_by("pk")
            .values_list("pk", flat=True)[:batch_size]
        )
        if not ids:
            break
        counts.add(_batch_purge(ids, dry_run=dry_run))
        after = ids[-1]
        batches += 1
    counts.removed[FOLLOW_UPS] += _followups_purge(
        older_than=older_than, dry_run=dry_run, batch_size=batch_size
    )
    counts.removed[IDEMPOTENCY_KEYS] += idempotency_keys_purge(
        dry_run=dry_run, batch_size=batch_size
    )
    counts.removed, counts.unlinked = +counts.removed, +counts.unlinked  # kinds with none go
    if not dry_run and counts.removed:
        for kind, count in counts.removed.items():
            purged_rows.labels(kind=kind).inc(count)
        logger.info("jobs.purged", extra={"removed": dict(counts.removed)})
    return counts


def _batch_purge(ids: Sequence[int], *, dry_run: bool) -> PurgeCounts:
    counts = PurgeCounts()
    jobs = Job.objects.filter(pk__in=ids)
    with transaction.atomic():
        for handler in _purge_handlers:
            counts.removed.update(handler(job_ids=ids, dry_run=dry_run))
        counts.unlinked.update(_unlinked(ids))
        counts.removed[EVENT_LOGS] += _event_logs_purge(ids, dry_run=dry_run)
        if dry_run:
            counts.removed.update(_cascade(jobs))
        else:
            _, deleted = jobs.delete()
            counts.removed.update({_kind(label): n for label, n in deleted.items() if n})
    return counts


def _kind(label: str) -> str:
    """A model's label ("jobs.Job") as the kind of thing counted ("jobs")."""
    from django.apps import apps

    return str(apps.get_model(label)._meta.verbose_name_plural)


def _cascade(jobs: QuerySet[Job]) -> Counter:
    """What deleting `jobs` would delete, by kind (the jobs and what cascades with them)."""
    collector = Collector(using=router.db_for_write(Job))
    collector.collect(jobs)
    counts: Counter = Counter()
    for model, instances in collector.data.items():
        counts[str(model._meta.verbose_name_plural)] += len(instances)
    for query in collector.fast_deletes:
        counts[str(query.model._meta.verbose_name_plural)] += query.count()
    return +counts


def _unlinked(ids: Sequence[int]) -> Counter:
    """Records that keep their rows but lose their link to these jobs (SET_NULL)."""
    counts: Counter = Counter()
    relations = [
        f
        for f in Job._meta.get_fields(include_hidden=True)  # orders' link has no reverse name
        if f.auto_created and not f.concrete and (f.one_to_many or f.one_to_one)
    ]
    for relation in relations:
        if relation.on_delete is not SET_NULL:
            continue
        model = relation.related_model
        linked = model._default_manager.filter(**{f"{relation.field.name}__in": ids})
        if model is Job:
            linked = linked.exclude(pk__in=ids)  # a retry purged with its original
        if n := linked.count():
            counts[str(model._meta.verbose_name_plural)] += n
    return counts


def _followups_purge(*, older_than: timedelta, dry_run: bool, batch_size: int) -> int:
    """Delete (or count) the follow-ups done before the cutoff, a batch at a time."""
    done = FollowUp.objects.filter(done_at__lt=timezone.now() - older_than)
    if dry_run:
        return done.count()
    removed = 0
    while ids := list(done.order_by("pk").values_list("pk", flat=True)[:batch_size]):
        removed += FollowUp.objects.filter(pk__in=ids).delete()[0]
    return removed


def _event_logs_purge(ids: Sequence[int], *, dry_run: bool) -> int:
    """Delete (or count) the jobs' logs and snapshots in Redis; the logs it found. Their
    TTL (JOB_SNAPSHOT_TTL) would drop them anyway: this is for a TTL longer than retention,
    and for the Redis that never expired them (restored from a backup)."""
    client = progress_client()
    try:
        found = sum(client.exists(log_key(job_id)) for job_id in ids)
        if not dry_run:
            for job_id in ids:  # one slot per job on a cluster: a DEL each
                client.delete(snapshot_key(job_id), log_key(job_id))
    except RedisError as error:
        # The keys expire on their own; the rows need not wait for Redis.
        logger.warning("jobs.purge_event_logs_failed", extra={"error": str(error)})
        return 0
    return found
