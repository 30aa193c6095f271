from enum import StrEnum

from domains.errors import DomainError


class CatalogErrorCode(StrEnum):
    INVALID_SKU = "INVALID_SKU"
    NOT_LISTED = "NOT_LISTED"
    MALFORMED_PRODUCT = "MALFORMED_PRODUCT"  # the supplier's answer is not a product we hold


class CatalogError(DomainError):
    pass
