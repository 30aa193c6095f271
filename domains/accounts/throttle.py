"""Throttles on guessing passwords and on sign-ups: per account and per client address.

The budgets are the GCRA rate limit of domains/integrations/guards.py, held in Redis, so
every server process (and the admin) draws on the same one. A refused attempt costs
nothing, so a client that waits the time it is told gets through.
"""

import hashlib
import math
from enum import StrEnum

from django.conf import settings

from domains.accounts.errors import AccountErrorCode
from domains.errors import DomainError
from domains.integrations.guards import RateLimit


class ThrottledAction(StrEnum):
    LOGIN = "login"  # tokenCreate and the admin's login form
    REGISTER = "register"  # userRegister
    APQ_REGISTER = "apq_register"  # a persisted query's document stored (schema/persisted.py)


class RateLimited(DomainError):
    def __init__(self, retry_after: float):
        self.retry_after = math.ceil(retry_after)
        super().__init__(
            f"Too many attempts. Try again in {self.retry_after} seconds.",
            code=AccountErrorCode.RATE_LIMITED,
        )


def _limit(action: ThrottledAction, scope: str) -> RateLimit | None:
    per_minute, burst = settings.THROTTLES[action][scope]
    return RateLimit(per_minute=per_minute, burst=burst) if per_minute else None


def throttle_attempt(*, action: ThrottledAction, account: str | None, address: str | None) -> None:
    """Count one attempt against the address's budget, then the account's; RateLimited
    (with the seconds to wait) when either is spent."""
    budgets = []
    if address:
        budgets.append(("address", address))
    if account:
        normalised = account.strip().lower().encode()
        budgets.append(("account", hashlib.sha256(normalised).hexdigest()[:32]))
    for scope, who in budgets:
        limit = _limit(action, scope)
        if limit is None:
            continue
        wait = limit.acquire(f"throttle:{action}:{scope}:{who}")
        if wait > 0:
            raise RateLimited(wait)


def client_address(request) -> str | None:
    """The address a request came from (behind a proxy, run the server so that it sets
    REMOTE_ADDR from the forwarded header: uvicorn --proxy-headers)."""
    meta = getattr(request, "META", None)
    if meta is not None:
        return meta.get("REMOTE_ADDR") or None
    client = getattr(request, "scope", {}).get("client")  # a websocket
    return client[0] if client else None
