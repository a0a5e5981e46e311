"""Fuzzing the image decoder with thousands of hostile uploads (issue 7, "Uploads").

Random bytes die at the first magic check, so every input here starts from a real file: a pool of
small valid images of every accepted format, colour mode and oddity (made once with Pillow, plus
files written byte by byte where Pillow cannot: 1/2/4/16-bit and Adam7 PNGs, RLE and bit-field BMPs,
2/4/12-bit and big-endian TIFFs; animations of many frames, multi-page TIFFs, ICC profiles, EXIF).
Hypothesis then picks a file and one mutation family (see FAMILIES): bit flips, overwritten bytes,
truncation, spliced ranges, header fields found by parsing the file (lengths, widths, bit depths, tag
types, with PNG CRCs recomputed or not), huge or zero declared dimensions, PNG chunks dropped,
repeated, reordered or invented, EXIF orientation and XMP garbage, broken ICC profiles, or random
bytes behind a real file's first bytes.

Each hypothesis example is one upload of BATCH generated files. Each file is decoded alone
(``load_image`` on its bytes and name, or on a file object), timed; then all of them in one
``load_images`` call between two good files, given as names and bytes (as the Classify tab does) or
as paths (as ``jupyter cifar classify`` does). The property, for each file and each way in: a
(32, 32, 3) uint8 array, or an ImageError whose ``name`` is the file's name and whose message is
"<name>: <one line saying what is wrong>"; nothing else escapes; an unmutated file decodes; in the
batch each file comes out as it did alone, and the good files exactly as they decode by themselves.

Bounds, each checked by CI:
* crash: the campaign runs in a child process, so a segfault in a C decoder is a failed test (exit
  status -11, with faulthandler's traceback), not a dead test run;
* hang: HANG_BOUND_S per example, that is per batch of BATCH files each decoded twice (hypothesis'
  deadline; a file takes a few milliseconds, the slowest seen about 0.2 s, so the bound catches
  hangs and never a slow machine), and the child is killed after CAMPAIGN_TIMEOUT_S;
* memory: the child's peak resident memory may grow by at most MEMORY_BOUND_MIB over its resident
  memory once the pool is built: two full-size 32-bit copies of the largest image accepted
  (``MAX_PIXELS``), plus 64 MiB. test_memory_at_the_pixel_limit holds the costliest valid image of
  each decoding path, at the limit, to the same bound;
* count: the campaign must have tried EXAMPLES files; a run that silently generated fewer fails.

CI is reproducible: ``derandomize=True`` and no example database, so every run tries the same inputs.

Bigger or different campaigns (figures are printed as JSON):
    JUPYTER_CIFAR_FUZZ_EXAMPLES=200000 python -m pytest tests/test_images_fuzz.py -s
    python tests/test_images_fuzz.py --examples 200000 --seed 7 --keep-going
``--seed`` draws other inputs than CI's; ``--keep-going`` records every broken property instead of
stopping (and shrinking) at the first.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import re
import struct
import subprocess
import sys
import tempfile
import time
import warnings
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from PIL import Image, ImageCms, PngImagePlugin

from jupyter_cifar.engine.images import FITS, MAX_PIXELS, describe, load_image, load_images
from jupyter_cifar.errors import ImageError

#: Inputs per CI run; JUPYTER_CIFAR_FUZZ_EXAMPLES asks for another number.
EXAMPLES = int(os.environ.get("JUPYTER_CIFAR_FUZZ_EXAMPLES", "10000"))
#: The hang bound: hypothesis' deadline for one example (BATCH files, each decoded twice).
HANG_BOUND_S = 10.0
#: The outer guard: the whole child process is killed after this long.
CAMPAIGN_TIMEOUT_S = max(600.0, EXAMPLES * 0.06)
#: Peak resident memory the decoder may add: two 4-byte-per-pixel copies at the limit, plus slack.
MEMORY_BOUND_MIB = 2 * 4 * MAX_PIXELS / 2**20 + 64
#: A message a panel shows beside a file: one line, and not an essay.
MAX_PROBLEM_CHARS = 300

HERE = Path(__file__).resolve()
INTERESTING_BYTES = (0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF)
INTERESTING_INTS = (0, 1, 2, 3, 7, 8, 15, 16, 31, 32, 33, 255, 256, 4095, 8000, 8191, 16383, 16384, 32767,
                    32768, 65535, 65536, 2**24 - 1, 2**31 - 1, 2**31, 2**32 - 1)  # fmt: skip
#: Declared sizes around what matters: empty, tiny, the output size, and just under and over the limit.
INTERESTING_SIDES = (0, 1, 2, 31, 32, 33, 1000, 7999, 8000, 8001, 16383, 16384, 65535, 65536, 2**24 - 1,
                     MAX_PIXELS, MAX_PIXELS + 1, 2**31 - 1, 2**32 - 1)  # fmt: skip


# --- the pool of valid files ------------------------------------------------------------------------


@dataclass(frozen=True)
class Seed:
    """One valid file: ``kind`` is its format for the figures (MPO and APNG count as JPEG and PNG)."""

    label: str
    kind: str
    data: bytes


def noise(width: int, height: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    rgb = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    return rgb if mode == "RGB" else rgb.convert(mode)


def deep(width: int, height: int, dtype: str, seed: int = 0) -> Image.Image:
    """A 16-bit, 32-bit int or float picture (Pillow modes I;16, I and F)."""
    rng = np.random.default_rng(seed)
    if dtype == "float32":
        return Image.fromarray(rng.random((height, width), dtype=np.float32))
    high = 65536 if dtype == "uint16" else 70000  # some int32 values above 16 bits, to be clipped
    return Image.fromarray(rng.integers(0, high, (height, width)).astype(dtype))


def encoded(img: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **options)
    return buffer.getvalue()


def frames(count: int, size: tuple[int, int], mode: str = "RGB") -> list[Image.Image]:
    return [noise(*size, mode=mode, seed=i) for i in range(count)]


def animated(fmt: str, count: int, size: tuple[int, int], mode: str = "RGB", **options: Any) -> bytes:
    first, *rest = frames(count, size, mode)
    return encoded(first, fmt, save_all=True, append_images=rest, **options)


def chunk(kind: bytes, data: bytes, crc: int | None = None) -> bytes:
    """A PNG chunk; ``crc`` overrides the right one."""
    value = zlib.crc32(kind + data) if crc is None else crc
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", value)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def png_by_hand(width: int, height: int, depth: int, colour: int, interlace: bool, seed: int = 0) -> bytes:
    """A PNG of random pixels in any bit depth and colour type, Adam7-interlaced or not."""
    rng = random.Random(seed)
    bits = depth * PNG_CHANNELS[colour]
    passes = ADAM7 if interlace else ((0, 0, 1, 1),)
    raw = bytearray()
    for x0, y0, dx, dy in passes:
        pass_w, pass_h = -(-(width - x0) // dx), -(-(height - y0) // dy)
        if pass_w <= 0 or pass_h <= 0:
            continue
        for _ in range(pass_h):
            raw.append(rng.randrange(5))  # any of the five filters
            raw += rng.randbytes(-(-pass_w * bits // 8))
    chunks = [chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, int(interlace)))]
    if colour == 3:
        chunks.append(chunk(b"PLTE", rng.randbytes(3 * 2**depth)))
        chunks.append(chunk(b"tRNS", rng.randbytes(2**depth // 2)))
    chunks += [chunk(b"IDAT", zlib.compress(bytes(raw))), chunk(b"IEND", b"")]
    return PNG_SIGNATURE + b"".join(chunks)


def bmp_by_hand(
    width: int, height: int, bpp: int, compression: int, body: bytes, *, core: bool = False, masks: tuple = ()
) -> bytes:
    """A BMP with any header: OS/2 core or Windows info, RLE, bit fields, negative (top-down) height."""
    colours = 2**bpp if bpp <= 8 else 0
    if core:
        header = struct.pack("<IHHHH", 12, width, height, 1, bpp)
        palette = bytes(range(3 * colours)) if colours else b""
    else:
        values = (40 + 4 * len(masks), width, height, 1, bpp, compression, len(body), 2835, 2835, colours, 0)
        header = struct.pack("<IiiHHIIiiII", *values) + b"".join(struct.pack("<I", m) for m in masks)
        palette = bytes(i % 256 for i in range(4 * colours))
    offset = 14 + len(header) + len(palette)
    return b"BM" + struct.pack("<IHHI", offset + len(body), 0, 0, offset) + header + palette + body


def rle_body(height: int) -> bytes:
    """A delta, then per row a run, an absolute run, another run and a line end; then the end mark."""
    row = bytes([4, 5, 0, 3, 7, 8, 9, 0, 3, 1, 0, 0])
    return bytes([0, 2, 1, 0]) + row * height + b"\x00\x01"


def tiff_by_hand(
    width: int,
    height: int,
    bits: int,
    samples: int,
    pixels: bytes,
    *,
    big_endian: bool,
    floats: bool,
    alpha: int,
) -> bytes:
    """An uncompressed one-strip TIFF with any bit depth and byte order (Pillow writes only some);
    ``alpha``: 0 none, 1 premultiplied, 2 straight, in the last sample."""
    order = ">" if big_endian else "<"
    photometric = 2 if samples >= 3 else 1
    entries = [(256, 4, width), (257, 4, height), (258, 3, bits), (259, 3, 1), (262, 3, photometric)]
    entries += [(273, 4, 0), (277, 3, samples), (278, 4, height), (279, 4, len(pixels))]
    entries += [(338, 3, alpha)] if alpha else []
    entries += [(339, 3, 3 if floats else 1)]
    ifd_size = 2 + 12 * len(entries) + 4
    data_offset = 8 + ifd_size
    ifd = struct.pack(order + "H", len(entries))
    for tag, kind, value in entries:
        value = data_offset if tag == 273 else value
        packed = struct.pack(order + "HH", value, 0) if kind == 3 else struct.pack(order + "I", value)
        ifd += struct.pack(order + "HHI", tag, kind, 1) + packed
    ifd += struct.pack(order + "I", 0)
    return (b"MM\x00*" if big_endian else b"II*\x00") + struct.pack(order + "I", 8) + ifd + pixels


#: TIFFs written by hand: (bits, samples, big-endian, floats, alpha), depths and orders Pillow does not write.
HAND_TIFFS = (
    (2, 1, False, False, 0),
    (4, 1, True, False, 0),
    (12, 1, False, False, 0),
    (16, 3, True, False, 0),
    (32, 1, True, True, 0),
    (8, 2, True, False, 2),
    (8, 2, False, False, 1),
)


def srgb_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def exif_orientation(value: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = value
    return exif


def _jpeg_seeds() -> Iterator[tuple[str, bytes]]:
    yield "rgb-17x9", encoded(noise(17, 9), "JPEG", quality=75)
    yield "rgb-32-progressive", encoded(noise(32, 32), "JPEG", progressive=True)
    yield "rgb-48x40-444-optimised", encoded(noise(48, 40), "JPEG", subsampling=0, optimize=True)
    yield "rgb-40x24-restart-markers", encoded(noise(40, 24), "JPEG", restart_marker_blocks=2)
    yield "grey-16", encoded(noise(16, 16, "L"), "JPEG")
    yield "cmyk-24", encoded(noise(24, 24, "CMYK"), "JPEG")
    yield "rgb-512x320-drafted", encoded(noise(512, 320), "JPEG", quality=60)
    yield "rgb-exif-orientation-6", encoded(noise(24, 16), "JPEG", exif=exif_orientation(6))
    yield "rgb-icc", encoded(noise(16, 16), "JPEG", icc_profile=srgb_profile())
    yield "rgb-comment-xmp", encoded(noise(16, 16), "JPEG", comment=b"hello", xmp=b"<x:xmpmeta/>")
    yield "mpo-3-frames", animated("MPO", 3, (16, 12))


def _png_seeds() -> Iterator[tuple[str, bytes]]:
    for mode in ("1", "L", "LA", "RGB", "RGBA"):
        yield f"{mode.lower()}-17x9", encoded(noise(17, 9, mode), "PNG")
    four_colours = noise(16, 16).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    yield "p-2bit", encoded(four_colours, "PNG", bits=2)
    yield "p-transparent", encoded(noise(16, 16, "P"), "PNG", transparency=3)
    yield "rgb-trns", encoded(noise(16, 16), "PNG", transparency=(1, 2, 3))
    yield "i16-grey", encoded(deep(16, 12, "uint16"), "PNG")
    yield (
        "rgb-icc-exif-text",
        encoded(
            noise(16, 16), "PNG", icc_profile=srgb_profile(), exif=exif_orientation(8), pnginfo=_text_chunks()
        ),
    )
    yield "apng-40-frames", animated("PNG", 40, (8, 8), duration=10, disposal=2, blend=1)
    for depth, colour in ((1, 0), (2, 0), (4, 0), (16, 0), (4, 3), (8, 3), (16, 2), (16, 4), (16, 6)):
        yield f"hand-depth{depth}-colour{colour}", png_by_hand(13, 7, depth, colour, interlace=False)
    for depth, colour in ((8, 2), (16, 0), (1, 3), (8, 6)):
        yield f"hand-adam7-depth{depth}-colour{colour}", png_by_hand(11, 9, depth, colour, interlace=True)


def _text_chunks() -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "tEXt chunk")
    info.add_text("Title", "zTXt chunk " * 20, zip=True)
    info.add_itxt("XML:com.adobe.xmp", '<x tiff:Orientation="3"/>', zip=True)
    return info


def _webp_seeds() -> Iterator[tuple[str, bytes]]:
    yield "lossy-rgb-17x9", encoded(noise(17, 9), "WEBP", quality=70)
    yield "lossless-rgba-24", encoded(noise(24, 24, "RGBA"), "WEBP", lossless=True)
    yield "lossy-rgba-alpha", encoded(noise(16, 16, "RGBA"), "WEBP", quality=50)
    yield (
        "exif-icc-xmp",
        encoded(noise(16, 16), "WEBP", exif=exif_orientation(3), icc_profile=srgb_profile(), xmp=b"<x/>"),
    )
    yield "animated-60-frames", animated("WEBP", 60, (8, 8), duration=10)


def _gif_seeds() -> Iterator[tuple[str, bytes]]:
    yield "p-17x9", encoded(noise(17, 9, "P"), "GIF")
    yield "grey-16", encoded(noise(16, 16, "L"), "GIF")
    yield "transparent-interlaced", encoded(noise(32, 32, "P"), "GIF", transparency=0, interlace=True)
    yield "comment", encoded(noise(8, 8, "P"), "GIF", comment=b"x" * 300)
    yield "animated-200-frames", animated("GIF", 200, (4, 4), duration=10, disposal=2, loop=0)
    yield "one-pixel", encoded(Image.new("P", (1, 1)), "GIF")
    yield "local-palettes", animated("GIF", 5, (6, 6), mode="P", duration=20, optimize=False)
    yield "87a-4bit", encoded(noise(10, 10).convert("P", palette=Image.Palette.ADAPTIVE, colors=16), "GIF")


def _bmp_seeds() -> Iterator[tuple[str, bytes]]:
    for mode in ("1", "L", "P", "RGB", "RGBA"):
        yield f"{mode.lower()}-17x9", encoded(noise(17, 9, mode), "BMP")
    yield "rle8", bmp_by_hand(16, 6, 8, 1, rle_body(6))
    yield "rle4", bmp_by_hand(16, 6, 4, 2, rle_body(6))
    yield "bitfields-565", bmp_by_hand(8, 4, 16, 3, bytes(range(64)), masks=(0xF800, 0x07E0, 0x001F))
    yield (
        "bitfields-32",
        bmp_by_hand(4, 4, 32, 3, bytes(range(64)), masks=(0xFF0000, 0xFF00, 0xFF, 0xFF000000)),
    )
    yield "top-down-24", bmp_by_hand(4, -4, 24, 0, bytes(range(48)))
    yield "os2-core-24", bmp_by_hand(4, 4, 24, 0, bytes(range(48)), core=True)
    yield "raw-4bit", bmp_by_hand(8, 4, 4, 0, bytes(range(16)))


def _tiff_seeds() -> Iterator[tuple[str, bytes]]:
    for mode, compression in (
        ("RGB", "raw"),
        ("RGBA", "tiff_lzw"),
        ("L", "tiff_deflate"),
        ("P", "packbits"),
        ("1", "group4"),
        ("RGB", "jpeg"),
        ("CMYK", "tiff_adobe_deflate"),
        ("LA", "raw"),
        ("YCbCr", "raw"),
        ("LAB", "raw"),
        ("PA", "tiff_lzw"),
    ):
        yield f"{mode.lower()}-{compression}", encoded(noise(17, 9, mode), "TIFF", compression=compression)
    for dtype in ("uint16", "int32", "float32"):
        yield f"{dtype}", encoded(deep(12, 10, dtype), "TIFF")
    yield "orientation-6-icc", encoded(noise(16, 12), "TIFF", tiffinfo={274: 6}, icc_profile=srgb_profile())
    yield "bigtiff", encoded(noise(8, 8), "TIFF", big_tiff=True)
    yield "30-pages", animated("TIFF", 30, (8, 8))
    rng = random.Random(0)
    for bits, samples, big, floats, alpha in HAND_TIFFS:
        pixels = rng.randbytes(-(-9 * bits * samples // 8) * 7)
        label = f"hand-{bits}bit-{samples}ch-{'be' if big else 'le'}{'-premultiplied' if alpha == 1 else ''}"
        yield label, tiff_by_hand(9, 7, bits, samples, pixels, big_endian=big, floats=floats, alpha=alpha)


SEED_MAKERS: dict[str, Callable[[], Iterator[tuple[str, bytes]]]] = {
    "JPEG": _jpeg_seeds,
    "PNG": _png_seeds,
    "WEBP": _webp_seeds,
    "GIF": _gif_seeds,
    "BMP": _bmp_seeds,
    "TIFF": _tiff_seeds,
}
EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tif"}


@cache
def pool() -> tuple[Seed, ...]:
    """Every valid file the mutations start from (built once per process, in well under a second)."""
    return tuple(
        Seed(f"{kind.lower()}/{label}", kind, data)
        for kind, make in SEED_MAKERS.items()
        for label, data in make()
    )


# --- where the fields are: a small parser per format ---------------------------------------------------


@dataclass(frozen=True)
class Field:
    """``size`` bytes at ``offset`` holding a number; ``chunk`` is the PNG chunk start whose CRC covers it."""

    offset: int
    size: int
    big_endian: bool
    chunk: int | None = None


def png_chunks(data: bytes) -> list[tuple[int, bytes, int]]:
    """(start, type, data length) of each PNG chunk, as far as the lengths can be followed."""
    found, at = [], len(PNG_SIGNATURE)
    while at + 12 <= len(data):
        length = int.from_bytes(data[at : at + 4], "big")
        found.append((at, data[at + 4 : at + 8], length))
        at += 12 + length
    return found


def png_fields(data: bytes) -> list[Field]:
    fields = []
    for start, _, length in png_chunks(data):
        fields.append(Field(start, 4, True))
        body = start + 8
        for offset in range(body, min(body + length, body + 26, len(data) - 4)):
            fields.append(Field(offset, 1, True, start))
            if offset + 4 <= body + length and (offset - body) % 4 == 0:
                fields.append(Field(offset, 4, True, start))
    return fields


def jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """(start, marker, length) of each marker segment, skipping entropy-coded data between them."""
    found, at = [], 2
    while at + 4 <= len(data) and len(found) < 200:
        marker = data[at + 1]
        if data[at] != 0xFF or marker in (0x00, 0xFF) or 0xD0 <= marker <= 0xD9:  # data, fill, RSTn, SOI, EOI
            at += 1
            continue
        length = int.from_bytes(data[at + 2 : at + 4], "big")
        found.append((at, marker, length))
        at += 2 + length
    return found


SOF_MARKERS = (0xC0, 0xC1, 0xC2)


def jpeg_fields(data: bytes) -> list[Field]:
    """Segment lengths and the first bytes of each segment (SOF precision, sizes and components, tables)."""
    fields = []
    for at, marker, length in jpeg_segments(data):
        fields.append(Field(at + 2, 2, True))
        fields += [Field(o, 1, True) for o in range(at + 4, min(at + 2 + length, at + 24, len(data)))]
        if marker in SOF_MARKERS:
            fields += [Field(at + 5, 2, True), Field(at + 7, 2, True)]
    return fields


def colour_table_size(flags: int) -> int:
    return 3 << ((flags & 7) + 1) if flags & 0x80 else 0


def gif_fields(data: bytes) -> list[Field]:
    """The screen descriptor, then each image descriptor and extension block header."""
    fields = [Field(6, 2, False), Field(8, 2, False), Field(10, 1, False), Field(11, 1, False)]
    at = 13 + colour_table_size(data[10] if len(data) > 10 else 0)
    while at < len(data) and len(fields) < 200:
        if data[at] == 0x2C:  # image descriptor: left, top, width, height, flags, then LZW code size
            fields += [Field(at + k, 2, False) for k in (1, 3, 5, 7)] + [Field(at + 9, 1, False)]
            flags = data[at + 9] if at + 9 < len(data) else 0
            at += 10 + colour_table_size(flags)
            fields.append(Field(at, 1, False))
            at += 1
        elif data[at] == 0x21:
            fields += [Field(at + 1, 1, False), Field(at + 2, 1, False)]
            at += 2
        else:
            break
        while at < len(data) and data[at]:  # data sub-blocks, each led by its length byte
            fields.append(Field(at, 1, False))
            at += 1 + data[at]
        at += 1
    return [f for f in fields if f.offset + f.size <= len(data)]


#: (offset, size) of BMP header fields: file size, data offset, header size, width, height, planes, bits
#: per pixel, compression, data size, colours used and important, then the bit-field masks.
BMP_FIELDS = ((2, 4), (10, 4), (14, 4), (18, 4), (22, 4), (26, 2), (28, 2), (30, 4), (34, 4), (46, 4),
              (50, 4), (54, 4), (58, 4), (62, 4))  # fmt: skip
BMP_CORE_FIELDS = ((2, 4), (10, 4), (14, 4), (18, 2), (20, 2), (22, 2), (24, 2))  # OS/2: 16-bit sizes


def bmp_fields(data: bytes) -> list[Field]:
    core = len(data) > 18 and int.from_bytes(data[14:18], "little") == 12
    return [Field(o, s, False) for o, s in (BMP_CORE_FIELDS if core else BMP_FIELDS) if o + s <= len(data)]


def tiff_fields(data: bytes) -> list[Field]:
    """The header, then each IFD entry's tag, type, count and value (up to five IFDs deep)."""
    big = data[:2] == b"MM"
    order = "big" if big else "little"
    fields = [Field(2, 2, big), Field(4, 4, big)]
    if data[2:4] in (b"\x00\x2b", b"\x2b\x00"):  # BigTIFF: leave its 8-byte layout to the byte families
        return fields
    ifd, seen = int.from_bytes(data[4:8], order), set()
    while 8 <= ifd < len(data) - 2 and ifd not in seen and len(seen) < 5:
        seen.add(ifd)
        count = int.from_bytes(data[ifd : ifd + 2], order)
        fields.append(Field(ifd, 2, big))
        for entry in range(ifd + 2, min(ifd + 2 + 12 * count, len(data) - 12), 12):
            fields += [Field(entry, 2, big), Field(entry + 2, 2, big), Field(entry + 4, 4, big)]
            fields += [Field(entry + 8, 4, big), Field(entry + 8, 2, big)]
        ifd = int.from_bytes(data[ifd + 2 + 12 * count : ifd + 6 + 12 * count], order)
    return fields


def riff_fields(data: bytes) -> list[Field]:
    """The RIFF size, each chunk's size, and the canvas, frame and bitstream headers inside."""
    fields, at = [Field(4, 4, False)], 12
    while at + 8 <= len(data) and len(fields) < 300:
        kind, size = data[at : at + 4], int.from_bytes(data[at + 4 : at + 8], "little")
        fields.append(Field(at + 4, 4, False))
        if kind == b"VP8X":
            fields += [Field(at + 8, 1, False), Field(at + 12, 3, False), Field(at + 15, 3, False)]
        elif kind == b"ANMF":
            fields += [Field(at + 8 + k, 3, False) for k in (0, 3, 6, 9, 12)] + [Field(at + 23, 1, False)]
            at += 24  # the frame's own chunks follow its header
            continue
        elif kind in (b"VP8 ", b"VP8L", b"ALPH", b"ANIM"):
            fields += [Field(at + 8 + k, 1, False) for k in range(10)]
            fields += [Field(at + 14, 2, False), Field(at + 16, 2, False)]  # VP8's width and height
        at += 8 + size + (size & 1)
    return [f for f in fields if f.offset + f.size <= len(data)]


FIELD_PARSERS: dict[str, Callable[[bytes], list[Field]]] = {
    "PNG": png_fields,
    "JPEG": jpeg_fields,
    "GIF": gif_fields,
    "BMP": bmp_fields,
    "TIFF": tiff_fields,
    "WEBP": riff_fields,
}


@cache
def fields_of(seed: Seed) -> list[Field]:
    return FIELD_PARSERS[seed.kind](seed.data)


def put(data: bytearray, where: Field, value: int, fix_crc: bool = True) -> None:
    """Write ``value`` (wrapped to the field's width) into the field, then its PNG CRC if asked."""
    width = where.size * 8
    data[where.offset : where.offset + where.size] = (value % 2**width).to_bytes(
        where.size, "big" if where.big_endian else "little"
    )
    if fix_crc and where.chunk is not None:
        fix_png_crc(data, where.chunk)


def fix_png_crc(data: bytearray, start: int) -> None:
    length = int.from_bytes(data[start : start + 4], "big")
    end = start + 8 + length
    if end + 4 <= len(data):
        data[end : end + 4] = struct.pack(">I", zlib.crc32(data[start + 4 : end]))


def declare_png_size(data: bytearray, width: int, height: int) -> None:
    put(data, Field(16, 4, True, 8), width)
    put(data, Field(20, 4, True, 8), height)


def declare_jpeg_size(data: bytearray, width: int, height: int) -> None:
    for at, marker, _ in jpeg_segments(bytes(data)):  # every frame's, for MPO
        if marker in SOF_MARKERS:
            put(data, Field(at + 7, 2, True), width)
            put(data, Field(at + 5, 2, True), height)


def declare_gif_size(data: bytearray, width: int, height: int) -> None:
    """The logical screen and the first frame's descriptor both."""
    first = 13 + colour_table_size(data[10])
    while data[first] == 0x21:  # skip extensions to the first image descriptor
        first += 2
        while data[first]:
            first += 1 + data[first]
        first += 1
    for at in (6, first + 5):
        put(data, Field(at, 2, False), width)
        put(data, Field(at + 2, 2, False), height)


def declare_bmp_size(data: bytearray, width: int, height: int) -> None:
    size = 2 if int.from_bytes(data[14:18], "little") == 12 else 4  # OS/2 core header or Windows
    put(data, Field(18, size, False), width)
    put(data, Field(18 + size, size, False), height)


def declare_webp_size(data: bytearray, width: int, height: int) -> None:
    """The VP8X canvas if there is one, else the VP8 or VP8L bitstream's own header (all as size - 1)."""
    vp8x = data.find(b"VP8X")
    if vp8x > 0:
        put(data, Field(vp8x + 12, 3, False), width - 1)
        put(data, Field(vp8x + 15, 3, False), height - 1)
    elif data[12:16] == b"VP8L":  # 14 bits each, after a signature byte
        packed = int.from_bytes(data[21:25], "little")
        packed = (packed & ~0xFFFFFFF) | ((width - 1) & 0x3FFF) | (((height - 1) & 0x3FFF) << 14)
        data[21:25] = packed.to_bytes(4, "little")
    else:  # VP8: 14 bits each beside a 2-bit scale, after the frame tag and start code
        put(data, Field(26, 2, False), width)
        put(data, Field(28, 2, False), height)


def declare_tiff_size(data: bytearray, width: int, height: int) -> None:
    """The first IFD's ImageWidth and ImageLength, made LONGs so that any size fits."""
    big = data[:2] == b"MM"
    order = "big" if big else "little"
    ifd = int.from_bytes(data[4:8], order)
    for entry in range(ifd + 2, ifd + 2 + 12 * int.from_bytes(data[ifd : ifd + 2], order), 12):
        tag = int.from_bytes(data[entry : entry + 2], order)
        if tag in (256, 257):
            put(data, Field(entry + 2, 2, big), 4)
            put(data, Field(entry + 4, 4, big), 1)
            put(data, Field(entry + 8, 4, big), width if tag == 256 else height)


SIZE_SETTERS: dict[str, Callable[[bytearray, int, int], None]] = {
    "PNG": declare_png_size,
    "JPEG": declare_jpeg_size,
    "GIF": declare_gif_size,
    "BMP": declare_bmp_size,
    "WEBP": declare_webp_size,
    "TIFF": declare_tiff_size,
}


# --- the mutation families -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One generated input: the family and seed it came from, and its bytes."""

    family: str
    seed: Seed
    data: bytes

    def __repr__(self) -> str:  # what hypothesis prints for a failing input (--save keeps the bytes)
        head = self.data[:48]
        return f"Case({self.family}, {self.seed.label}, {len(self.data)} bytes: {head!r}...)"


@cache
def seeds_of(kind: str | None = None, sizeable: bool = False) -> st.SearchStrategy[Seed]:
    """The pool, or its files of one kind; ``sizeable``: those SIZE_SETTERS can change (not BigTIFF)."""
    chosen = [s for s in pool() if kind in (None, s.kind) and not (sizeable and s.label == "tiff/bigtiff")]
    return st.sampled_from(chosen)


BYTES = st.sampled_from(INTERESTING_BYTES) | st.integers(0, 255)
INTS = st.sampled_from(INTERESTING_INTS) | st.integers(0, 2**32 - 1)
SIDES = st.sampled_from(INTERESTING_SIDES)


@st.composite
def intact(draw: st.DrawFn) -> Case:
    seed = draw(seeds_of())
    return Case("intact", seed, seed.data)


@st.composite
def bit_flips(draw: st.DrawFn) -> Case:
    seed = draw(seeds_of())
    data = bytearray(seed.data)
    for bit in draw(st.lists(st.integers(0, len(data) * 8 - 1), min_size=1, max_size=16)):
        data[bit // 8] ^= 1 << (bit % 8)
    return Case("bit_flips", seed, bytes(data))


@st.composite
def overwritten_bytes(draw: st.DrawFn) -> Case:
    seed = draw(seeds_of())
    data = bytearray(seed.data)
    for at, value in draw(st.lists(st.tuples(st.integers(0, len(data) - 1), BYTES), min_size=1, max_size=8)):
        data[at] = value
    return Case("overwritten_bytes", seed, bytes(data))


@st.composite
def truncated(draw: st.DrawFn) -> Case:
    seed = draw(seeds_of())
    return Case("truncated", seed, seed.data[: draw(st.integers(1, len(seed.data) - 1))])


@st.composite
def spliced(draw: st.DrawFn) -> Case:
    """A range deleted, repeated, or replaced by a range of another file or by random bytes."""
    seed = draw(seeds_of())
    data = seed.data
    start = draw(st.integers(0, len(data)))
    end = draw(st.integers(start, min(len(data), start + 4096)))
    how = draw(st.sampled_from(["delete", "repeat", "other", "random"]))
    if how == "delete":
        middle = b""
    elif how == "repeat":
        middle = data[start:end] * draw(st.integers(2, 50))
    elif how == "other":
        other = draw(seeds_of()).data
        at = draw(st.integers(0, len(other) - 1))
        middle = other[at : at + draw(st.integers(1, 4096))]
    else:
        middle = draw(st.binary(min_size=1, max_size=512))
    return Case(f"spliced_{how}", seed, data[:start] + middle + data[end:])


@st.composite
def header_fields(draw: st.DrawFn) -> Case:
    """Numbers in the headers found by parsing the file: lengths, sizes, depths, tag types and counts."""
    seed = draw(seeds_of())
    data = bytearray(seed.data)
    fix_crc = draw(st.booleans())
    fields = fields_of(seed)
    for where in draw(st.lists(st.sampled_from(fields), min_size=1, max_size=3)):
        value = draw(INTS)
        put(data, where, value, fix_crc)
    return Case("header_fields", seed, bytes(data))


@st.composite
def declared_sizes(draw: st.DrawFn) -> Case:
    """The declared width and height, zero to billions, while the pixel data stays as it was."""
    seed = draw(seeds_of(sizeable=True))
    data = bytearray(seed.data)
    SIZE_SETTERS[seed.kind](data, draw(SIDES), draw(SIDES))
    return Case("declared_sizes", seed, bytes(data))


#: Chunks to invent: every kind Pillow reads, and two it does not know (one marked critical).
PNG_KINDS = (b"IHDR", b"PLTE", b"tRNS", b"IDAT", b"IEND", b"iCCP", b"eXIf", b"acTL", b"fcTL", b"fdAT",
             b"zTXt", b"iTXt", b"sBIT", b"gAMA", b"pHYs", b"bKGD", b"abCd", b"ABCD")  # fmt: skip


@cache
def compressed_zeros(count: int) -> bytes:
    return zlib.compress(b"\x00" * count)


@st.composite
def png_chunk_edits(draw: st.DrawFn) -> Case:
    """Chunks dropped, repeated, swapped, given new contents (with a right or wrong CRC) or invented."""
    seed = draw(seeds_of("PNG"))
    chunks = [seed.data[s : s + 12 + n] for s, _, n in png_chunks(seed.data)]
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(chunks) - 1))
        how = draw(st.sampled_from(["drop", "repeat", "swap", "contents", "wrong_crc", "invent"]))
        if how == "drop" and len(chunks) > 1:
            del chunks[at]
        elif how == "repeat":
            chunks.insert(at, chunks[at] * draw(st.integers(1, 20)))
        elif how == "swap" and at + 1 < len(chunks):
            chunks[at], chunks[at + 1] = chunks[at + 1], chunks[at]
        elif how == "contents":
            chunks[at] = chunk(chunks[at][4:8], draw(st.binary(max_size=300)))
        elif how == "wrong_crc":
            chunks[at] = chunks[at][:-4] + draw(st.binary(min_size=4, max_size=4))
        else:
            kind = draw(st.sampled_from(PNG_KINDS))
            if draw(st.booleans()):
                body = draw(st.binary(max_size=300))
            else:  # compressed zeros: text, ICC and image chunks that inflate to up to 10 MB
                body = compressed_zeros(draw(st.sampled_from((0, 1, 10**3, 10**6, 10**7))))
            chunks.insert(at, chunk(kind, body))
    return Case("png_chunk_edits", seed, PNG_SIGNATURE + b"".join(chunks))


# EXIF field types 1..12 are defined; 0, 13 and 65535 are not.
EXIF_TYPES = (*range(0, 14), 0xFFFF)
EXIF_COUNTS = (0, 1, 2, 3, 4, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF)


@st.composite
def exif_blocks(draw: st.DrawFn) -> bytes:
    """An EXIF block whose orientation entry has any type, count and value, maybe beside IFD pointers
    that point anywhere (at themselves, out of the block), or random bytes altogether."""
    if draw(st.integers(0, 9)) == 0:
        return b"Exif\x00\x00" + draw(st.binary(max_size=200))
    order = draw(st.sampled_from(["<", ">"]))
    ints = st.sampled_from((0, 1, 3, 6, 8, 9, 26, 0xFFFF, 0xFFFFFFFF)) | st.integers(0, 2**32 - 1)
    entries = [(0x0112, draw(st.sampled_from(EXIF_TYPES)), draw(st.sampled_from(EXIF_COUNTS)), draw(ints))]
    for pointer in draw(st.lists(st.sampled_from((0x8769, 0x8825, 0xA005, 0x0112)), max_size=3)):
        entries.append((pointer, 4, 1, draw(st.sampled_from((8, 0, 0xFFFFFFFF)) | st.integers(0, 200))))
    count = len(entries) if draw(st.booleans()) else draw(st.integers(0, 0xFFFF))
    ifd = struct.pack(order + "H", count)
    ifd += b"".join(struct.pack(order + "HHII", tag, kind, n, value) for tag, kind, n, value in entries)
    ifd += struct.pack(order + "I", draw(st.sampled_from((0, 8, 0xFFFFFFFF))))
    header = (b"II*\x00" if order == "<" else b"MM\x00*") + struct.pack(order + "I", 8)
    return b"Exif\x00\x00" + header + ifd + draw(st.binary(max_size=64))


XMP_ORIENTATIONS = (b"0", b"1", b"6", b"9", b"x", b"-1", b"99999999999999999999", b"")


@st.composite
def exif_garbage(draw: st.DrawFn) -> Case:
    """A fresh JPEG, PNG or WebP carrying a hostile EXIF block, or XMP naming an odd orientation."""
    fmt = draw(st.sampled_from(["JPEG", "PNG", "WEBP"]))
    img = noise(draw(st.integers(1, 40)), draw(st.integers(1, 40)))
    if draw(st.booleans()):
        value = draw(st.sampled_from(XMP_ORIENTATIONS))
        xmp = b'<x:xmpmeta><rdf:Description tiff:Orientation="' + value + b'"/></x:xmpmeta>'
        if fmt == "PNG":
            info = PngImagePlugin.PngInfo()
            info.add_itxt("XML:com.adobe.xmp", xmp.decode())
            data = encoded(img, fmt, pnginfo=info)
        else:
            data = encoded(img, fmt, xmp=xmp)
        return Case("xmp_garbage", Seed(f"{fmt.lower()}/fresh", fmt, data), data)
    data = encoded(img, fmt, exif=draw(exif_blocks()))
    return Case("exif_garbage", Seed(f"{fmt.lower()}/fresh", fmt, data), data)


@st.composite
def icc_garbage(draw: st.DrawFn) -> Case:
    """A fresh file whose ICC profile is random, cut short, damaged, or very large."""
    fmt = draw(st.sampled_from(["JPEG", "PNG", "WEBP", "TIFF"]))
    profile = bytearray(srgb_profile())
    how = draw(st.sampled_from(["random", "cut", "flipped", "huge"]))
    if how == "random":
        profile = bytearray(draw(st.binary(min_size=1, max_size=2000)))
    elif how == "cut":
        profile = profile[: draw(st.integers(1, len(profile) - 1))]
    elif how == "flipped":
        for at in draw(st.lists(st.integers(0, len(profile) - 1), min_size=1, max_size=8)):
            profile[at] ^= 0xFF
    else:
        profile = profile * draw(st.integers(100, 400))  # over 64 KB: JPEG splits it over APP2 segments
    data = encoded(noise(16, 12), fmt, icc_profile=bytes(profile))
    return Case(f"icc_{how}", Seed(f"{fmt.lower()}/fresh", fmt, data), data)


@st.composite
def magic_then_random(draw: st.DrawFn) -> Case:
    """A real file's first bytes (its magic, maybe part of its header), then random bytes."""
    seed = draw(seeds_of())
    keep = draw(st.integers(2, min(64, len(seed.data))))
    return Case("magic_then_random", seed, seed.data[:keep] + draw(st.binary(max_size=2048)))


#: Each family with how often it is drawn (out of the sum). Hypothesis leans to the first (its
#: simplest), so a hostile family leads and the unmutated files come last.
FAMILIES: tuple[tuple[int, Callable[[], st.SearchStrategy[Case]]], ...] = (
    (3, header_fields),
    (3, bit_flips),
    (2, overwritten_bytes),
    (2, truncated),
    (2, spliced),
    (2, declared_sizes),
    (2, png_chunk_edits),
    (1, exif_garbage),
    (1, icc_garbage),
    (2, magic_then_random),
    (1, intact),
)


def cases() -> st.SearchStrategy[Case]:
    weighted = [family() for weight, family in FAMILIES for _ in range(weight)]
    return st.one_of(weighted)


# --- the property ------------------------------------------------------------------------------------------

#: Inputs per hypothesis example: one upload of several files, as the Classify tab and the command
#: line get them (drawing a batch also costs hypothesis a third of what drawing each file alone does).
BATCH = 5
GOOD = {"good-before.png": encoded(noise(40, 30), "PNG"), "good-after.jpg": encoded(noise(50, 50), "JPEG")}


@dataclass
class Campaign:
    """Runs the property on each batch of cases and keeps the figures.

    Each case is decoded twice: alone (``load_image`` on its bytes, or on a file object), timed, and
    in a batch with good files either side (``load_images`` on names and bytes like the Classify
    tab, or on paths like ``jupyter cifar classify``), where it must come out the same.
    With ``keep_going`` a broken property (or an input slower than HANG_BOUND_S) is recorded and the
    campaign goes on; otherwise it is raised, and hypothesis shrinks and prints the batch.
    """

    workdir: Path
    keep_going: bool = False
    save: Path | None = None
    counts: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    by_family: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    violations: list[str] = field(default_factory=list)
    slowest: list[tuple[float, str, bytes]] = field(default_factory=list)
    memory_jumps: list[str] = field(default_factory=list)
    peak_mib: float = 0.0
    good: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, data in GOOD.items():
            (self.workdir / name).write_bytes(data)
            self.good.update({(name, fit): load_image(data, fit=fit) for fit in FITS})

    def run(self, cases: list[Case], alone: str, batch: str, fit: str) -> None:
        """Decode ``cases`` alone and in a batch; record what came out, or what broke the property."""
        names = [f"upload-{i}.{EXTENSIONS[case.seed.kind]}" for i, case in enumerate(cases)]
        singles = [self.alone(case, name, alone, fit) for case, name in zip(cases, names, strict=True)]
        labels = ", ".join(f"{case.family} on {case.seed.label}" for case in cases)
        about = f"a batch via {batch}, fit={fit} ({labels})"
        try:
            self.batch(cases, names, singles, batch, fit)
        except Exception as broken:
            self.broken(about, broken, *(c.data for c in cases))
        self.note_memory(about, *(c.data for c in cases))
        self.counts.update([f"entry {alone}", f"entry {batch}"])

    def alone(self, case: Case, name: str, entry: str, fit: str) -> np.ndarray | ImageError | None:
        self.counts.update([f"family {case.family}", f"format {case.seed.kind}", "inputs"])
        about = f"{case.family} on {case.seed.label} via {entry}, fit={fit} ({len(case.data)} bytes)"
        source = case.data if entry == "bytes" else io.BytesIO(case.data)
        given = name if entry == "bytes" else None  # a file object is described, not named
        name = describe(source, given)
        started = time.perf_counter()
        result: np.ndarray | ImageError | None
        try:
            try:
                result = load_image(source, name=given, fit=fit)
            except ImageError as error:
                result = error
            outcome = self.check(result, name, case)
        except Exception as broken:
            self.broken(about, broken, case.data)
            result, outcome = None, "VIOLATION"
        took = time.perf_counter() - started
        self.note_memory(about, case.data)
        if len(self.slowest) < 5 or took > self.slowest[-1][0]:
            self.slowest = sorted([*self.slowest, (took, about, case.data)], reverse=True)[:5]
        if took > HANG_BOUND_S and self.keep_going:
            self.broken(about, AssertionError(f"took {took:.1f} s"), case.data)
        self.outcomes[outcome] += 1
        self.by_family[case.family][outcome] += 1
        return result

    def batch(self, cases: list[Case], names: list[str], singles: list[Any], entry: str, fit: str) -> None:
        """All the cases in one load_images call, good files either side: each as it was alone."""
        before, after = GOOD
        if entry == "upload":  # the Classify tab: names and bytes
            names = [before, *names, after]
            results = load_images([GOOD[before], *(c.data for c in cases), GOOD[after]], names=names, fit=fit)
        else:  # jupyter cifar classify: paths
            paths = [self.workdir / before, *(self.workdir / name for name in names), self.workdir / after]
            for path, case in zip(paths[1:-1], cases, strict=True):
                path.write_bytes(case.data)
            names = [str(path) for path in paths]
            results = load_images(paths, fit=fit)
        assert len(results) == len(cases) + 2
        for got, good in ((results[0], before), (results[-1], after)):
            assert isinstance(got, np.ndarray), f"a good file beside bad ones failed: {got}"
            assert np.array_equal(got, self.good[good, fit]), f"{good} changed beside bad files"
        for got, name, case, single in zip(results[1:-1], names[1:-1], cases, singles, strict=True):
            self.check(got, name, case)
            if isinstance(single, np.ndarray):
                assert isinstance(got, np.ndarray) and np.array_equal(got, single), (
                    f"{name} differs in a batch"
                )
            elif isinstance(single, ImageError):
                assert isinstance(got, ImageError) and got.problem == single.problem, f"{name}: {got}"

    @staticmethod
    def check(result: object, name: str, case: Case) -> str:
        """The property for one result; returns the outcome for the figures."""
        if isinstance(result, np.ndarray):
            assert result.shape == (32, 32, 3) and result.dtype == np.uint8, (result.shape, result.dtype)
            return "decoded"
        assert isinstance(result, ImageError), f"{type(result).__name__} instead of an array or ImageError"
        assert case.family != "intact", f"a valid file was refused: {result}"
        problem = result.problem
        assert result.name == name, f"error names {result.name!r}, not {name!r}"
        assert str(result) == f"{name}: {problem}", str(result)
        assert problem and "\n" not in problem, f"not one line: {problem!r}"
        assert len(problem) <= MAX_PROBLEM_CHARS, f"{len(problem)} characters: {problem[:400]!r}"
        return "refused: " + problem.split(":")[0].split(",")[0].split(" (")[0]

    def note_memory(self, about: str, *inputs: bytes) -> None:
        """Where the peak memory grew by more than 32 MiB, and by how much."""
        peak = peak_rss_mib()
        if peak > self.peak_mib + 32:
            self.memory_jumps.append(f"+{peak - self.peak_mib:.0f} MiB to {peak:.0f} MiB: {about}")
            for i, data in enumerate(inputs):
                self.keep(f"memory-jump-{len(self.memory_jumps)}-{i}", data)
        self.peak_mib = peak

    def broken(self, about: str, error: Exception, *inputs: bytes) -> None:
        if not self.keep_going:
            raise error
        self.violations.append(f"{about}: {type(error).__name__}: {error}")
        for i, data in enumerate(inputs):
            self.keep(f"violation-{len(self.violations)}-{i}", data)

    def keep(self, name: str, data: bytes) -> None:
        """Save an input worth a look (``--save DIR``)."""
        if self.save is not None:
            self.save.mkdir(parents=True, exist_ok=True)
            (self.save / name).write_bytes(data)


def peak_rss_mib() -> float:
    """This process' peak resident memory so far: VmHWM, which belongs to this process' own memory map.

    Not ``ru_maxrss``: Linux carries the peak of the process that started us over ``exec`` (subprocess
    starts children with vfork, so a pytest process holding TensorFlow made every child look 1 GB larger).
    """
    status = Path("/proc/self/status").read_text()
    peak = re.search(r"^VmHWM:\s+(\d+) kB$", status, re.MULTILINE)
    assert peak, "no VmHWM in /proc/self/status"
    return int(peak[1]) / 2**10


def rss_mib() -> float:
    """This process' resident memory now: what growth is measured from (the peak may be higher)."""
    return psutil.Process().memory_info().rss / 2**20


def run_campaign(
    examples: int, seed: int | None = None, keep_going: bool = False, save: Path | None = None
) -> dict[str, Any]:
    """The whole campaign in this process: at least ``examples`` inputs; returns its figures."""
    warnings.simplefilter("ignore")  # Pillow warns about odd files; we judge what load_image does
    started = time.perf_counter()
    pool()
    with tempfile.TemporaryDirectory(prefix="jc-fuzz-") as workdir:
        campaign = Campaign(Path(workdir), keep_going, save)
        baseline = rss_mib()
        campaign.peak_mib = peak_rss_mib()

        @settings(
            max_examples=-(-examples // BATCH),
            derandomize=seed is None,
            database=None,
            # The hang bound, per example (a batch of BATCH inputs, each decoded twice).
            deadline=None if keep_going else timedelta(seconds=HANG_BOUND_S),
            phases=[Phase.explicit, Phase.generate, Phase.shrink],
            # Making and mutating files is cheap but not instant, and some inputs are large by design.
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
            print_blob=True,
        )
        @given(
            cases=st.lists(cases(), min_size=BATCH, max_size=BATCH),
            alone=st.sampled_from(["bytes", "file_object"]),
            batch=st.sampled_from(["upload", "cli_path"]),
            fit=st.sampled_from(FITS),
        )
        def fuzz(cases: list[Case], alone: str, batch: str, fit: str) -> None:
            campaign.run(cases, alone, batch, fit)

        (fuzz if seed is None else hypothesis_seed(seed)(fuzz))()
        for rank, (_, _, data) in enumerate(campaign.slowest):
            campaign.keep(f"slowest-{rank + 1}", data)
    counts = campaign.counts
    return {
        "inputs": counts["inputs"],
        "asked": examples,
        "seed": "derandomized" if seed is None else seed,
        "by_format": {k.split()[1]: v for k, v in sorted(counts.items()) if k.startswith("format ")},
        "by_entry": {k.split()[1]: v for k, v in sorted(counts.items()) if k.startswith("entry ")},
        "outcomes": dict(campaign.outcomes.most_common()),
        "by_family": {family: dict(outcomes) for family, outcomes in sorted(campaign.by_family.items())},
        "violations": campaign.violations,
        "slowest_inputs": [f"{took:.4f} s: {about}" for took, about, _ in campaign.slowest],
        "peak_rss_growth_mib": round(peak_rss_mib() - baseline, 1),
        "memory_jumps": campaign.memory_jumps,
        "baseline_rss_mib": round(baseline, 1),
        "wall_s": round(time.perf_counter() - started, 1),
        "pool": len(pool()),
    }


# --- the costliest images accepted ----------------------------------------------------------------------

#: Just under MAX_PIXELS (63,992,000 pixels).
AT_THE_LIMIT = (8000, 7999)


def zero_rle_rows(height: int) -> bytes:
    """One pixel, then a line end, on every row: Pillow pads each line in Python, a byte at a time."""
    return bytes([1, 5, 0, 0]) * height + b"\x00\x01"


#: For each decoding path, its most expensive valid image: the largest accepted, in the mode that
#: needs the most memory on that path. Each is a few hundred kilobytes of zeros.
LIMIT_CASES: dict[str, Callable[[], bytes]] = {
    "rgba.png (alpha premultiplied)": lambda: encoded(
        Image.new("RGBA", AT_THE_LIMIT), "PNG", compress_level=1
    ),
    "palette-transparent.png": lambda: encoded(Image.new("P", AT_THE_LIMIT), "PNG", transparency=0),
    "grey-16-bit.png": lambda: encoded(Image.new("I;16", AT_THE_LIMIT), "PNG", compress_level=1),
    "float.tif": lambda: encoded(Image.new("F", AT_THE_LIMIT), "TIFF", compression="packbits"),
    "palette-alpha.tif": lambda: encoded(Image.new("PA", AT_THE_LIMIT), "TIFF", compression="packbits"),
    "cmyk.tif": lambda: encoded(Image.new("CMYK", AT_THE_LIMIT), "TIFF", compression="packbits"),
    "tallest-rgba.png": lambda: encoded(Image.new("RGBA", (976, 65535)), "PNG", compress_level=1),
    "webp at its limit": lambda: encoded(Image.new("RGBA", (4000, 4000)), "WEBP", lossless=True),
    "rle.bmp at its limit": lambda: bmp_by_hand(2000, 2000, 8, 1, zero_rle_rows(2000)),
    "progressive-cmyk.jpg (every coefficient kept)": lambda: encoded(
        Image.new("CMYK", AT_THE_LIMIT), "JPEG", progressive=True, quality=50
    ),
}


def make_limit_cases(folder: Path) -> None:
    """Write LIMIT_CASES into ``folder`` (in a child: building them takes memory too)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, make in enumerate(LIMIT_CASES.values()):
        (folder / f"case-{i}").write_bytes(make())


def decode_and_measure(path: Path) -> dict[str, Any]:
    """Decode one file; how long it took and how much the peak resident memory grew."""
    baseline = rss_mib()
    started = time.perf_counter()
    try:
        load_image(path)
        outcome = "decoded"
    except ImageError as error:
        outcome = f"refused: {error.problem}"
    seconds = time.perf_counter() - started
    return {
        "outcome": outcome,
        "seconds": round(seconds, 3),
        "peak_rss_growth_mib": round(peak_rss_mib() - baseline, 1),
    }


def main(argv: list[str] | None = None) -> None:
    """``python tests/test_images_fuzz.py``: run a campaign and print its figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=EXAMPLES)
    parser.add_argument("--seed", type=int, default=None, help="other inputs than CI's derandomized ones")
    parser.add_argument("--keep-going", action="store_true", help="record broken properties, do not stop")
    parser.add_argument("--save", metavar="DIR", type=Path, help="save the slowest and any violating inputs")
    parser.add_argument(
        "--decode", metavar="FILE", type=Path, help="decode one file: its time and peak memory"
    )
    parser.add_argument("--make-limit-cases", metavar="DIR", type=Path, help="write the LIMIT_CASES files")
    args = parser.parse_args(argv)
    if args.make_limit_cases:
        make_limit_cases(args.make_limit_cases)
        report: dict[str, Any] = {"written": len(LIMIT_CASES)}
    elif args.decode:
        report = decode_and_measure(args.decode)
    else:
        report = run_campaign(args.examples, args.seed, args.keep_going, args.save)
    print(json.dumps(report, indent=1))


# --- the tests CI runs -----------------------------------------------------------------------------------


def run_child(*args: str, timeout: float) -> dict[str, Any]:
    """Run main() in a fresh interpreter: a crash there is an exit status here, not a dead test run."""
    env = {**os.environ, "PYTHONFAULTHANDLER": "1"}
    try:
        done = subprocess.run(
            [sys.executable, str(HERE), *args], capture_output=True, text=True, timeout=timeout, env=env
        )
    except subprocess.TimeoutExpired as hung:
        raise AssertionError(f"no result after {timeout:.0f} s: {(hung.stderr or '')[-3000:]}") from None
    assert done.returncode == 0, f"exit status {done.returncode}:\n{done.stderr[-6000:]}"
    return json.loads(done.stdout)


def test_the_pool_covers_every_format_and_decodes() -> None:
    seeds = pool()
    assert {s.kind for s in seeds} == set(SEED_MAKERS)
    for s in seeds:
        assert load_image(s.data, name=s.label).shape == (32, 32, 3), s.label
    opened = {s.label: Image.open(io.BytesIO(s.data)) for s in seeds}
    modes = {im.mode for im in opened.values()}
    assert {"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "CMYK", "I;16", "I", "F", "YCbCr", "LAB"} <= modes
    assert max(getattr(im, "n_frames", 1) for im in opened.values()) >= 200
    assert all(fields_of(s) for s in seeds), [s.label for s in seeds if not fields_of(s)]


def test_fuzz_campaign() -> None:
    """EXAMPLES hostile inputs: no crash, no hang, bounded memory, each failure named (see module doc)."""
    report = run_child("--examples", str(EXAMPLES), timeout=CAMPAIGN_TIMEOUT_S)
    print(json.dumps(report, indent=1))
    assert report["violations"] == []
    assert report["inputs"] >= EXAMPLES, f"only {report['inputs']} of {EXAMPLES} inputs were tried"
    assert len(report["by_family"]) >= len(FAMILIES), report["by_family"]
    assert report["peak_rss_growth_mib"] <= MEMORY_BOUND_MIB, report


def test_memory_at_the_pixel_limit(tmp_path: Path) -> None:
    """The costliest valid image of each decoding path, each decoded in a fresh process: within the bound."""
    run_child("--make-limit-cases", str(tmp_path), timeout=300)
    figures = {}
    for i, name in enumerate(LIMIT_CASES):
        figures[name] = run_child("--decode", str(tmp_path / f"case-{i}"), timeout=120)
    print(json.dumps(figures, indent=1))
    for name, got in figures.items():
        assert got["outcome"] == "decoded", (name, got)
        assert got["peak_rss_growth_mib"] <= MEMORY_BOUND_MIB, (name, got)


if __name__ == "__main__":
    main()
