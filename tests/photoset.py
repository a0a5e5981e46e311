"""A domain-shifted photo set made from CIFAR-10 images: what a user's own photos look like to the model.

A photo is not a CIFAR image. Here each one is a CIFAR image placed small and off-centre on a larger
canvas (64 to 160 pixels a side) over a blurred background taken from another image, with a colour cast,
noise and JPEG compression. Each photo keeps its label and the object's box, so that accuracy on photos
and where Grad-CAM looks can both be measured. Deterministic for a seed; used by the tests and benchmarks.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter


@dataclass(frozen=True)
class Photo:
    data: bytes  # a JPEG file
    label: int
    box: tuple[int, int, int, int]  # the object's (left, top, right, bottom) in the photo's pixels
    size: tuple[int, int]  # (width, height)
    source: int  # the index of the CIFAR image it was made from


def make_photo(
    obj: np.ndarray, background: np.ndarray, label: int, rng: np.random.Generator, source: int = -1
) -> Photo:
    """One photo: ``obj`` (a 32x32x3 uint8 image) at a third to a half of the frame's side, off-centre,
    on ``background`` blurred and scaled to the canvas."""
    side = int(rng.integers(64, 161))
    width, height = side, int(side * rng.uniform(0.75, 1.0))
    canvas = Image.fromarray(background).resize((width, height), Image.Resampling.BICUBIC)
    canvas = canvas.filter(ImageFilter.GaussianBlur(radius=side / 24))
    scale = rng.uniform(0.33, 0.5)
    obj_side = max(16, int(min(width, height) * scale))
    thing = Image.fromarray(obj).resize((obj_side, obj_side), Image.Resampling.BICUBIC)
    left = int(rng.integers(0, width - obj_side + 1))
    top = int(rng.integers(0, height - obj_side + 1))
    canvas.paste(thing, (left, top))
    pixels = np.asarray(canvas, np.float32)
    cast = rng.uniform(0.8, 1.2, size=3)  # a white balance that is off
    pixels = pixels * cast + rng.uniform(-20, 20)
    pixels += rng.normal(0, rng.uniform(2, 10), size=pixels.shape)  # sensor noise
    out = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    out.save(buffer, "JPEG", quality=int(rng.integers(60, 91)))
    return Photo(
        buffer.getvalue(), int(label), (left, top, left + obj_side, top + obj_side), (width, height), source
    )


def make_photo_set(x: np.ndarray, y: np.ndarray, n: int = 1000, seed: int = 0) -> list[Photo]:
    """``n`` photos from the images ``x`` (N, 32, 32, 3) with labels ``y``, the same number of each class
    (as near as ``n`` allows), in a shuffled order; each background is another image of the set."""
    rng = np.random.default_rng(seed)
    y = np.asarray(y).reshape(-1)
    classes = np.unique(y)
    share = [n // len(classes) + (k < n % len(classes)) for k in range(len(classes))]
    picked = rng.permutation(
        np.concatenate(
            [
                rng.choice(np.flatnonzero(y == c), size=m, replace=False)
                for c, m in zip(classes, share, strict=True)
            ]
        )
    )
    photos = []
    for i in picked:
        other = int(rng.integers(len(x)))
        photos.append(make_photo(x[i], x[other], int(y[i]), rng, source=int(i)))
    return photos


def write_folders(photos: list[Photo], root: Path, class_names: tuple[str, ...] | list[str]) -> Path:
    """The photos as an image folder (``root/<class>/NNNN.jpg``), the layout ``--photos DIR`` reads."""
    for k, photo in enumerate(photos):
        folder = root / class_names[photo.label]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{k:04d}.jpg").write_bytes(photo.data)
    return root
