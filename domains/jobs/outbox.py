"""The outbox: every task this service sends leaves through here (ARCHITECTURE, 14).

A job's task is kept in its Job row (`job_dispatch`); a follow-up (a compensation, a
reconciliation, an email that is not a job of its own) in a FollowUp row (`followup_queue`).
Either row is written in the transaction of the state change that calls for it, and sent by
`outbox_send`, the one place that calls the broker, once that transaction commits. A send
that fails (the broker is down), or a process that dies between the commit and the send,
leaves the row unsent; the watchdog sends it (`job_watchdog_sweep`, `followups_sweep`). A
follow-up not reported done by its task (`workers.base.FollowUpTask`) within
JOB_PENDING_GRACE_SECONDS of its send, its message or its run lost, is sent again, at most
JOB_MAX_REVIVALS times; its task is idempotent, so a second delivery does nothing twice.

Domains also name, in their AppConfig (`followup_sweepers`), what the watchdog checks for
work that no run will finish (a payment left `processing`, a failed checkout not undone):
each sweeper queues the follow-up that settles it.
"""

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from domains.infra.metrics import watchdog_actions
from domains.infra.tracing import trace_continued, trace_current
from domains.jobs.models import FollowUp

logger = logging.getLogger(__name__)


def outbox_send(
    *,
    task_name: str,
    kwargs: dict[str, Any],
    task_id: str | None = None,
    trace_context: dict[str, str] | None = None,
    eta: datetime | None = None,
) -> bool:
    """Send a task now (to run at `eta`, when given), in the trace it was asked in; False
    (logged) when the broker would not take it: the row it came from keeps it for the
    watchdog (or its own sweep, as a webhook delivery's)."""
    try:
        with trace_continued(trace_context or {}):
            current_app.send_task(task_name, kwargs=kwargs, task_id=task_id, eta=eta)
    except Exception:  # noqa: BLE001  (any broker error: the row keeps the task)
        logger.warning("outbox.send_failed", extra={"task": task_name})
        return False
    return True


def _grace() -> timedelta:
    return timedelta(seconds=settings.JOB_PENDING_GRACE_SECONDS)


def followup_queue(*, task_name: str, key: str, **task_kwargs: Any) -> FollowUp:
    """Queue a follow-up in the caller's transaction; it is sent once that commits.

    `key` names what it is about: while a follow-up of that key is not done, queueing it
    again returns that one (its task settles whatever is left when it runs)."""
    live = FollowUp.objects.filter(key=key, done_at__isnull=True).first()
    if live is not None:
        return live
    trace_id, trace_context = trace_current()
    try:
        with transaction.atomic():
            followup = FollowUp.objects.create(
                task_name=task_name,
                task_kwargs=task_kwargs,
                key=key,
                trace_id=trace_id,
                trace_context=trace_context,
            )
    except IntegrityError:  # queued meanwhile by another transaction
        return FollowUp.objects.get(key=key, done_at__isnull=True)
    transaction.on_commit(lambda: followup_send(followup=followup))
    return followup


def followup_pending(key: str) -> bool:
    """Whether a follow-up of `key` is queued and not done."""
    return FollowUp.objects.filter(key=key, done_at__isnull=True).exists()


def followup_send(*, followup: FollowUp) -> bool:
    """Send the follow-up's task now (the dispatcher, or the watchdog)."""
    sent = outbox_send(
        task_name=followup.task_name,
        kwargs={"followup_id": followup.pk, **followup.task_kwargs},
        trace_context=followup.trace_context,
    )
    if sent:
        now = timezone.now()
        FollowUp.objects.filter(pk=followup.pk, done_at__isnull=True).update(
            sends=F("sends") + 1, sent_at=now, resend_after=now + _grace()
        )
    else:
        logger.warning("followup.send_failed", extra={"followup_id": followup.pk})
    return sent


# --- what the follow-up's task records (workers.base.FollowUpTask) ---------------------
def followup_run_start(*, followup_id: int) -> bool:
    """A delivery starts running; False when the follow-up is done (a duplicate)."""
    return bool(
        FollowUp.objects.filter(pk=followup_id, done_at__isnull=True).update(
            resend_after=timezone.now() + _grace()
        )
    )


def followup_done(*, followup_id: int, error: str = "") -> None:
    """The run settled it; `error` says why when there was nothing left to settle (its
    record vanished)."""
    FollowUp.objects.filter(pk=followup_id, done_at__isnull=True).update(
        done_at=timezone.now(), error=error[:2000]
    )


def followup_retrying(
    *, followup_id: int, reason: str, countdown: float, sent: bool = True
) -> None:
    """The task comes back in `countdown` seconds: its retry was sent (the watchdog leaves
    it alone meanwhile), or the broker would not take it (the watchdog sends it once due)."""
    due = timezone.now() + timedelta(seconds=countdown) + (_grace() if sent else timedelta())
    FollowUp.objects.filter(pk=followup_id, done_at__isnull=True).update(
        resend_after=due, error=reason[:2000]
    )


def followup_failed(*, followup_id: int, reason: str) -> None:
    """The run failed; the follow-up stays due, and the watchdog sends it again later."""
    FollowUp.objects.filter(pk=followup_id, done_at__isnull=True).update(
        resend_after=timezone.now() + _grace(), error=reason[:2000]
    )


# --- the watchdog's part -----------------------------------------------------------------
# Each returns how many follow-ups it queued for work no run will finish.
FollowUpSweeper = Callable[[], int]
_sweepers: list[FollowUpSweeper] = []


def followup_sweeper_register(sweeper: FollowUpSweeper) -> None:
    if sweeper not in _sweepers:
        _sweepers.append(sweeper)


def followups_sweep() -> dict[str, int]:
    """Queue what the domains' sweepers find unsettled, send the follow-ups never sent,
    send again those overdue, and give up on those sent JOB_MAX_REVIVALS times more."""
    counts = {"followups_queued": 0, "followups_sent": 0, "followups_resent": 0}
    counts["followups_given_up"] = 0
    for sweeper in _sweepers:
        counts["followups_queued"] += sweeper()
    now = timezone.now()
    live = FollowUp.objects.filter(done_at__isnull=True)
    for followup in live.filter(sent_at__isnull=True):
        counts["followups_sent"] += followup_send(followup=followup)
    for followup in live.filter(sent_at__isnull=False, resend_after__lt=now):
        if followup.sends > settings.JOB_MAX_REVIVALS:
            if FollowUp.objects.filter(pk=followup.pk, done_at__isnull=True).update(
                done_at=now, error=f"Given up after {followup.sends} sends. {followup.error}"
            ):
                counts["followups_given_up"] += 1
                logger.error(
                    "followup.watchdog_gave_up",
                    extra={"followup_id": followup.pk, "task": followup.task_name},
                )
            continue
        if followup_send(followup=followup):
            counts["followups_resent"] += 1
            logger.warning(
                "followup.watchdog_resent",
                extra={"followup_id": followup.pk, "task": followup.task_name},
            )
    for action, count in counts.items():
        watchdog_actions.labels(action=action).inc(count)
    return counts
