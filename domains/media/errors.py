from enum import StrEnum

from domains.errors import DomainError


class ImageErrorCode(StrEnum):
    EMPTY_FILE = "EMPTY_FILE"
    FILE_TOO_LARGE = "FILE_TOO_LARGE"
    UNSUPPORTED_FORMAT = "UNSUPPORTED_FORMAT"
    TOO_MANY_PIXELS = "TOO_MANY_PIXELS"
    CORRUPT_IMAGE = "CORRUPT_IMAGE"


class ImageError(DomainError):
    """A file that is not an image we accept, or that cannot be decoded safely."""
