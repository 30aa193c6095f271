from enum import StrEnum

from domains.errors import DomainError


class PaymentErrorCode(StrEnum):
    INVALID_METHOD = "INVALID_METHOD"
    ORDER_NOT_PAYABLE = "ORDER_NOT_PAYABLE"
    ALREADY_PAID = "ALREADY_PAID"
    PAYMENT_IN_PROGRESS = "PAYMENT_IN_PROGRESS"  # a live payment, not settled yet
    DECLINED = "DECLINED"
    REJECTED = "REJECTED"  # the gateway refused the request itself (bad token, bad key)


class PaymentError(DomainError):
    pass
