"""The image processing module on its own: checks of hostile files, and renditions."""

import io
import pickle

import pytest
from PIL import Image

from domains.media.errors import ImageError
from domains.media.processing import image_inspect, image_render
from tests.domains.media import images


def _render(content: bytes, box: int | None, output_format: str = "JPEG"):
    return image_render(io.BytesIO(content), box=box, output_format=output_format, quality=80)


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (images.decompression_bomb(), "TOO_MANY_PIXELS"),
        # Over the cap but under Pillow's own error threshold: its warning is made fatal.
        (images.decompression_bomb(8_000, 8_000), "TOO_MANY_PIXELS"),
        (images.TEXT_NAMED_JPG, "UNSUPPORTED_FORMAT"),
        (images.bmp(), "UNSUPPORTED_FORMAT"),
    ],
    ids=["bomb", "bomb-under-pillow-threshold", "text", "bmp"],
)
def test_hostile_files_are_refused_with_a_code_naming_the_problem(content, code):
    with pytest.raises(ImageError) as refused:
        image_inspect(io.BytesIO(content))

    assert refused.value.code == code
    assert refused.value.field == "file"


DAMAGED = pytest.mark.parametrize(
    "content",
    [images.truncated_jpeg(), images.photo(image_format="PNG")[:-200]],
    ids=["truncated-jpeg", "truncated-png"],
)


@DAMAGED
def test_inspecting_reads_the_header_only_so_a_damaged_body_passes_it(content):
    source = image_inspect(io.BytesIO(content))

    assert source.format in {"JPEG", "PNG"}
    assert source.width > 0


@DAMAGED
def test_a_damaged_body_is_refused_by_the_render_with_a_code(content):
    with pytest.raises(ImageError) as refused:
        _render(content, box=150)

    assert refused.value.code == "CORRUPT_IMAGE"


@pytest.mark.parametrize("image_format", ["JPEG", "PNG", "WEBP", "GIF"])
def test_accepted_formats_are_read_from_content(image_format):
    source = image_inspect(io.BytesIO(images.photo((300, 200), image_format=image_format)))

    assert (source.format, source.width, source.height) == (image_format, 300, 200)


def test_a_sideways_photo_reports_its_upright_size():
    source = image_inspect(io.BytesIO(images.photo((1200, 800), orientation=6)))

    assert (source.width, source.height) == (1200, 800)


@pytest.mark.parametrize("box", [150, 400, 800])
@pytest.mark.parametrize("size", [(1600, 1200), (900, 1600), (640, 640)])
def test_a_thumbnail_fits_its_box_and_keeps_the_aspect_ratio(box, size):
    rendition = _render(images.photo(size), box)

    assert max(rendition.width, rendition.height) == min(box, max(size))
    assert abs(rendition.width / rendition.height - size[0] / size[1]) < 0.02
    with Image.open(io.BytesIO(rendition.content)) as made:
        assert made.size == (rendition.width, rendition.height)


def test_a_small_picture_is_never_enlarged():
    rendition = _render(images.photo((120, 90)), 800)

    assert (rendition.width, rendition.height) == (120, 90)


@pytest.mark.parametrize("orientation", [3, 6, 8])
@pytest.mark.parametrize("box", [150, None])
def test_an_exif_rotated_photo_comes_out_upright(orientation, box):
    rendition = _render(images.photo((1200, 800), orientation=orientation), box)

    assert rendition.width > rendition.height
    assert images.is_near(images.colour_at(rendition.content, (0.5, 0.1)), images.TOP)
    assert images.is_near(images.colour_at(rendition.content, (0.5, 0.9)), images.BOTTOM)
    assert not images.has_exif(rendition.content)


@pytest.mark.parametrize("output_format", ["JPEG", "WEBP"])
def test_gps_and_all_metadata_are_stripped(output_format):
    original = images.photo((1000, 700), orientation=6)
    assert images.has_gps(original)

    for box in (150, 800, None):
        rendition = _render(original, box, output_format)
        assert not images.has_gps(rendition.content)
        assert not images.has_exif(rendition.content)
        with Image.open(io.BytesIO(rendition.content)) as made:
            assert made.format == output_format
            assert "icc_profile" not in made.info


def test_a_transparent_gif_becomes_a_jpeg_on_white():
    frame = Image.new("RGBA", (200, 100), (0, 0, 0, 0))
    frame.paste((20, 20, 220, 255), (0, 0, 100, 100))
    buffer = io.BytesIO()
    frame.save(buffer, format="GIF")

    rendition = _render(buffer.getvalue(), 150)

    assert images.is_near(images.colour_at(rendition.content, (0.1, 0.5)), images.BOTTOM)
    assert images.is_near(images.colour_at(rendition.content, (0.9, 0.5)), (255, 255, 255))


def test_an_image_error_survives_pickling_with_its_code():
    error = ImageError("Too big.", code="TOO_MANY_PIXELS", field="file")

    copy = pickle.loads(pickle.dumps(error))

    assert (type(copy), copy.message, copy.code, copy.field) == (
        ImageError,
        "Too big.",
        "TOO_MANY_PIXELS",
        "file",
    )
