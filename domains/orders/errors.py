from enum import StrEnum

from domains.errors import DomainError


class OrderErrorCode(StrEnum):
    """An order's own codes. A checkout also answers the payment codes it shares with
    paymentProcess (ALREADY_PAID, PAYMENT_IN_PROGRESS, INVALID_METHOD): PaymentErrorCode."""

    EMPTY_ORDER = "EMPTY_ORDER"
    INVALID_QUANTITY = "INVALID_QUANTITY"
    PRODUCT_NOT_FOUND = "PRODUCT_NOT_FOUND"
    NOT_PENDING = "NOT_PENDING"
    PRICE_CHANGED = "PRICE_CHANGED"
    OUT_OF_STOCK = "OUT_OF_STOCK"
    PAYMENT_NOT_VERIFIED = "PAYMENT_NOT_VERIFIED"


class OrderError(DomainError):
    pass
