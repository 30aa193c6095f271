"""Decoding and encoding images with Pillow, written for hostile input.

A file is identified by its content among the accepted formats only (never by its name or
the Content-Type it came with), its declared pixel count is checked before any pixel is
decoded, and every Pillow failure becomes an ImageError that names the problem. JPEGs are
decoded at 1/2, 1/4 or 1/8 scale (Pillow's draft mode) whenever the output is that much
smaller, so a thumbnail of a 12 MP photo never holds the full photo in memory.
"""

import io
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO

from django.conf import settings
from PIL import ExifTags, UnidentifiedImageError
from PIL import Image as PILImage

from domains.media.errors import ImageError, ImageErrorCode

ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF")
# Phones write multi-picture JPEGs, which Pillow names MPO; the first picture is a JPEG.
_JPEG_FAMILY = frozenset({"JPEG", "MPO"})
CONTENT_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif"}
EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif"}
# EXIF orientation -> the transpose that makes the picture upright (as ImageOps.exif_transpose).
_UPRIGHT = {
    2: PILImage.Transpose.FLIP_LEFT_RIGHT,
    3: PILImage.Transpose.ROTATE_180,
    4: PILImage.Transpose.FLIP_TOP_BOTTOM,
    5: PILImage.Transpose.TRANSPOSE,
    6: PILImage.Transpose.ROTATE_270,
    7: PILImage.Transpose.TRANSVERSE,
    8: PILImage.Transpose.ROTATE_90,
}
_SIDEWAYS = frozenset({5, 6, 7, 8})


@dataclass(frozen=True)
class SourceInfo:
    format: str  # one of ACCEPTED_FORMATS
    width: int  # upright
    height: int


@dataclass(frozen=True)
class Rendition:
    content: bytes
    format: str
    width: int
    height: int


def _too_many_pixels() -> ImageError:
    return ImageError(
        f"The image has more than {settings.IMAGE_MAX_PIXELS:,} pixels.",
        code=ImageErrorCode.TOO_MANY_PIXELS,
        field="file",
    )


@contextmanager
def _opened(file: IO[bytes]) -> Iterator[PILImage.Image]:
    """The image in `file`, header read and pixel count checked; no pixel decoded yet.

    Decoding errors raised inside the block come out as ImageError too.
    """
    file.seek(0)
    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS (set to the cap at start-up) and
            # twice that; here its guard is fatal.
            warnings.simplefilter("error", PILImage.DecompressionBombWarning)
            opened = PILImage.open(file, formats=ACCEPTED_FORMATS)
        with opened as image:
            if image.width * image.height > settings.IMAGE_MAX_PIXELS:
                raise _too_many_pixels()
            yield image
    except UnidentifiedImageError:
        raise ImageError(
            "The file is not a JPEG, PNG, WebP or GIF image.",
            code=ImageErrorCode.UNSUPPORTED_FORMAT,
            field="file",
        ) from None
    except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning):
        raise _too_many_pixels() from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as error:
        raise ImageError(
            "The image is damaged or truncated and cannot be decoded.",
            code=ImageErrorCode.CORRUPT_IMAGE,
            field="file",
        ) from error


def _orientation(image: PILImage.Image) -> int:
    if image.format == "PNG":
        # getexif() would decode every pixel to look for an eXIf chunk after them.
        exif = PILImage.Exif()
        if "exif" in image.info:
            exif.load(image.info["exif"])
        return exif.get(ExifTags.Base.Orientation, 1)
    return image.getexif().get(ExifTags.Base.Orientation, 1)


def image_inspect(file: IO[bytes]) -> SourceInfo:
    """Check an upload before it is kept, from its header alone: format, size, orientation.

    No pixel is decoded here, in the web process: a file of a few KB can declare a canvas
    that takes hundreds of MB to decode. A damaged or truncated body is found by the
    worker's decode (image_render), under the worker's time and memory limits, and fails
    the job with CORRUPT_IMAGE.
    """
    with _opened(file) as image:
        source_format = "JPEG" if image.format in _JPEG_FAMILY else image.format
        width, height = image.size
        sideways = _orientation(image) in _SIDEWAYS
    return SourceInfo(
        format=source_format,
        width=height if sideways else width,
        height=width if sideways else height,
    )


def _fit(size: tuple[int, int], box: int) -> tuple[int, int]:
    """`size` scaled down (never up) to fit a `box` x `box` square, keeping its ratio."""
    width, height = size
    scale = min(box / width, box / height, 1.0)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _without_palette(image: PILImage.Image) -> PILImage.Image:
    if image.mode in ("RGB", "RGBA", "L"):
        return image
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    return image.convert("RGBA" if has_alpha else "RGB")


def _flattened(image: PILImage.Image) -> PILImage.Image:
    """JPEG has no alpha channel: transparent pixels become white."""
    if image.mode != "RGBA":
        return image
    background = PILImage.new("RGB", image.size, "white")
    background.paste(image, mask=image.getchannel("A"))
    return background


def image_render(
    file: IO[bytes], *, box: int | None, output_format: str, quality: int
) -> Rendition:
    """The picture upright, scaled to fit `box` (None: full size), encoded with no metadata."""
    with _opened(file) as image:
        orientation = _orientation(image)
        target = _fit(image.size, box) if box else image.size
        if target != image.size and image.format in _JPEG_FAMILY:
            image.draft(None, target)  # the smallest DCT scale still at least `target`
        frame = _without_palette(image)
        if frame.size != target:
            frame = frame.resize(target, PILImage.Resampling.LANCZOS)
        if orientation in _UPRIGHT:
            frame = frame.transpose(_UPRIGHT[orientation])
        if output_format == "JPEG":
            frame = _flattened(frame)
        frame.info.clear()  # EXIF (GPS included), XMP, ICC, comments: none is written
        buffer = io.BytesIO()
        if output_format == "JPEG":
            frame.save(buffer, format="JPEG", quality=quality, optimize=True, progressive=True)
        else:
            frame.save(buffer, format="WEBP", quality=quality, method=4)
    return Rendition(
        content=buffer.getvalue(), format=output_format, width=frame.width, height=frame.height
    )
