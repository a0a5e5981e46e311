"""Turn anything a person may upload into the 32x32 RGB array the model wants.

A picture reaches the model from many places: the bytes of a Jupyter upload, a path, an open file,
a PIL image someone already has, or a numpy array. Whatever it is, :func:`load_image` gives back a
``(32, 32, 3)`` ``uint8`` array in RGB order, or raises :class:`~jupyter_cifar.errors.ImageError`
whose message names the file and says what is wrong with it, so a panel can show it as it is.

Only numpy, Pillow and the standard library are used: this module runs in the worker processes
that decode the whole dataset, where importing TensorFlow would cost seconds per worker.

Safety: only the formats in :data:`ALLOWED_FORMATS` are ever tried (so an EPS upload never reaches
Ghostscript), and an image whose header claims more than ``max_pixels`` pixels is refused before a
single pixel is decoded (fewer for WebP and RLE-compressed BMP, whose decoders cost more per pixel).
Decoding one image needs at most about two full-size 32-bit copies of it in memory; the fuzz tests
(tests/test_images_fuzz.py) hold it to that, and to no crash and no hang, on thousands of hostile files.
"""

from __future__ import annotations

import io
import math
import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import IO, Any, BinaryIO

import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError

from jupyter_cifar.errors import BadParameter, ImageError

__all__ = [
    "ALLOWED_FORMATS",
    "FITS",
    "MAX_PIXELS",
    "SIZE",
    "WITHIN",
    "ImageSource",
    "describe",
    "load_image",
    "load_images",
]

#: The (width, height) of a CIFAR-10 image, which is what the model takes.
SIZE = (32, 32)

#: Refuse images with more pixels than this (width * height), read from the header before
#: decoding: a few hundred kilobytes of PNG can otherwise claim gigabytes of memory.
MAX_PIXELS = 64_000_000

# Refuse images longer than this on either side (JPEG's and GIF's own limit). Pillow keeps a pointer
# per row, and the bands converted here are whole rows: a 1x64,000,000 PNG of 1.4 MB, within
# MAX_PIXELS, took 1.5 GB (and the 64,000,000x1 one 1 GB).
_MAX_SIDE = 65_535

#: The only formats Pillow is asked to recognise. Passing them to ``Image.open(formats=...)``
#: means formats with risky decoders (EPS runs Ghostscript) are never touched.
ALLOWED_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF")

#: How an image that is not square is made square: ``crop`` keeps the centre (what torchvision
#: and fastai do at inference), ``squish`` ignores the aspect ratio, ``pad`` adds black bars.
FITS = ("crop", "squish", "pad")

#: A ``fit`` that keeps the whole picture instead: scaled down (never up), keeping its aspect ratio, to fit
#: inside ``size``, so the array has the picture's own shape. Not in :data:`FITS`, as it makes nothing
#: square; views.py decodes a photo once this way and cuts its several views from it.
WITHIN = "within"

ImageSource = bytes | bytearray | memoryview | str | os.PathLike[str] | Image.Image | np.ndarray | BinaryIO

# Pillow opens MPO (multi-picture JPEG, as some cameras write) through its JPEG opener and has no
# opener registered under "MPO": naming it in ``formats`` makes Image.open fail with KeyError.
_OPEN_FORMATS = tuple(f for f in ALLOWED_FORMATS if f != "MPO")
_ACCEPTED = ", ".join(_OPEN_FORMATS)
_NOT_AN_IMAGE = f"not an image, or a format that is not accepted (accepted: {_ACCEPTED})"

# JPEG decoding can scale by 1/2, 1/4 or 1/8 for free; ask for at least this many decoded pixels
# per output pixel (along each side) so that the final resize still has detail to average.
_DRAFT_OVERSAMPLE = 4
# Resize in two steps (a cheap box reduction, then Lanczos) when shrinking by more than this.
_REDUCING_GAP = 3.0

# EXIF orientation -> the transpose that makes the picture upright (as a viewer shows it).
_ORIENTATION_TAG = 0x0112
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

# Decoders that cost more per pixel than a plain decode get a lower pixel limit (max_pixels divided by
# the factor). WebP: libwebp keeps two canvases and Pillow copies the frame twice, 16 bytes a pixel
# where a plain RGBA decode takes 4 (a 230-byte WebP claiming 8000x8000 took 250 MB). RLE BMP: Pillow
# decodes it in Python, a byte at a time at line ends (5 KB claiming 64 megapixels took 6 s).
_WEBP_COST = 4
_RLE_BMP_COST = 16
_BMP_RLE_COMPRESSIONS = (1, 2)

# How a file of an accepted format starts: when Pillow cannot open one of these, its header is
# broken, which says more than "not an image".
_SIGNATURES = {
    b"\xff\xd8\xff": "JPEG",
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
    b"II+\x00": "TIFF",  # BigTIFF
    b"MM\x00+": "TIFF",
    b"BM": "BMP",  # Pillow tries any file starting so as a BMP
}

# Colour modes Pillow can turn into RGB itself; the 16-bit and float ones go through numpy.
_TO_RGB = frozenset({"CMYK", "YCbCr", "LAB", "HSV", "RGBX"})
_HIGH_DEPTH = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
# 16-bit and float images are scaled to 8 bits this many pixels at a time, so that a big one needs
# a few megabytes of temporaries instead of several full-size float64 copies.
_BAND_PIXELS = 1 << 20

_UInt8Array = npt.NDArray[np.uint8]


def describe(source: ImageSource, name: str | None = None) -> str:
    """The name of ``source`` in messages: ``name`` if given, else a path, else what it is."""
    if name is not None:
        return name
    if isinstance(source, str | os.PathLike):
        return os.fsdecode(source)
    if isinstance(source, bytes | bytearray):
        return f"<uploaded bytes ({len(source)} bytes)>"
    if isinstance(source, memoryview):
        return f"<uploaded bytes ({source.nbytes} bytes)>"
    if isinstance(source, Image.Image):
        filename = getattr(source, "filename", "")
        return os.fsdecode(filename) if filename else "<PIL image>"
    if isinstance(source, np.ndarray):
        return f"<array {source.shape}>"
    if hasattr(source, "read"):
        file_name = getattr(source, "name", None)
        return os.fsdecode(file_name) if isinstance(file_name, str | bytes) else "<file object>"
    return f"<{type(source).__name__}>"


def load_image(
    source: ImageSource,
    *,
    name: str | None = None,
    size: tuple[int, int] = SIZE,
    fit: str = "crop",
    max_pixels: int = MAX_PIXELS,
) -> _UInt8Array:
    """Decode ``source`` into a ``(height, width, 3)`` uint8 RGB array (``size`` is width, height).

    Raises :class:`ImageError` naming the source for anything wrong with the image itself, and
    :class:`~jupyter_cifar.errors.BadParameter` (a ``ValueError``) for a bad ``fit``/``size``.
    """
    target = _check_options(size, fit, max_pixels)
    label = describe(source, name)
    try:
        return _load(source, label, target, fit, max_pixels)
    except ImageError as error:
        failure = ImageError(error.name, error.problem)
    # Raised afresh, outside the except: the first error's traceback and context reach into Pillow's
    # decoder and the half-decoded image (490 MB for one 176-byte TIFF), and load_images keeps every
    # error it returns, so four such files in one upload held 2 GB.
    raise failure


def _load(source: ImageSource, label: str, target: tuple[int, int], fit: str, max_pixels: int) -> _UInt8Array:
    if isinstance(source, np.ndarray):
        pixels = _array_to_uint8(source, label)
        if pixels.shape == (target[1], target[0], 3):
            # never hand back (a view of) the caller's own array
            return pixels.copy() if np.may_share_memory(pixels, source) else pixels
        return _finish(Image.fromarray(pixels), label, target, fit, max_pixels, ours=False)
    if isinstance(source, Image.Image):
        return _finish(source, label, target, fit, max_pixels, ours=False)
    with _opened(source, label) as fp:
        return _decode(fp, label, target, fit, max_pixels)


def load_images(
    sources: Iterable[ImageSource],
    *,
    names: Iterable[str | None] | None = None,
    size: tuple[int, int] = SIZE,
    fit: str = "crop",
    max_pixels: int = MAX_PIXELS,
) -> list[_UInt8Array | ImageError]:
    """Decode many sources, one result per source in order; a bad one gets its ImageError.

    One unreadable upload among twenty should not hide the other nineteen predictions, so the
    error is returned in its slot rather than raised. Bad options still raise at once.
    """
    _check_options(size, fit, max_pixels)
    items = list(sources)
    labels: list[str | None] = [None] * len(items) if names is None else list(names)
    if len(labels) != len(items):
        raise BadParameter("names", f"has {len(labels)} names for {len(items)} images")
    results: list[_UInt8Array | ImageError] = []
    for item, label in zip(items, labels, strict=True):
        try:
            results.append(load_image(item, name=label, size=size, fit=fit, max_pixels=max_pixels))
        except ImageError as error:
            results.append(error)
    return results


def _check_options(size: tuple[int, int], fit: str, max_pixels: int) -> tuple[int, int]:
    """Reject options that cannot work, before any file is touched; return the size as ints."""
    if fit not in FITS and fit != WITHIN:
        raise BadParameter("fit", f"must be one of {', '.join((*FITS, WITHIN))}, not {fit!r}")
    try:
        width, height = (int(side) for side in size)
    except (TypeError, ValueError):
        raise BadParameter("size", f"must be (width, height), not {size!r}") from None
    if width < 1 or height < 1:
        raise BadParameter("size", f"must be positive, not {size!r}")
    if max_pixels < 1:
        raise BadParameter("max_pixels", f"must be positive, not {max_pixels!r}")
    return width, height


@contextmanager
def _opened(source: object, label: str) -> Iterator[IO[bytes]]:
    """A binary file for the bytes, path or file object in ``source``; closes what it opens."""
    if isinstance(source, bytes | bytearray | memoryview):
        if memoryview(source).nbytes == 0:
            raise ImageError(label, "empty file")
        yield io.BytesIO(source)
    elif isinstance(source, str | os.PathLike):
        path = os.fspath(source)
        try:  # no stat calls first: this runs 60,000 times when the dataset is decoded
            file = open(path, "rb")  # noqa: SIM115 - closed by the with below
        except FileNotFoundError:
            raise ImageError(label, "no such file") from None
        except OSError as error:  # a folder is IsADirectoryError, or PermissionError on Windows
            if os.path.isdir(path):
                raise ImageError(label, "is a folder, not an image") from None
            if isinstance(error, PermissionError):
                raise ImageError(label, "permission denied") from None
            raise ImageError(label, f"cannot open: {error.strerror or error}") from None
        with file:
            yield file
    elif hasattr(source, "read"):
        yield _binary_stream(source, label)
    else:
        raise ImageError(label, f"cannot read an image from a {type(source).__name__}")


def _binary_stream(file: Any, label: str) -> IO[bytes]:
    """Check a caller's file object is binary and not empty; it is left open for the caller."""
    stream: IO[bytes] | None
    try:
        if getattr(file, "seekable", lambda: False)():
            file.seek(0)  # Image.open reads from the start too
            head = file.read(1)
            file.seek(0)
            stream = file
        else:
            head = file.read()
            stream = io.BytesIO(head) if isinstance(head, bytes | bytearray) else None
    except (OSError, ValueError) as error:
        raise ImageError(label, f"cannot read: {error}") from None
    if isinstance(head, str):
        raise ImageError(label, "file was opened in text mode; open it with mode 'rb'")
    if not head:
        raise ImageError(label, "empty file")
    if stream is None:
        raise ImageError(label, f"reading it gave {type(head).__name__}, not bytes")
    return stream


def _decode(fp: IO[bytes], label: str, target: tuple[int, int], fit: str, max_pixels: int) -> _UInt8Array:
    """Identify the format from the header (accepted formats only), then decode and fit."""
    try:
        img = Image.open(fp, formats=_OPEN_FORMATS)
    except UnidentifiedImageError:
        raise ImageError(label, _unidentified(fp)) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError(label, _bomb_from_pillow(error, max_pixels)) from None
    except Exception as error:  # Pillow's plugins raise many types for a corrupt header
        if isinstance(error, OSError) and error.errno is not None:
            # The header sent Pillow outside the file: "[Errno 22] Invalid argument" from a path (a
            # negative seek), while the same bytes in memory are simply not identified.
            raise ImageError(label, _unidentified(fp)) from None
        raise ImageError(label, f"truncated or corrupt image: {_message(error)}") from None
    with img:
        return _finish(img, label, target, fit, max_pixels, ours=True)


def _unidentified(fp: IO[bytes]) -> str:
    """Why Pillow could not open a file: it is empty, or a broken file of an accepted format, or neither.

    Pillow reports all three alike, and a PNG whose header chunk is damaged is not "not an image".
    """
    try:
        fp.seek(0)
        head = fp.read(32)
    except (OSError, ValueError):
        return _NOT_AN_IMAGE
    if not head:
        return "empty file"
    claimed = _claimed_format(head)
    if claimed is None:
        return _NOT_AN_IMAGE
    return f"truncated or corrupt image: a {claimed} file whose header cannot be read"


def _claimed_format(head: bytes) -> str | None:
    """The accepted format whose signature ``head`` starts with, if any."""
    for signature, fmt in _SIGNATURES.items():
        if head.startswith(signature):
            return fmt
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    return None


def _finish(
    img: Image.Image, label: str, target: tuple[int, int], fit: str, max_pixels: int, *, ours: bool
) -> _UInt8Array:
    """Size check, decode (scaled down while decoding when possible), colour, fit, orientation.

    ``ours`` says the image was opened here, so it may be drafted (a caller's image is never
    changed). Every exception Pillow raises while decoding becomes an ImageError.
    """
    try:
        width, height = img.size
        limit, which = _pixel_limit(img, max_pixels)
        if width * height > limit:
            raise ImageError(label, _too_large(f"{width}x{height} = ", width * height, limit) + which)
        if max(width, height) > _MAX_SIDE:
            raise ImageError(label, f"image too large: {width}x{height} is over {_MAX_SIDE} pixels on a side")
        if width < 1 or height < 1:
            raise ImageError(label, "image has no pixels")
        if ours and img.format in ("JPEG", "MPO"):
            _draft(img, target, fit)
        img.load()
        orientation = _orientation(img)
        # Fit in the stored orientation (on the small result the final transpose costs nothing).
        stored_target = (target[1], target[0]) if orientation in (5, 6, 7, 8) else target
        working = _working_mode(img, label)
        out = _flatten(_resize(working, stored_target, fit))
        if orientation in _TRANSPOSE:
            out = out.transpose(_TRANSPOSE[orientation])
        if fit == "pad" and out.size != target:  # centre the picture between black bars, upright
            canvas = Image.new("RGB", target)
            canvas.paste(out, ((target[0] - out.width) // 2, (target[1] - out.height) // 2))
            out = canvas
        pixels = np.asarray(out)
        # asarray of a PIL image is read-only; hand back an array the caller may change.
        return pixels if pixels.flags.writeable else pixels.copy()
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageError(label, _bomb_from_pillow(error, max_pixels)) from None
    except Exception as error:  # OSError, SyntaxError, struct.error, EOFError, ZeroDivisionError…
        raise ImageError(label, f"truncated or corrupt image: {_message(error)}") from None


def _pixel_limit(img: Image.Image, max_pixels: int) -> tuple[int, str]:
    """The most pixels accepted for ``img``, and what to add to the message when it is a lower limit."""
    if img.format == "WEBP":
        return max(1, max_pixels // _WEBP_COST), " for WebP"
    if img.format == "BMP" and img.info.get("compression") in _BMP_RLE_COMPRESSIONS:
        return max(1, max_pixels // _RLE_BMP_COST), " for an RLE-compressed BMP"
    return max_pixels, ""


def _draft(img: Image.Image, target: tuple[int, int], fit: str) -> None:
    """Let libjpeg scale a big JPEG by 1/2, 1/4 or 1/8 while decoding, keeping enough detail.

    The request is the larger of what either orientation needs, as EXIF is not read yet.
    """
    width, height = img.size
    need_w, need_h = 1, 1
    for tw, th in (target, (target[1], target[0])):
        if fit == "squish":
            w_scale, h_scale = tw / width, th / height
        else:
            scale = max(tw / width, th / height) if fit == "crop" else min(tw / width, th / height)
            w_scale = h_scale = scale
        need_w = max(need_w, math.ceil(_DRAFT_OVERSAMPLE * w_scale * width))
        need_h = max(need_h, math.ceil(_DRAFT_OVERSAMPLE * h_scale * height))
    if width // need_w >= 2 and height // need_h >= 2:  # otherwise libjpeg would not scale
        img.draft("RGB", (need_w, need_h))


def _orientation(img: Image.Image) -> int:
    """The EXIF (or XMP) orientation; a broken EXIF block is ignored rather than refused."""
    if img.format == "JPEG" and "exif" not in img.info and "xmp" not in img.info:
        return 1  # the dataset's own files: skip building an Exif object 60,000 times
    try:
        value = img.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:
        return 1
    return value if isinstance(value, int) else 1


def _working_mode(img: Image.Image, label: str) -> Image.Image:
    """The image in RGB or L, or premultiplied RGBa or La if it has transparency: modes that resize
    well (transparent pixels' colours do not bleed in) and flatten simply.

    Pillow premultiplies RGBA and LA itself when resizing, in a full-size copy beside the image;
    converting here, a band at a time, keeps any picture to at most two full-size 32-bit images
    (a palette + alpha TIFF took three, converted to RGBA first).
    """
    mode = img.mode
    if mode in ("RGB", "L", "RGBa", "La"):
        return img
    if mode in ("RGBA", "PA") or (mode == "P" and img.has_transparency_data):
        return _convert_in_bands(img, "RGBa")
    if mode == "LA":
        return _convert_in_bands(img, "La")
    if mode == "1":
        return img.convert("L")
    if mode == "P" or mode in _TO_RGB:
        return img.convert("RGB")
    if mode in _HIGH_DEPTH:
        return _deep_to_grey(img)
    raise ImageError(label, f"unsupported colour mode {mode}")


def _bands(size: tuple[int, int]) -> Iterator[tuple[int, int, int, int]]:
    """Boxes of whole rows, about _BAND_PIXELS each, covering an image of ``size`` from the top."""
    width, height = size
    rows = max(1, _BAND_PIXELS // width)
    for top in range(0, height, rows):
        yield (0, top, width, min(height, top + rows))


def _convert_in_bands(img: Image.Image, mode: str) -> Image.Image:
    """``img`` in premultiplied ``mode`` (RGBa or La), converted a band at a time."""
    out = Image.new(mode, img.size)
    for box in _bands(img.size):
        band = img.crop(box)  # keeps the palette and its transparency
        if band.mode in ("P", "PA"):
            band = band.convert("RGBA")
        out.paste(band.convert(mode), box[:2])
    return out


def _deep_to_grey(img: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit int or float image as 8-bit grey, scaled as arrays are, a band at a time.

    In one go, a 64-megapixel float TIFF took 2 GB (float64 temporaries) and a 16-bit PNG 700 MB;
    band by band, the temporaries take a few megabytes besides the 8-bit result.
    """

    def bands() -> Iterator[tuple[int, np.ndarray]]:
        for box in _bands(img.size):
            values = np.asarray(img.crop(box))
            if img.mode == "I":  # 32-bit ints, in practice a 16-bit image (PNG, TIFF) widened by Pillow
                values = np.clip(values, 0, 65535).astype(np.uint16)
            yield box[1], values

    # Whether floats are in [0, 1] is decided on the whole image, as for an array.
    unit = img.mode == "F" and all(_in_unit_range(values) for _, values in bands())
    grey = np.empty((img.height, img.width), dtype=np.uint8)
    for top, values in bands():
        grey[top : top + len(values)] = _scale_to_uint8(values, unit)
    return Image.fromarray(grey)


def _resize(img: Image.Image, target: tuple[int, int], fit: str) -> Image.Image:
    """Resize for ``fit``; "pad" returns the scaled picture without its bars, "within" one that fits."""
    width, height = img.size
    if (width, height) == target:
        return img
    tw, th = target
    if fit in ("pad", WITHIN):
        scale = min(tw / width, th / height)
        if fit == WITHIN and scale >= 1:
            return img
        new_size = (max(1, min(tw, round(width * scale))), max(1, min(th, round(height * scale))))
        return _resample(img, new_size, None)
    box = None
    if fit == "crop" and width * th != height * tw:
        if width * th > height * tw:  # wider than the target: keep the middle columns
            kept = height * tw / th
            box = ((width - kept) / 2, 0.0, (width + kept) / 2, float(height))
        else:
            kept = width * th / tw
            box = (0.0, (height - kept) / 2, float(width), (height + kept) / 2)
    return _resample(img, target, box)


def _resample(
    img: Image.Image, size: tuple[int, int], box: tuple[float, float, float, float] | None
) -> Image.Image:
    """Lanczos, with a cheap box reduction first when shrinking a lot."""
    return img.resize(size, Image.Resampling.LANCZOS, box=box, reducing_gap=_REDUCING_GAP)


def _flatten(img: Image.Image) -> Image.Image:
    """RGB, with any transparency composited onto white, as a person sees a transparent PNG.

    Transparency arrives premultiplied (RGBa or La), where a colour on white is simply
    colour + (255 - alpha). ``img`` is small here: it has been resized.
    """
    if img.mode == "RGB":
        return img
    if img.mode == "L":
        return img.convert("RGB")
    values = np.asarray(img).astype(np.uint16)
    on_white = values[..., :-1] + (255 - values[..., -1:])  # Lanczos may ring a colour above its alpha
    if on_white.shape[-1] == 1:
        on_white = np.repeat(on_white, 3, axis=-1)
    return Image.fromarray(np.minimum(on_white, 255).astype(np.uint8))


def _array_to_uint8(array: np.ndarray, label: str) -> _UInt8Array:
    """An HxW, HxWx1, HxWx3 or HxWx4 array as uint8 (HxW for grey), scaled by its dtype.

    uint8 is taken as is, bool as black/white, uint16 is divided by 257 (so 65535 -> 255), and
    floats in [0, 1] are multiplied by 255 while other floats are clipped to 0..255. Pillow's
    16-bit and float modes are scaled the same way (see _deep_to_grey), rather than clipped.
    """
    shape = array.shape
    if array.ndim == 3 and shape[2] == 1:
        array = array[:, :, 0]
    elif not (array.ndim == 2 or (array.ndim == 3 and shape[2] in (3, 4))):
        raise ImageError(label, f"unsupported array shape {shape} (expected HxW, HxWx1, HxWx3 or HxWx4)")
    if array.size == 0:
        raise ImageError(label, f"array of shape {shape} has no pixels")
    kind = array.dtype
    if kind == np.uint8:
        pixels = array
    elif kind == np.bool_ or (kind.kind == "u" and kind.itemsize == 2) or kind.kind == "f":
        pixels = _scale_to_uint8(array, kind.kind == "f" and _in_unit_range(array))
    else:
        raise ImageError(label, f"unsupported array dtype {kind} (use uint8, uint16, bool or float)")
    return np.ascontiguousarray(pixels)


def _in_unit_range(values: np.ndarray) -> bool:
    """Whether float ``values`` (NaN read as 0) all lie in [0, 1], so they are scaled by 255."""
    clean = np.nan_to_num(values, nan=0.0)
    return bool(clean.min() >= 0.0 and clean.max() <= 1.0)


def _scale_to_uint8(values: np.ndarray, unit: bool) -> _UInt8Array:
    """bool, uint16 (any byte order) or float values as uint8; ``unit``: floats are in [0, 1]."""
    if values.dtype == np.bool_:
        return values.astype(np.uint8) * np.uint8(255)
    if values.dtype.kind == "u":  # round(v / 257), so 65535 -> 255
        return ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)
    floats = np.nan_to_num(values.astype(np.float64, copy=False), nan=0.0)
    if unit:
        floats = floats * 255.0
    return np.rint(np.clip(floats, 0.0, 255.0)).astype(np.uint8)


def _too_large(what: str, pixels: int, max_pixels: int) -> str:
    return (
        f"image too large: {what}{_megapixels(pixels)} megapixels, "
        f"over the limit of {_megapixels(max_pixels)} megapixels"
    )


def _bomb_from_pillow(error: Exception, max_pixels: int) -> str:
    """Pillow's own decompression-bomb refusal, worded like ours."""
    found = re.search(r"\((\d+) pixels\)", str(error))
    if found:
        return _too_large("", int(found.group(1)), max_pixels)
    return f"image too large: {error} (limit {_megapixels(max_pixels)} megapixels)"


def _megapixels(pixels: int) -> str:
    """144000000 -> "144", 1234567 -> "1.23", 6000 -> "0.006"."""
    value = pixels / 1e6
    return str(round(value)) if value >= 100 else f"{value:.3g}"


def _message(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
