from enum import StrEnum

from domains.errors import DomainError


class AccountErrorCode(StrEnum):
    EMAIL_TAKEN = "EMAIL_TAKEN"
    PASSWORD_TOO_WEAK = "PASSWORD_TOO_WEAK"
    INVALID_CREDENTIALS = "INVALID_CREDENTIALS"
    TOKEN_NOT_FOUND = "TOKEN_NOT_FOUND"
    INVALID_EXPIRY = "INVALID_EXPIRY"
    RATE_LIMITED = "RATE_LIMITED"  # too many attempts: the message says when to try again
    SESSION_REQUIRES_BROWSER = "SESSION_REQUIRES_BROWSER"  # a session is for this site's pages


class AccountError(DomainError):
    pass
