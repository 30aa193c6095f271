from enum import StrEnum

from domains.errors import DomainError


class CrmErrorCode(StrEnum):
    INVALID_SINCE_HOURS = "INVALID_SINCE_HOURS"


class CrmError(DomainError):
    pass
