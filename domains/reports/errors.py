from enum import StrEnum

from domains.errors import DomainError


class ReportErrorCode(StrEnum):
    INVALID_DATE_RANGE = "INVALID_DATE_RANGE"
    INVALID_REGION = "INVALID_REGION"
    CATEGORY_NOT_FOUND = "CATEGORY_NOT_FOUND"


class ReportError(DomainError):
    pass
