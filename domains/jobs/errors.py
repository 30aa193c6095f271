from enum import StrEnum

from domains.errors import DomainError


class JobErrorCode(StrEnum):
    ALREADY_FINISHED = "ALREADY_FINISHED"
    NOT_CANCELLABLE = "NOT_CANCELLABLE"


class JobError(DomainError):
    pass


class IdempotencyErrorCode(StrEnum):
    """Refusals of a start's idempotency key (domains.jobs.idempotency): every start
    mutation's enum has them."""

    INVALID_IDEMPOTENCY_KEY = "INVALID_IDEMPOTENCY_KEY"
    IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"


class IdempotencyError(DomainError):
    pass
