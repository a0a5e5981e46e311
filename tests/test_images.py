"""jupyter_cifar.engine.images: every kind of upload becomes a (32, 32, 3) uint8 RGB array, or an ImageError.

All pictures are made here with Pillow and numpy, with colours placed where the test can check them
after decoding, resizing and rotating.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps, JpegImagePlugin

from jupyter_cifar.engine.images import (
    ALLOWED_FORMATS,
    MAX_PIXELS,
    SIZE,
    _working_mode,
    describe,
    load_image,
    load_images,
)
from jupyter_cifar.errors import ImageError

RED, GREEN, BLUE, WHITE, BLACK = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)
LOSSY = {"JPEG": 30, "WEBP": 30}
FORMATS = ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"]


# --- making pictures ---------------------------------------------------------------------------


def quadrants(width: int, height: int, mode: str = "RGB") -> Image.Image:
    """Top-left red, top-right green, bottom-left blue, bottom-right white."""
    img = Image.new("RGB", (width, height), WHITE)
    half_w, half_h = width // 2, height // 2
    img.paste(RED, (0, 0, half_w, half_h))
    img.paste(GREEN, (half_w, 0, width, half_h))
    img.paste(BLUE, (0, half_h, half_w, height))
    return img if mode == "RGB" else img.convert(mode)


def halves(width: int, height: int, left: tuple[int, ...], right: tuple[int, ...], mode: str):
    img = Image.new(mode, (width, height), right)
    img.paste(left, (0, 0, width // 2, height))
    return img


def encode(img: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    if fmt in LOSSY:
        options.setdefault("quality", 95)
    img.save(buffer, fmt, **options)
    return buffer.getvalue()


def noise(width: int = 64, height: int = 64, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def close(pixel, colour, tolerance: int = 0) -> bool:
    diff = np.abs(np.asarray(pixel, dtype=int) - np.asarray(colour, dtype=int))
    return bool(diff.max() <= tolerance)


def assert_quadrants(out: np.ndarray, tolerance: int = 0) -> None:
    assert out.shape == (32, 32, 3)
    assert out.dtype == np.uint8
    for (row, col), colour in {
        (4, 4): RED,
        (4, 27): GREEN,
        (27, 4): BLUE,
        (27, 27): WHITE,
    }.items():
        assert close(out[row, col], colour, tolerance), (row, col, out[row, col], colour)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels, with one tiny (incomplete) data chunk."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 1000))
        + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def big_jpeg() -> bytes:
    """A 6000x4000 (24 MP) photo-sized JPEG with the quadrant picture."""
    return encode(quadrants(6000, 4000), "JPEG", quality=80)


class DraftSpy:
    """Records each JpegImageFile.draft call: the size asked for and the size it gave."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[tuple[int, int], tuple[int, int], tuple[int, int]]] = []
        original = JpegImagePlugin.JpegImageFile.draft
        spy = self

        def draft(self, mode, size):
            before = self.size
            result = original(self, mode, size)
            spy.calls.append((before, size, self.size))
            return result

        monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", draft)


# --- formats and sizes -------------------------------------------------------------------------


def test_constants() -> None:
    assert SIZE == (32, 32)
    assert MAX_PIXELS == 64_000_000
    assert ALLOWED_FORMATS == ("JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("size", [(32, 32), (64, 64), (100, 60), (60, 100)])
def test_each_format_and_size_gives_rgb_in_the_right_places(fmt: str, size) -> None:
    data = encode(quadrants(*size), fmt)
    out = load_image(data)
    assert_quadrants(out, LOSSY.get(fmt, 0))


@pytest.mark.parametrize("fmt", FORMATS)
def test_left_red_right_blue_keeps_channel_order(fmt: str) -> None:
    out = load_image(encode(halves(64, 64, RED, BLUE, "RGB"), fmt))
    tol = LOSSY.get(fmt, 0)
    assert close(out[16, 3], RED, tol)
    assert close(out[16, 28], BLUE, tol)


def test_a_32x32_rgb_image_is_not_altered() -> None:
    img = noise(32, 32)
    for fmt in ("PNG", "BMP", "TIFF"):
        assert np.array_equal(load_image(encode(img, fmt)), np.asarray(img))
    jpeg = encode(img, "JPEG")
    expected = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
    assert np.array_equal(load_image(jpeg), expected)


def test_small_image_is_enlarged() -> None:
    assert_quadrants(load_image(encode(quadrants(16, 16), "PNG")), 0)


def test_result_is_a_writeable_array_of_its_own() -> None:
    out = load_image(encode(quadrants(32, 32), "PNG"))
    assert out.flags.writeable and out.flags.c_contiguous
    out[0, 0] = 0  # must not raise


@pytest.mark.parametrize("size", [(40, 20), (16, 48)])
def test_other_output_sizes(size) -> None:
    out = load_image(encode(quadrants(90, 90), "PNG"), size=size, fit="squish")
    width, height = size
    assert out.shape == (height, width, 3)
    assert close(out[1, 1], RED) and close(out[-2, -2], WHITE)


# --- colour modes -------------------------------------------------------------------------------


def test_rgba_transparent_area_becomes_white() -> None:
    img = halves(40, 40, (0, 0, 0, 0), (255, 0, 0, 255), "RGBA")
    for fmt in ("PNG", "WEBP", "TIFF"):
        out = load_image(encode(img, fmt, lossless=True) if fmt == "WEBP" else encode(img, fmt))
        assert close(out[16, 3], WHITE), fmt
        assert close(out[16, 28], RED), fmt


def test_half_transparent_pixels_are_blended_with_white() -> None:
    img = Image.new("RGBA", (32, 32), (0, 0, 0, 128))
    out = load_image(encode(img, "PNG"))
    assert close(out[10, 10], (127, 127, 127), 1)


def test_la_with_transparency() -> None:
    img = halves(32, 32, (0, 0), (50, 255), "LA")
    out = load_image(encode(img, "PNG"))
    assert close(out[5, 3], WHITE)
    assert close(out[5, 28], (50, 50, 50))


def test_palette_image() -> None:
    img = quadrants(64, 64).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    assert img.mode == "P"
    assert_quadrants(load_image(encode(img, "PNG")))
    assert_quadrants(load_image(img))


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_with_transparency_becomes_white(fmt: str) -> None:
    img = Image.new("P", (32, 32), 1)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0, 0, 0] * 254)
    img.paste(0, (0, 0, 16, 32))  # index 0 is transparent (and black underneath)
    out = load_image(encode(img, fmt, transparency=0))
    assert close(out[16, 3], WHITE)
    assert close(out[16, 28], RED)


def test_grayscale_is_replicated_to_three_channels() -> None:
    img = halves(48, 48, (30,), (200,), "L")
    for fmt in ("PNG", "JPEG"):
        out = load_image(encode(img, fmt))
        tol = LOSSY.get(fmt, 0)
        assert close(out[16, 3], (30, 30, 30), tol)
        assert close(out[16, 28], (200, 200, 200), tol)
        assert np.array_equal(out[..., 0], out[..., 1])
        assert np.array_equal(out[..., 1], out[..., 2])


def test_bilevel_mode_1() -> None:
    img = halves(32, 32, (0,), (1,), "1")
    for source in (encode(img, "PNG"), encode(img, "TIFF"), encode(img, "BMP"), img):
        out = load_image(source)
        assert close(out[16, 3], BLACK)
        assert close(out[16, 28], WHITE)


@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])
def test_cmyk_cyan_becomes_rgb_cyan(fmt: str) -> None:
    img = halves(48, 48, (255, 0, 0, 0), (0, 0, 0, 0), "CMYK")
    data = encode(img, fmt)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    out = load_image(data)
    tol = LOSSY.get(fmt, 0)
    assert close(out[16, 3], (0, 255, 255), tol)
    assert close(out[16, 28], WHITE, tol)


def test_16bit_grayscale_png_is_scaled_not_clipped() -> None:
    values = np.full((32, 32), 65535, dtype=np.uint16)
    values[:, 16:] = 32768
    values[:8, 16:] = 0
    data = encode(Image.fromarray(values), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    out = load_image(data)
    assert close(out[16, 3], WHITE)
    assert close(out[16, 28], (128, 128, 128), 1)
    assert close(out[2, 28], BLACK)


def test_16bit_tiff_and_big_endian_and_32bit_int_modes() -> None:
    values = np.full((32, 32), 32768, dtype=np.uint16)
    tiff = encode(Image.fromarray(values), "TIFF")
    assert close(load_image(tiff)[5, 5], (128, 128, 128), 1)
    big_endian = Image.frombytes("I;16B", (32, 32), values.astype(">u2").tobytes())
    assert big_endian.mode == "I;16B"
    assert close(load_image(big_endian)[5, 5], (128, 128, 128), 1)
    as_int32 = Image.fromarray(np.full((32, 32), 65535, dtype=np.int32))
    assert as_int32.mode == "I"
    assert close(load_image(as_int32)[5, 5], WHITE)


def test_float_mode_f() -> None:
    unit = Image.fromarray(np.full((32, 32), 0.5, dtype=np.float32))
    assert unit.mode == "F"
    assert close(load_image(unit)[5, 5], (128, 128, 128), 1)
    wide = Image.fromarray(np.full((32, 32), 300.0, dtype=np.float32))
    assert close(load_image(wide)[5, 5], WHITE)


@pytest.mark.parametrize("mode", ["YCbCr", "LAB", "HSV", "RGBA", "RGBX", "PA"])
def test_other_pillow_modes(mode: str) -> None:
    img = quadrants(64, 64).convert(mode) if mode != "PA" else quadrants(64, 64).convert("PA")
    assert img.mode == mode
    assert_quadrants(load_image(img), 25 if mode == "LAB" else 12)  # Pillow's LAB is approximate


def test_an_unknown_colour_mode_is_refused() -> None:
    class Strange:
        mode = "XYZ;7"

    with pytest.raises(ImageError, match="unsupported colour mode XYZ;7"):
        _working_mode(Strange(), "pic.xyz")  # type: ignore[arg-type]


def test_gif_first_frame() -> None:
    frames = [Image.new("RGB", (32, 32), RED), Image.new("RGB", (32, 32), BLUE)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=100)
    assert Image.open(io.BytesIO(buffer.getvalue())).n_frames == 2
    assert close(load_image(buffer.getvalue())[10, 10], RED)


# --- numpy arrays and PIL images -------------------------------------------------------------


def test_arrays_of_every_accepted_kind() -> None:
    grey = np.full((20, 20), 77, dtype=np.uint8)
    assert close(load_image(grey)[5, 5], (77, 77, 77))
    assert close(load_image(grey[:, :, None])[5, 5], (77, 77, 77))
    assert_quadrants(load_image(np.asarray(quadrants(64, 64))))
    rgba = np.zeros((32, 32, 4), dtype=np.uint8)
    rgba[:, 16:] = (0, 0, 255, 255)  # left half fully transparent
    out = load_image(rgba)
    assert close(out[5, 3], WHITE) and close(out[5, 28], BLUE)
    mask = np.zeros((32, 32), dtype=bool)
    mask[:, 16:] = True
    out = load_image(mask)
    assert close(out[5, 3], BLACK) and close(out[5, 28], WHITE)


def test_float_arrays_scale_unit_range_and_clip_others() -> None:
    unit = np.zeros((32, 32, 3), dtype=np.float32)
    unit[..., 0] = 1.0
    unit[..., 2] = 0.5
    assert close(load_image(unit)[3, 3], (255, 0, 128), 1)
    wide = np.full((32, 32, 3), 100.0)
    wide[..., 0] = 300.0
    wide[..., 1] = -5.0
    assert close(load_image(wide)[3, 3], (255, 0, 100))
    nan = np.full((32, 32), np.nan)
    assert close(load_image(nan)[3, 3], BLACK)


def test_uint16_arrays_are_divided_by_257() -> None:
    values = np.zeros((32, 32, 3), dtype=np.uint16)
    values[..., 0] = 65535
    values[..., 1] = 32768
    values[..., 2] = 257 * 10
    assert close(load_image(values)[3, 3], (255, 128, 10))


def test_a_32x32_uint8_array_is_returned_unchanged_but_not_shared() -> None:
    array = np.asarray(noise(32, 32)).copy()
    out = load_image(array)
    assert np.array_equal(out, array)
    assert not np.shares_memory(out, array)
    strided = np.asarray(noise(64, 32))[:, ::2]  # a non-contiguous view
    assert np.array_equal(load_image(strided), strided)


@pytest.mark.parametrize(
    ("array", "words"),
    [
        (np.zeros((32, 32, 2), dtype=np.uint8), "(32, 32, 2)"),
        (np.zeros((2, 32, 32, 3), dtype=np.uint8), "(2, 32, 32, 3)"),
        (np.zeros(32, dtype=np.uint8), "(32,)"),
        (np.zeros((0, 32, 3), dtype=np.uint8), "no pixels"),
        (np.zeros((32, 32, 3), dtype=np.int64), "int64"),
        (np.zeros((32, 32), dtype=np.complex64), "complex64"),
        (np.zeros((32, 32), dtype=object), "object"),
    ],
)
def test_bad_arrays_are_refused_naming_shape_or_dtype(array: np.ndarray, words: str) -> None:
    with pytest.raises(ImageError) as caught:
        load_image(array)
    assert words in str(caught.value)
    assert str(caught.value).startswith("<array ")


def test_pil_image_is_used_and_left_as_it_was(big_jpeg: bytes) -> None:
    img = quadrants(100, 60)
    assert_quadrants(load_image(img))
    assert img.size == (100, 60) and img.mode == "RGB"
    lazy = Image.open(io.BytesIO(big_jpeg))  # not yet decoded: must not be drafted in place
    assert_quadrants(load_image(lazy), 30)
    assert lazy.size == (6000, 4000)


# --- kinds of source -----------------------------------------------------------------------------


def test_every_kind_of_source(tmp_path: Path) -> None:
    data = encode(quadrants(64, 64), "PNG")
    path = tmp_path / "pic.png"
    path.write_bytes(data)

    class Stream(io.RawIOBase):
        """A pipe-like stream that cannot seek."""

        def __init__(self, payload: bytes) -> None:
            self._inner = io.BytesIO(payload)

        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:
            chunk = self._inner.read(len(buffer))
            buffer[: len(chunk)] = chunk
            return len(chunk)

    with path.open("rb") as opened:
        opened.read(10)  # wherever the caller left it, the whole file is read
        sources = [data, bytearray(data), memoryview(data), path, str(path), opened]
        sources += [io.BytesIO(data), io.BufferedReader(Stream(data))]
        for source in sources:
            assert_quadrants(load_image(source))
        assert not opened.closed  # the caller's file stays open


def test_files_opened_here_are_closed(tmp_path: Path) -> None:
    good = tmp_path / "good.jpg"
    good.write_bytes(encode(quadrants(64, 64), "JPEG"))
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(encode(noise(), "JPEG")[:300])
    fd_dir = Path("/proc/self/fd")
    before = len(os.listdir(fd_dir))
    for _ in range(20):
        load_image(good)
        with pytest.raises(ImageError):
            load_image(bad)
    assert len(os.listdir(fd_dir)) <= before


def test_describe() -> None:
    assert describe(b"abcd") == "<uploaded bytes (4 bytes)>"
    assert describe(memoryview(b"abc")) == "<uploaded bytes (3 bytes)>"
    assert describe(bytearray(5)) == "<uploaded bytes (5 bytes)>"
    assert describe(Path("a/b.png")) == os.path.join("a", "b.png")
    assert describe("x.jpg") == "x.jpg"
    assert describe(Image.new("RGB", (2, 2))) == "<PIL image>"
    assert describe(np.zeros((4, 5, 3))) == "<array (4, 5, 3)>"
    assert describe(io.BytesIO(b"")) == "<file object>"
    assert describe(b"abcd", name="cat.png") == "cat.png"


def test_the_given_name_is_used_in_errors() -> None:
    with pytest.raises(ImageError) as caught:
        load_image(b"not a picture at all", name="holiday.jpg")
    assert caught.value.name == "holiday.jpg"
    assert str(caught.value).startswith("holiday.jpg: ")


# --- orientation --------------------------------------------------------------------------------


def with_orientation(img: Image.Image, orientation: int, fmt: str = "JPEG") -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(img, fmt, exif=exif)


def test_exif_orientation_6_turns_a_landscape_photo_upright() -> None:
    # Stored landscape: top-left red, top-right green, bottom-left blue, bottom-right white.
    # Orientation 6 means "rotate 90 degrees clockwise to view": top-left ends at top-right.
    out = load_image(with_orientation(quadrants(96, 64), 6), fit="squish")
    tol = 30
    assert close(out[4, 27], RED, tol)
    assert close(out[27, 27], GREEN, tol)
    assert close(out[4, 4], BLUE, tol)
    assert close(out[27, 4], WHITE, tol)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fit", ["crop", "squish", "pad"])
@pytest.mark.parametrize("size", [(32, 32), (40, 24)])
def test_every_exif_orientation_matches_exif_transpose(orientation: int, fit: str, size) -> None:
    data = with_orientation(quadrants(96, 64), orientation, "PNG")
    upright = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    expected = load_image(np.asarray(upright), size=size, fit=fit)
    out = load_image(data, size=size, fit=fit)
    assert out.shape == (size[1], size[0], 3)
    diff = np.abs(out.astype(int) - expected.astype(int))
    assert np.percentile(diff, 95) <= 2  # equal away from the one-pixel rounding at edges


# --- big photos and bombs -------------------------------------------------------------------------


def test_big_jpeg_is_drafted_then_resized(big_jpeg: bytes, monkeypatch) -> None:
    spy = DraftSpy(monkeypatch)
    out = load_image(big_jpeg)
    assert_quadrants(out, 30)
    assert len(spy.calls) == 1
    before, asked, after = spy.calls[0]
    assert before == (6000, 4000)
    assert asked[0] <= 6000 // 8 and asked[1] <= 4000 // 8  # a reduced size is asked for
    assert min(asked) >= 4 * 32  # but enough for a good resize
    assert after == (750, 500)  # libjpeg decodes at 1/8 scale


def test_big_jpeg_with_other_fits_and_orientation(big_jpeg: bytes, monkeypatch) -> None:
    spy = DraftSpy(monkeypatch)
    assert_quadrants(load_image(big_jpeg, fit="squish"), 30)
    out = load_image(big_jpeg, fit="pad")
    assert close(out[1, 16], BLACK, 5)  # bars above and below
    assert all(after[0] < 6000 for _, _, after in spy.calls)
    # Orientation 8: rotate 90 degrees counter-clockwise to view, so the red corner ends bottom-left.
    out = load_image(with_orientation(Image.open(io.BytesIO(big_jpeg)), 8))
    assert close(out[27, 4], RED, 30) and close(out[4, 4], GREEN, 30)


def test_dataset_sized_jpeg_is_not_drafted(monkeypatch) -> None:
    spy = DraftSpy(monkeypatch)
    load_image(encode(noise(32, 32), "JPEG"))
    load_image(encode(noise(100, 100), "JPEG"))  # too small to gain from 1/2 scale
    assert spy.calls == []


def test_decompression_bomb_is_refused_from_the_header(monkeypatch) -> None:
    loads: list[object] = []
    original = ImageFile.ImageFile.load

    def load(self):
        loads.append(self)
        return original(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)
    data = png_header_only(9000, 9000)
    assert len(data) < 200
    with pytest.raises(ImageError) as caught:
        load_image(data, name="bomb.png")
    message = str(caught.value)
    assert message.startswith("bomb.png: ")
    assert "9000x9000 = 81 megapixels" in message
    assert "over the limit of 64 megapixels" in message
    assert loads == []


def test_pillows_own_bomb_error_becomes_an_image_error() -> None:
    limit = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageError, match=r"900 megapixels, over the limit of 64 megapixels"):
        load_image(png_header_only(30000, 30000))
    assert limit == Image.MAX_IMAGE_PIXELS  # the global limit is left alone


def test_bomb_warning_turned_into_error_becomes_an_image_error() -> None:
    # Pillow warns above its own limit (89 MP) while opening; we refuse it all the same.
    with (
        pytest.warns(Image.DecompressionBombWarning),
        pytest.raises(ImageError, match=r"10000x10000 = 100 megapixels"),
    ):
        load_image(png_header_only(10000, 10000))
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with pytest.raises(ImageError, match="100 megapixels, over the limit of 64 megapixels"):
            load_image(png_header_only(10000, 10000))


def test_max_pixels_argument(tmp_path: Path) -> None:
    path = tmp_path / "photo.png"
    path.write_bytes(encode(quadrants(100, 60), "PNG"))
    with pytest.raises(ImageError, match=r"photo\.png: .*100x60 = 0\.006 megapixels"):
        load_image(path, max_pixels=5000)
    assert_quadrants(load_image(path, max_pixels=6000))
    with pytest.raises(ImageError, match="over the limit"):
        load_image(quadrants(100, 60), max_pixels=5000)


# --- bad input ------------------------------------------------------------------------------------


def test_bad_files_name_the_file_and_the_problem(tmp_path: Path) -> None:
    jpeg, png = encode(noise(), "JPEG", quality=90), encode(noise(), "PNG")
    files = {
        "half.jpg": (jpeg[: len(jpeg) // 2], "truncated or corrupt image"),
        "half.png": (png[: len(png) // 2], "truncated or corrupt image"),
        "random.png": (np.random.default_rng(1).bytes(5000), "not an image"),
        "notes.txt": (b"Shopping list:\n- eggs\n- milk\n" * 20, "not an image"),
        "empty.jpg": (b"", "empty file"),
        "drawing.eps": (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 32 32\n", "not an image"),
    }
    for file_name, (content, problem) in files.items():
        path = tmp_path / file_name
        path.write_bytes(content)
        with pytest.raises(ImageError) as caught:
            load_image(path)
        assert caught.value.name == str(path)
        assert file_name in str(caught.value) and problem in str(caught.value), str(caught.value)
        with pytest.raises(ImageError, match=problem):
            load_image(content, name=file_name)


def test_not_an_image_lists_the_accepted_formats() -> None:
    with pytest.raises(ImageError) as caught:
        load_image(b"hello", name="hello.txt")
    assert str(caught.value) == (
        "hello.txt: not an image, or a format that is not accepted "
        "(accepted: JPEG, PNG, WEBP, GIF, BMP, TIFF)"
    )


def test_missing_path_folder_and_odd_sources(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=r"nowhere\.png: no such file"):
        load_image(tmp_path / "nowhere.png")
    with pytest.raises(ImageError, match="is a folder, not an image"):
        load_image(str(tmp_path))
    with pytest.raises(ImageError, match="empty file"):
        load_image(memoryview(b""))
    with pytest.raises(ImageError, match="empty file"):
        load_image(io.BytesIO())
    with pytest.raises(ImageError, match="text mode"):
        load_image(io.StringIO("GIF89a"))
    with pytest.raises(ImageError, match="cannot read an image from a int"):
        load_image(42)  # type: ignore[arg-type]


@pytest.mark.parametrize("fmt", FORMATS)
def test_damaged_files_only_ever_raise_image_error(fmt: str) -> None:
    """Cut and scramble real files: Pillow's many exception types must all become ImageError."""
    data = encode(quadrants(48, 40), fmt)
    rng = np.random.default_rng(7)
    variants = [data[:cut] for cut in range(1, len(data), max(1, len(data) // 25))]
    for _ in range(25):
        scrambled = bytearray(data)
        for position in rng.integers(0, len(data), 4):
            scrambled[position] = int(rng.integers(0, 256))
        variants.append(bytes(scrambled))
    for variant in variants:
        try:
            out = load_image(variant)
        except ImageError as error:
            assert str(error).startswith("<uploaded bytes (")
        else:
            assert out.shape == (32, 32, 3) and out.dtype == np.uint8


def test_truncated_images_are_not_loaded_leniently() -> None:
    jpeg = encode(noise(), "JPEG", quality=90)
    with pytest.raises(ImageError, match="truncated"):
        load_image(jpeg[: len(jpeg) - 200])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


# --- many at once ----------------------------------------------------------------------------------


def test_load_images_keeps_going_past_a_bad_file(tmp_path: Path) -> None:
    good = encode(quadrants(64, 64), "PNG")
    path = tmp_path / "good.jpg"
    path.write_bytes(encode(quadrants(64, 64), "JPEG"))
    sources = [good, b"junk", path, tmp_path / "missing.png", quadrants(32, 32)]
    results = load_images(sources, names=["a.png", "b.png", None, None, "e"])
    assert len(results) == 5
    assert_quadrants(results[0])
    assert isinstance(results[1], ImageError) and results[1].name == "b.png"
    assert "not an image" in results[1].problem
    assert_quadrants(results[2], 30)
    assert isinstance(results[3], ImageError) and "missing.png: no such file" in str(results[3])
    assert_quadrants(results[4])
    assert load_images([]) == []
    assert len(load_images(iter([good, good]))) == 2


def test_load_images_options_errors_are_raised() -> None:
    with pytest.raises(ValueError, match="names"):
        load_images([b"x", b"y"], names=["only one"])
    with pytest.raises(ValueError, match="fit"):
        load_images([b"x"], fit="stretch")


def test_load_images_passes_options_on() -> None:
    results = load_images([encode(quadrants(64, 32), "PNG")], size=(16, 8), fit="squish")
    assert isinstance(results[0], np.ndarray) and results[0].shape == (8, 16, 3)


# --- the dataset's own files --------------------------------------------------------------------


def test_dataset_files_decode_exactly_as_pillow_does(cifar10_dir: Path) -> None:
    train = cifar10_dir / "train"
    paths = [train / "airplane" / "0000.jpg"]
    paths += [sorted((train / cls).glob("*.jpg"))[1] for cls in sorted(os.listdir(train))]
    for path in paths:
        with Image.open(path) as img:
            expected = np.asarray(img.convert("RGB"))
        out = load_image(path)
        assert out.shape == (32, 32, 3) and out.dtype == np.uint8
        assert np.array_equal(out, expected), path


# --- fit modes ------------------------------------------------------------------------------------


@pytest.fixture
def red_quarter() -> bytes:
    """64x32: the left quarter red, the rest green."""
    img = Image.new("RGB", (64, 32), GREEN)
    img.paste(RED, (0, 0, 16, 32))
    return encode(img, "PNG")


def test_crop_keeps_only_the_centre(red_quarter: bytes) -> None:
    out = load_image(red_quarter, fit="crop")
    assert close(out[16, 2], GREEN, 10) and close(out[16, 29], GREEN)
    assert out[:, 2:, 0].max() <= 10  # no red left


def test_crop_is_the_default(red_quarter: bytes) -> None:
    assert np.array_equal(load_image(red_quarter), load_image(red_quarter, fit="crop"))


def test_squish_keeps_the_red_on_the_left(red_quarter: bytes) -> None:
    out = load_image(red_quarter, fit="squish")
    assert close(out[16, 2], RED) and close(out[16, 20], GREEN)
    assert close(out[0, 2], RED) and close(out[31, 2], RED)


def test_pad_adds_black_bars(red_quarter: bytes) -> None:
    out = load_image(red_quarter, fit="pad")
    assert np.all(out[:8] == 0) and np.all(out[24:] == 0)
    assert close(out[16, 2], RED) and close(out[16, 20], GREEN)


def test_pad_bars_stay_black_behind_a_transparent_picture() -> None:
    img = Image.new("RGBA", (64, 32), (0, 0, 0, 0))
    out = load_image(encode(img, "PNG"), fit="pad")
    assert np.all(out[:8] == 0) and np.all(out[9:23] == 255)


@pytest.mark.parametrize("bad", ["stretch", "", "CROP", None])
def test_unknown_fit_is_a_value_error_naming_fit(bad) -> None:
    with pytest.raises(ValueError, match="fit"):
        load_image(encode(quadrants(32, 32), "PNG"), fit=bad)


@pytest.mark.parametrize(("option", "value"), [("size", (0, 32)), ("size", "big"), ("max_pixels", 0)])
def test_other_bad_options_are_value_errors(option: str, value) -> None:
    with pytest.raises(ValueError, match=option):
        load_image(b"x", **{option: value})


# --- found by fuzzing (tests/test_images_fuzz.py), each pinned here -------------------------------------


def traceback_frames(error: BaseException) -> list:
    frames, tb = [], error.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    return frames


def half_decodable_png(width: int, height: int) -> bytes:
    """An RGBA PNG whose deflate stream breaks half way down: Pillow has allocated the image by then."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    stream = zlib.compressobj()
    rows = stream.compress((b"\x00" + b"\x07" * 4 * width) * (height // 2)) + stream.flush(zlib.Z_FULL_FLUSH)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", rows + b"\xff" * 64)
        + chunk(b"IEND", b"")
    )


def test_an_error_keeps_nothing_of_the_decoder_alive() -> None:
    """Errors used to carry Pillow's exception as context, whose traceback held the decoder and the
    half-decoded image: four 176-byte TIFFs in one upload held 2 GB until the results were dropped."""
    data = half_decodable_png(300, 200)
    results = load_images([data, data], names=["a.png", "b.png"])
    try:
        load_image(data, name="c.png")
    except ImageError as error:
        results.append(error)
    for error in results:
        assert isinstance(error, ImageError) and "truncated or corrupt image" in error.problem
        assert error.__context__ is None and error.__cause__ is None
        frames = traceback_frames(error)
        assert not any("PIL" in frame.f_code.co_filename for frame in frames)
        assert not any(isinstance(v, Image.Image) for frame in frames for v in frame.f_locals.values())


@pytest.mark.parametrize("size", [(1, 64_000_000), (64_000_000, 1), (65_536, 2)])
def test_a_side_over_65535_pixels_is_refused_before_decoding(size, monkeypatch) -> None:
    """Within the pixel limit, a 1x64,000,000 PNG of 1.4 MB took 1.5 GB (Pillow keeps a pointer per row)."""
    loads: list[object] = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loads.append(self))
    width, height = size
    with pytest.raises(
        ImageError, match=rf"image too large: {width}x{height} is over 65535 pixels on a side"
    ):
        load_image(png_header_only(width, height))
    assert loads == []


def test_a_side_of_65535_pixels_is_accepted() -> None:
    row = b"\x00" + b"\x80" * 65_535
    img = Image.frombytes("L", (65_535, 1), row[1:])
    out = load_image(encode(img, "PNG"), fit="squish")
    assert close(out[0, 0], (128, 128, 128))


def test_webp_has_a_quarter_of_the_pixel_limit() -> None:
    """libwebp needs 16 bytes a pixel: a 270-byte WebP claiming 8000x8000 took 250 MB before it failed."""
    webp = bytearray(encode(noise(17, 9), "WEBP"))
    assert webp[12:16] == b"VP8 "
    webp[26:28] = webp[28:30] = (8000).to_bytes(2, "little")  # the frame's declared width and height
    with pytest.raises(
        ImageError, match="8000x8000 = 64 megapixels, over the limit of 16 megapixels for WebP"
    ):
        load_image(bytes(webp))
    small = encode(noise(64, 64), "WEBP")
    assert load_image(small, max_pixels=4 * 64 * 64).shape == (32, 32, 3)
    with pytest.raises(ImageError, match="for WebP"):
        load_image(small, max_pixels=4 * 64 * 64 - 4)


def rle8_bmp(width: int, height: int, body: bytes) -> bytes:
    palette = b"".join(bytes([b, g, r, 0]) for r, g, b in [BLACK, RED, BLUE] + [BLACK] * 253)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(body), 2835, 2835, 256, 0)
    offset = 14 + len(info) + len(palette)
    return b"BM" + struct.pack("<IHHI", offset + len(body), 0, 0, offset) + info + palette + body


def test_rle_bmp_decodes() -> None:
    # Bottom-up: the first row is the bottom one. Each row: 16 red pixels then 16 blue, then a line end.
    row = bytes([16, 1, 16, 2, 0, 0])
    out = load_image(rle8_bmp(32, 32, row * 32 + b"\x00\x01"))
    assert close(out[16, 3], RED) and close(out[16, 28], BLUE)


def test_rle_bmp_has_a_sixteenth_of_the_pixel_limit(monkeypatch) -> None:
    """Pillow decodes RLE in Python, padding line ends a byte at a time: 5 KB claiming 64 MP took 6 s."""
    from PIL import BmpImagePlugin

    decodes: list[object] = []
    monkeypatch.setattr(BmpImagePlugin.BmpRleDecoder, "decode", lambda self, buffer: decodes.append(self))
    bomb = rle8_bmp(8_000_000, 1, bytes([1, 1, 0, 0, 0, 1]))
    assert len(bomb) < 1100
    with pytest.raises(
        ImageError, match="8 megapixels, over the limit of 4 megapixels for an RLE-compressed BMP"
    ):
        load_image(bomb)
    assert decodes == []


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("png", b"\x89PNG\r\n\x1a\n" + bytes(30)),
        ("jpeg", b"\xff\xd8\xff" + bytes(30)),
        ("gif", b"GIF89a" + bytes(3)),
        ("bmp", b"BM" + bytes(12) + struct.pack("<IiiHH", 40, 16, 0, 1, 24) + bytes(64)),  # no rows
        ("tiff", b"II*\x00" + struct.pack("<I", 2**32 - 1) + bytes(8)),
        ("webp", b"RIFF" + struct.pack("<I", 30) + b"WEBPJUNK" + bytes(22)),
    ],
)
@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")  # Pillow's, about the TIFF header
def test_a_broken_header_of_an_accepted_format_is_called_corrupt(name: str, data: bytes) -> None:
    """It said "not an image, or a format that is not accepted": a person would look for a converter."""
    fmt = {"webp": "WebP"}.get(name, name.upper())
    with pytest.raises(
        ImageError, match=rf"^x\.{name}: truncated or corrupt image: a {fmt} file whose header"
    ):
        load_image(data, name=f"x.{name}")


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_a_header_pointing_outside_the_file_reads_the_same_from_path_or_bytes(tmp_path: Path) -> None:
    """From a path it said "OSError: [Errno 22] Invalid argument" (a seek the file system refuses)."""
    data = b"II+\x00\x08\x00\x00\x00" + struct.pack("<Q", 2**62) + bytes(64)  # BigTIFF: first IFD at 2**62
    path = tmp_path / "far.tif"
    path.write_bytes(data)
    problems = set()
    for source in (data, path, io.BytesIO(data)):
        with pytest.raises(ImageError) as caught:
            load_image(source)
        problems.add(caught.value.problem)
    assert problems == {"truncated or corrupt image: a TIFF file whose header cannot be read"}


def deep_images() -> dict[str, Image.Image]:
    rng = np.random.default_rng(3)
    unit_then_wide = rng.random((40, 30), dtype=np.float32)
    unit_then_wide[35, 7] = 300.0  # one value in a late band decides the scaling of the whole image
    with_nan = rng.random((40, 30), dtype=np.float32)
    with_nan[::7, ::5] = np.nan
    return {
        "float in [0, 1]": Image.fromarray(rng.random((40, 30), dtype=np.float32)),
        "float, one value over 1": Image.fromarray(unit_then_wide),
        "float with NaN": Image.fromarray(with_nan),
        "16-bit": Image.fromarray(rng.integers(0, 65536, (40, 30)).astype(np.uint16)),
        "32-bit int": Image.fromarray(rng.integers(-500, 80_000, (40, 30)).astype(np.int32)),
    }


@pytest.mark.parametrize("kind", list(deep_images()))
def test_16_bit_and_float_images_are_scaled_band_by_band_as_a_whole(kind: str, monkeypatch) -> None:
    """A 64 MP float TIFF (372 KB) took 2 GB scaled in one go; in bands, the result must not change."""
    from jupyter_cifar.engine import images

    img = deep_images()[kind]
    values = np.asarray(img)
    if img.mode == "I":
        values = np.clip(values, 0, 65535).astype(np.uint16)
    whole = load_image(values)  # the array path scales the whole array at once
    monkeypatch.setattr(images, "_BAND_PIXELS", 90)  # three rows a band: 14 bands
    assert np.array_equal(load_image(img), whole)
    assert np.array_equal(load_image(encode(img, "TIFF")), whole)


def transparent_pictures() -> dict[str, Image.Image]:
    rgba = halves(40, 30, (0, 0, 0, 0), (255, 0, 0, 255), "RGBA")
    palette = Image.new("P", (40, 30), 1)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0, 0, 0] * 254)
    palette.paste(0, (0, 0, 20, 30))
    palette.info["transparency"] = 0
    return {
        "RGBA": rgba,
        "LA": halves(40, 30, (0, 0), (76, 255), "LA"),
        "La": halves(40, 30, (0, 0), (76, 255), "LA").convert("La"),
        "PA": palette.convert("PA"),
        "P with transparency": palette,
    }


@pytest.mark.parametrize("kind", list(transparent_pictures()))
@pytest.mark.parametrize("fit", ["crop", "squish", "pad"])
def test_transparency_is_flattened_onto_white_band_by_band(kind: str, fit: str, monkeypatch) -> None:
    """A palette + alpha TIFF at the pixel limit took three full-size copies (740 MB); converted to
    premultiplied alpha a band at a time, two; the picture must be the same either way."""
    from jupyter_cifar.engine import images

    img = transparent_pictures()[kind]
    at_once = load_image(img, fit=fit)
    monkeypatch.setattr(images, "_BAND_PIXELS", 80)  # two rows a band
    assert np.array_equal(load_image(img, fit=fit), at_once)
    assert close(at_once[16, 3], WHITE), at_once[16, 3]  # the transparent left half
    expected = (76, 76, 76) if kind.startswith("L") else RED
    assert close(at_once[16, 28], expected, 1), at_once[16, 28]
