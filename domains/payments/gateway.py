"""The payment gateway's client: charge, look up, refund, verify, on the shared resilient
client.

Every call carries an idempotency key derived from our own rows, so a retried call or a
redelivered task is answered with the first result instead of charging again.
"""

from dataclasses import dataclass
from decimal import Decimal
from functools import cache

from django.conf import settings

from domains.integrations.client import Breaker, RateLimit, RequestRejected, ResilientClient

SERVICE = "gateway"


@dataclass(frozen=True)
class Charge:
    transaction_id: str
    status: str  # captured | refunded | flagged
    raw: dict


CONNECT_TIMEOUT = 3.05  # seconds (just past a TCP retransmit's 3)


def request_lifetime() -> float:
    """The longest a request sent to the gateway can still be on its way or being served
    before its sender gives up on it: one attempt's connect and read timeouts."""
    return CONNECT_TIMEOUT + settings.PAYMENT_GATEWAY_READ_TIMEOUT


@cache
def gateway_client() -> ResilientClient:
    return ResilientClient(
        service=SERVICE,
        base_url=settings.PAYMENT_GATEWAY_URL,
        api_key=settings.PAYMENT_GATEWAY_API_KEY,
        timeout=(CONNECT_TIMEOUT, settings.PAYMENT_GATEWAY_READ_TIMEOUT),
        max_attempts=settings.PAYMENT_GATEWAY_ATTEMPTS,
        rate_limit=RateLimit(
            per_minute=settings.PAYMENT_GATEWAY_RATE_PER_MINUTE,
            burst=settings.PAYMENT_GATEWAY_BURST,
        ),
        breaker=Breaker(
            failure_threshold=settings.PAYMENT_BREAKER_THRESHOLD,
            reset_timeout=settings.PAYMENT_BREAKER_RESET_SECONDS,
        ),
    )


def charge_create(
    *, amount: Decimal, currency: str, source: str, reference: str, idempotency_key: str
) -> Charge:
    body = gateway_client().post(
        "/charges",
        json={
            "amount": str(amount),
            "currency": currency,
            "source": source,
            "reference": reference,
        },
        idempotency_key=idempotency_key,
    )
    return Charge(transaction_id=body["id"], status=body["status"], raw=body)


def refund_create(*, transaction_id: str, idempotency_key: str) -> dict:
    return gateway_client().post(
        "/refunds", json={"charge": transaction_id}, idempotency_key=idempotency_key
    )


def charge_verify(*, transaction_id: str) -> Charge:
    body = gateway_client().get(f"/charges/{transaction_id}")
    return Charge(transaction_id=body["id"], status=body["status"], raw=body)


def charge_lookup(*, idempotency_key: str) -> Charge | None:
    """The charge the gateway made under `idempotency_key`, or None when it made none.

    What a client asks after losing a charge's answer; RetryLater when the gateway cannot say.
    """
    try:
        body = gateway_client().get("/charges", params={"idempotency_key": idempotency_key})
    except RequestRejected as rejected:
        if rejected.status == 404:
            return None
        raise
    return Charge(transaction_id=body["id"], status=body["status"], raw=body)
