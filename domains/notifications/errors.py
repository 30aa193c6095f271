from enum import StrEnum

from domains.errors import DomainError


class NotificationErrorCode(StrEnum):
    NO_CHANNELS = "NO_CHANNELS"
    DATA_TOO_LARGE = "DATA_TOO_LARGE"


class NotificationError(DomainError):
    pass
