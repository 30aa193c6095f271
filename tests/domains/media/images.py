"""Images made with Pillow for the tests: photos with EXIF orientation and GPS, and
hostile files (a decompression bomb, a truncated JPEG, text with an image's name)."""

import io
import struct
import zlib

from PIL import ExifTags, Image

TOP, BOTTOM = (220, 20, 20), (20, 20, 220)


def photo(
    size: tuple[int, int] = (1200, 800),
    *,
    orientation: int | None = None,
    gps: bool = True,
    image_format: str = "JPEG",
) -> bytes:
    """A picture of `size` whose top half is red and bottom half blue when seen upright;
    stored turned, with an EXIF `orientation` (3, 6 or 8) that turns it back, and a GPS
    position in its EXIF unless gps=False."""
    width, height = size  # as a viewer sees it, upright
    picture = Image.new("RGB", size, BOTTOM)
    picture.paste(TOP, (0, 0, width, height // 2))
    # Store it turned so that a viewer applying the orientation sees it upright.
    stored = {
        3: Image.Transpose.ROTATE_180,
        6: Image.Transpose.ROTATE_90,
        8: Image.Transpose.ROTATE_270,
    }
    if orientation in stored:
        picture = picture.transpose(stored[orientation])
    exif = Image.Exif()
    if orientation:
        exif[ExifTags.Base.Orientation] = orientation
    if gps:
        position = exif.get_ifd(ExifTags.IFD.GPSInfo)
        position[ExifTags.GPS.GPSLatitudeRef] = "N"
        position[ExifTags.GPS.GPSLatitude] = (52.0, 31.0, 12.5)
        position[ExifTags.GPS.GPSLongitudeRef] = "E"
        position[ExifTags.GPS.GPSLongitude] = (13.0, 24.0, 3.0)
    buffer = io.BytesIO()
    picture.save(buffer, format=image_format, exif=exif, quality=90)
    return buffer.getvalue()


def has_gps(content: bytes) -> bool:
    with Image.open(io.BytesIO(content)) as image:
        return bool(image.getexif().get_ifd(ExifTags.IFD.GPSInfo))


def has_exif(content: bytes) -> bool:
    with Image.open(io.BytesIO(content)) as image:
        return "exif" in image.info or bool(image.getexif())


def decompression_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A PNG of a few dozen bytes that declares width x height pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def truncated_jpeg() -> bytes:
    whole = photo((1600, 1200), gps=False)
    return whole[: len(whole) // 2]


def bmp() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), TOP).save(buffer, format="BMP")
    return buffer.getvalue()


TEXT_NAMED_JPG = b"Dear diary, today I uploaded a text file called holiday.jpg.\n" * 20


def colour_at(content: bytes, where: tuple[float, float]) -> tuple[int, int, int]:
    """The colour at a point given as fractions of the width and height."""
    with Image.open(io.BytesIO(content)) as image:
        rgb = image.convert("RGB")
        return rgb.getpixel((int(where[0] * (rgb.width - 1)), int(where[1] * (rgb.height - 1))))


def is_near(colour: tuple[int, int, int], expected: tuple[int, int, int]) -> bool:
    return all(abs(a - b) <= 40 for a, b in zip(colour, expected, strict=True))
