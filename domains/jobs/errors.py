from enum import StrEnum

from domains.errors import DomainError


class JobErrorCode(StrEnum):
    ALREADY_FINISHED = "ALREADY_FINISHED"
    NOT_CANCELLABLE = "NOT_CANCELLABLE"


class JobError(DomainError):
    pass
