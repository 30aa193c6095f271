"""Idempotent starts: a request sent again with the client's idempotency key starts no
second job, however it was repeated (a retry after a lost answer, two at once).

The one way every job-starting operation is made idempotent. The caller (the schema)
names the request: its owner, its operation, the client's key and a digest of its input.
`idempotent_start` then
- answers a key seen in the last IDEMPOTENCY_KEY_LIFETIME with the job its first request
  started (`replay`), or refuses it (IDEMPOTENCY_KEY_REUSED) when that request differed;
- otherwise runs the service (`start`), whose `job_create` claims the key for the new job
  in the very transaction that writes the job and its record (`idempotency_claim`). A
  concurrent duplicate waits on the key's unique index (PostgreSQL) or the database's
  write lock (SQLite), finds it taken once the first commits, rolls back what it wrote,
  and answers with the first one's job. A request refused by its domain created nothing,
  claimed nothing: the same key may be sent again.
Keys are per owner: another user's identical key is another key.
"""

import hashlib
import json
import logging
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from django.db import IntegrityError, transaction
from django.utils import timezone

from domains.accounts.models import User
from domains.errors import DomainError
from domains.jobs.errors import IdempotencyError, IdempotencyErrorCode
from domains.jobs.models import IdempotencyKey, Job

logger = logging.getLogger(__name__)

IDEMPOTENCY_KEY_LIFETIME = timedelta(hours=24)  # as Stripe keeps them
IDEMPOTENCY_KEY_MAX_LENGTH = 255
# Taken twice when a claim lost its race to a key that vanished before it was read.
_ATTEMPTS = 2

T = TypeVar("T")


@dataclass(frozen=True)
class IdempotentRequest:
    """One request that starts a job: whose, which operation, the client's key, and the
    digest of its input (`idempotency_digest`); `what` it starts names it in messages."""

    owner: User
    operation: str
    key: str
    digest: str
    what: str = "request"


@dataclass
class _Claim:
    request: IdempotentRequest
    claimed: bool = False


class _KeyTaken(Exception):
    """A concurrent request with the same key committed its claim first."""


_pending: ContextVar[_Claim | None] = ContextVar("idempotency_claim", default=None)


def idempotency_digest(value: Any) -> str:
    """The sha256 of `value` (JSON values) in canonical form: key order does not count."""
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _expired_before() -> Any:
    return timezone.now() - IDEMPOTENCY_KEY_LIFETIME


def idempotent_start(
    request: IdempotentRequest | None, *, start: Callable[[], T], replay: Callable[[Job], T]
) -> T:
    """`start()` once per key: a live key seen before gives `replay(its job)` instead.

    `start` calls one service, which creates the job (`job_create`) in its transaction;
    it may raise a DomainError or answer with one (nothing created): then a concurrent
    request that claimed the key meanwhile is answered with, or the refusal stands.
    Raises IdempotencyError: INVALID_IDEMPOTENCY_KEY, IDEMPOTENCY_KEY_REUSED.
    """
    if request is None:
        return start()
    _check_key(request.key)
    for _ in range(_ATTEMPTS):
        if (job := idempotency_replayed(request)) is not None:
            return replay(job)
        claim = _Claim(request)
        token = _pending.set(claim)
        try:
            result = start()
        except _KeyTaken:
            logger.info("idempotency.key_taken", extra={"operation": request.operation})
            continue  # the first one's job, read now that it is committed
        except DomainError:
            if (job := idempotency_replayed(request)) is not None:
                return replay(job)  # refused because the first one went through
            raise
        finally:
            _pending.reset(token)
        if not claim.claimed and (job := idempotency_replayed(request)) is not None:
            return replay(job)  # the service answered with a refusal, for the same reason
        return result
    raise RuntimeError(f"idempotency key of {request.operation} neither claimed nor found")


def idempotency_claim(job: Job) -> None:
    """Claim the pending request's key for `job` (job_create calls it, in the job's
    transaction); nothing to claim outside `idempotent_start`, or once claimed."""
    claim = _pending.get()
    if claim is None or claim.claimed:
        return
    request = claim.request
    # An expired key is a new key: its row goes, in the same transaction.
    IdempotencyKey.objects.filter(
        owner=request.owner, key=request.key, created_at__lt=_expired_before()
    ).delete()
    try:
        with transaction.atomic():
            IdempotencyKey.objects.create(
                owner=request.owner,
                key=request.key,
                operation=request.operation,
                request_digest=request.digest,
                job=job,
            )
    except IntegrityError:
        raise _KeyTaken from None
    claim.claimed = True


def idempotency_replayed(request: IdempotentRequest) -> Job | None:
    """The job a live earlier request with this key started; None for a new key.
    IDEMPOTENCY_KEY_REUSED when that request was another operation or other input."""
    seen = (
        IdempotencyKey.objects.select_related("job")
        .filter(owner=request.owner, key=request.key, created_at__gte=_expired_before())
        .first()
    )
    if seen is None:
        return None
    if (seen.operation, seen.request_digest) != (request.operation, request.digest):
        raise IdempotencyError(
            f"This idempotency key was already used for a different {request.what}.",
            code=IdempotencyErrorCode.IDEMPOTENCY_KEY_REUSED,
            field="idempotencyKey",
        )
    logger.info(
        "idempotency.replayed", extra={"operation": request.operation, "job_id": seen.job_id}
    )
    return seen.job


def _check_key(key: str) -> None:
    if not key.strip() or len(key) > IDEMPOTENCY_KEY_MAX_LENGTH:
        raise IdempotencyError(
            f"Send an idempotency key of 1 to {IDEMPOTENCY_KEY_MAX_LENGTH} characters.",
            code=IdempotencyErrorCode.INVALID_IDEMPOTENCY_KEY,
            field="idempotencyKey",
        )


def idempotency_keys_purge(*, dry_run: bool, batch_size: int) -> int:
    """Delete (or count) the expired keys, a batch at a time; their jobs stay."""
    expired = IdempotencyKey.objects.filter(created_at__lt=_expired_before())
    if dry_run:
        return expired.count()
    removed = 0
    while ids := list(expired.order_by("pk").values_list("pk", flat=True)[:batch_size]):
        removed += IdempotencyKey.objects.filter(pk__in=ids).delete()[0]
    return removed
