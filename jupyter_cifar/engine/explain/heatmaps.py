"""Heatmaps for pictures: :func:`explain`, :func:`overlay` and :func:`write_overlays` (see
:mod:`jupyter_cifar.engine.explain` for how a map is made and why).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ...errors import BadParameter, ImageError
from ..images import FITS, ImageSource, describe, load_image
from .explainer import METHODS, explainer_for

if TYPE_CHECKING:
    import keras

_BATCH = 32


def explain(
    model: keras.Model,
    sources: Iterable[ImageSource],
    *,
    layer: str | Sequence[str] | None = None,
    class_index: int | Sequence[int] | None = None,
    method: str = "layercam",
    names: Sequence[str | None] | None = None,
    fit: str = "squish",
) -> list[np.ndarray | ImageError]:
    """One heatmap per source: float32, shape (height, width) of the source itself, values 0..1.

    ``sources`` are anything :func:`jupyter_cifar.engine.images.load_images` reads (bytes, paths, file
    objects, PIL images, arrays). A source that cannot be decoded gets its :class:`ImageError` in its slot
    instead of a map, as :func:`jupyter_cifar.engine.predict.classify` does, and the others are still
    explained.

    The map shows where the evidence for the model's top-1 class lies, or for ``class_index`` when given
    (one class for all, or one per source: the label ``classify`` answered, say).
    1 is the strongest evidence in the picture and 0 none (a map that is 0 everywhere: nothing in the
    picture speaks for the class). ``layer``: a layer name (``"outer/inner"`` for one inside a nested
    model) or several, whose maps are averaged; ``None`` chooses by :data:`AUTO_RULE`. ``method``: one
    of :data:`METHODS`. ``fit``: how the picture is made the model's input size ("squish": all of it;
    "crop" and "pad" as :func:`~jupyter_cifar.engine.images.load_image` does them, which ``classify`` uses);
    pixels the model did not see are 0 in the map.

    Raises :class:`BadParameter` for a layer that does not exist or is not a 2D feature map, a model
    without one, a class index out of range, or a model this cannot take apart (the message says why).
    """
    results = _explain(
        model,
        sources,
        layer=layer,
        class_index=class_index,
        method=method,
        names=names,
        fit=fit,
        pixels=False,
    )
    return [item if isinstance(item, ImageError) else item[0] for item in results]


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """``image`` (H, W, 3) uint8 with ``heatmap`` (H, W, values 0..1) coloured over it, as uint8.

    The colours run from dark blue (no evidence) through cyan, green and yellow to red (the strongest), a
    'jet'-like scale. A pixel takes ``alpha`` times (a quarter plus three quarters of its heat) of its
    colour: where there is no evidence the picture shows through almost as it is, yet faintly blue, so
    that the scale still reads.
    """
    image = np.asarray(image)
    heat = np.asarray(heatmap, dtype=np.float32)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise BadParameter("image", f"must be an (H, W, 3) uint8 array (got {image.dtype} {image.shape})")
    if heat.shape != image.shape[:2]:
        raise BadParameter("heatmap", f"must have the image's shape {image.shape[:2]} (got {heat.shape})")
    if not 0 <= alpha <= 1:
        raise BadParameter("alpha", f"must be between 0 and 1 (got {alpha})")
    heat = np.clip(np.nan_to_num(heat), 0.0, 1.0)
    colours = _colormap(heat)
    weight = (alpha * (0.25 + 0.75 * heat))[..., None]  # a little colour everywhere: the scale reads
    blended = image.astype(np.float32) * (1 - weight) + colours * weight
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def write_overlays(
    model: keras.Model,
    files: Iterable[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    layer: str | Sequence[str] | None = None,
    class_index: int | Sequence[int] | None = None,
    method: str = "layercam",
    fit: str = "squish",
    alpha: float = 0.45,
) -> list[tuple[str, Path | ImageError]]:
    """Explain each file and write its overlay as ``out_dir/<stem>.gradcam.png``, at the file's size.

    Returns (the file as given, the PNG written or the file's :class:`ImageError`) per file, in order.
    Two files with the same stem get ``<stem>.gradcam.png`` and ``<stem>-2.gradcam.png``; a PNG already
    in ``out_dir`` is never overwritten (the next free number is taken). The folder is created.
    """
    from PIL import Image

    paths: list[str] = [os.fspath(f) for f in files]
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise BadParameter(
            "--explain", f"cannot create the folder {out}: {error.strerror or error}"
        ) from None
    results = _explain(
        model, paths, layer=layer, class_index=class_index, method=method, names=None, fit=fit, pixels=True
    )
    written: list[tuple[str, Path | ImageError]] = []
    taken: set[str] = set()
    for file, item in zip(paths, results, strict=True):
        if isinstance(item, ImageError):
            written.append((file, item))
            continue
        heatmap, pixels = item
        assert pixels is not None
        target = _free_name(out, Path(file).stem or "image", taken)
        Image.fromarray(overlay(pixels, heatmap, alpha)).save(target, "PNG")
        written.append((file, target))
    return written


def _free_name(folder: Path, stem: str, taken: set[str]) -> Path:
    """``folder/<stem>.gradcam.png``, or with -2, -3, ... until neither this run nor the folder has it."""
    n = 1
    while True:
        name = f"{stem}.gradcam.png" if n == 1 else f"{stem}-{n}.gradcam.png"
        if name not in taken and not (folder / name).exists():
            taken.add(name)
            return folder / name
        n += 1


# A perceptual 'jet'-like scale: dark blue, blue, cyan, green, yellow, red, dark red (RGB 0..255),
# interpolated linearly between these stops.
_STOPS = np.array([0.0, 0.125, 0.375, 0.5, 0.625, 0.875, 1.0])
_STOP_COLOURS = np.array(
    [[0, 0, 128], [0, 0, 255], [0, 255, 255], [0, 255, 0], [255, 255, 0], [255, 0, 0], [128, 0, 0]],
    dtype=np.float32,
)


def _colormap(heat: np.ndarray) -> np.ndarray:
    """(H, W) values 0..1 -> (H, W, 3) float32 colours 0..255 on the jet-like scale above."""
    return np.stack([np.interp(heat, _STOPS, _STOP_COLOURS[:, c]) for c in range(3)], axis=-1).astype(
        np.float32
    )


def _classes_wanted(class_index: int | Sequence[int] | None, n: int, classes: int) -> np.ndarray | None:
    """The class to explain for each of ``n`` pictures (None: each one's top-1), checked."""
    if class_index is None:
        return None
    single = isinstance(class_index, int | np.integer)
    wanted = np.full(n, class_index) if single else np.asarray(class_index)
    if (
        wanted.shape != (n,)
        or not np.issubdtype(wanted.dtype, np.integer)
        or not ((wanted >= 0) & (wanted < classes)).all()
    ):
        raise BadParameter(
            "class_index",
            f"must be a class number 0..{classes - 1}, or one per picture (got {str(class_index)[:60]})",
        )
    return wanted.astype(np.int32)


def _explain(
    model: keras.Model,
    sources: Iterable[ImageSource],
    *,
    layer: str | Sequence[str] | None,
    class_index: int | Sequence[int] | None,
    method: str,
    names: Sequence[str | None] | None,
    fit: str,
    pixels: bool,
) -> list[tuple[np.ndarray, np.ndarray | None] | ImageError]:
    """explain(), also giving each picture's own pixels when ``pixels`` (for the overlays)."""
    if method not in METHODS:
        raise BadParameter("method", f"must be one of {', '.join(METHODS)} (got {method!r})")
    if fit not in FITS:
        raise BadParameter("fit", f"must be one of {', '.join(FITS)} (got {fit!r})")
    items = list(sources)
    labels: list[str | None] = [None] * len(items) if names is None else list(names)
    if len(labels) != len(items):
        raise BadParameter("names", f"has {len(labels)} names for {len(items)} images")
    explainer = explainer_for(model, layer)
    wanted = _classes_wanted(class_index, len(items), explainer.classes)
    size = explainer.input_size
    decoded: list[Decoded | ImageError] = [
        _decode(item, describe(item, label), size, fit, pixels)
        for item, label in zip(items, labels, strict=True)
    ]
    good = [d for d in decoded if not isinstance(d, ImageError)]
    good_classes = None if wanted is None else wanted[[not isinstance(d, ImageError) for d in decoded]]
    maps: list[np.ndarray] = []
    for start in range(0, len(good), _BATCH):
        batch = good[start : start + _BATCH]
        classes = None if good_classes is None else good_classes[start : start + _BATCH]
        maps += explainer.maps(np.stack([d.x for d in batch]), batch, classes, method, fit)
    results: list[tuple[np.ndarray, np.ndarray | None] | ImageError] = []
    done = iter(zip(good, maps, strict=True))
    for d in decoded:
        if isinstance(d, ImageError):
            results.append(d)
        else:
            picture, heatmap = next(done)
            results.append((heatmap, picture.pixels))
    return results


@dataclass
class Decoded:
    x: np.ndarray  # (h, w, 3) uint8 at the model's input size
    width: int  # the picture's own size, upright (EXIF orientation applied), as load_image sees it
    height: int
    pixels: np.ndarray | None  # (height, width, 3) uint8, when asked for


def _decode(
    source: ImageSource, label: str, size: tuple[int, int], fit: str, pixels: bool
) -> Decoded | ImageError:
    """The model's input and the picture's own size (and pixels), or the source's ImageError."""
    from PIL import Image

    try:
        if hasattr(source, "read") and not isinstance(source, Image.Image):
            try:
                data = source.read()  # read once: the stream is used twice
            except OSError as error:
                raise ImageError(label, f"cannot read: {error.strerror or error}") from None
            if not isinstance(data, bytes | bytearray | memoryview):
                raise ImageError(label, f"reading it gave {type(data).__name__}, not bytes")
            source = bytes(data)
        x = load_image(source, name=label, size=(size[1], size[0]), fit=fit)
        width, height = _own_size(source, label)
        own = load_image(source, name=label, size=(width, height), fit="squish") if pixels else None
    except ImageError as error:
        return error
    return Decoded(x, width, height, own)


def _own_size(source: ImageSource, label: str) -> tuple[int, int]:
    """(width, height) of a source that load_image has just decoded, upright as load_image turns it
    (EXIF orientation): from an array's shape, or an image's header (nothing more is decoded)."""
    import io

    from PIL import Image

    from ..images import _OPEN_FORMATS, _orientation

    if isinstance(source, np.ndarray):
        return int(source.shape[1]), int(source.shape[0])
    try:
        if isinstance(source, Image.Image):
            width, height, turned = *source.size, _orientation(source) in (5, 6, 7, 8)
        else:
            opened = io.BytesIO(source) if isinstance(source, bytes | bytearray | memoryview) else source
            with Image.open(opened, formats=_OPEN_FORMATS) as img:
                width, height, turned = *img.size, _orientation(img) in (5, 6, 7, 8)
    except Exception as error:  # decoded a moment ago: a file changed or removed since
        raise ImageError(label, f"cannot be read again: {error}") from None
    return (int(height), int(width)) if turned else (int(width), int(height))
