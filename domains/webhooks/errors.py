from enum import StrEnum

from domains.errors import DomainError


class WebhookErrorCode(StrEnum):
    INVALID_URL = "INVALID_URL"
    TARGET_NOT_ALLOWED = "TARGET_NOT_ALLOWED"
    INVALID_EVENTS = "INVALID_EVENTS"
    TOO_MANY_ENDPOINTS = "TOO_MANY_ENDPOINTS"
    ENDPOINT_DISABLED = "ENDPOINT_DISABLED"


class WebhookError(DomainError):
    pass
