"""Why the model gave a picture its label: Grad-CAM heatmaps, drawn over the picture.

:func:`explain` returns, for each picture, a map of where the evidence for the predicted class (or a
class asked for) lies, at the picture's own pixel size; :func:`overlay` colours it over the picture and
:func:`write_overlays` writes one PNG per file (``jupyter cifar classify REF FILES --explain DIR``).

How a map is made (Grad-CAM, Selvaraju et al. 2017): the gradient of the class's score (its logit) with
respect to a convolutional feature map says how much each channel counts for that class; the channels,
weighted so, are summed and the negative part dropped. Four choices matter on 32x32 inputs, where the
last feature maps are tiny (3x3 in the presets, 1x1 in ``keras.applications`` models). Each was measured
on photos made from CIFAR-10 test images with the object at a third to a half of the frame
(``tests/photoset.py``; the figures are in ``tests/test_explain.py``): how often the map's peak falls in
the object's box, where chance (the box's share of the frame) is 0.15.

- Which maps (:data:`AUTO_RULE`). The deeper the map, the less of the object's position it keeps: plain
  Grad-CAM on the deepest map of 4x4 or more (the ``fast`` preset's 7x7) peaks in the box 0.2-0.3 of the
  time, on the first conv's 31x31 map 0.8. The automatic choice takes one map per resolution, the first
  at each (where a pooling or strided convolution lands), and averages their maps: each brings its own
  scale, and no layer has to be known by name. ``layer=`` names one or more layers instead.
- How channels are weighted (:data:`METHODS`). LayerCAM (Jiang et al. 2021), the default, weights each
  position by its own positive gradient instead of the map's mean: on the automatic maps 0.70-0.80,
  plain Grad-CAM 0.57-0.70. Grad-CAM++ peaked in the box as often on some layer sets but drew the same
  map whatever class was asked for (correlation 0.95 between the maps of the first and second class),
  which does not say why *this* label.
- Where each cell of a map lies on the picture. A cell's centre is not where resizing the map to the
  input would put it: valid convolutions and floor-rounding poolings shift and shrink the grid (the
  ``fast`` preset's 7x7 map has its centres at 2.5, 6.5, ..., 26.5 of 32, not 2.3 ... 29.7). The grid is
  worked out from the layers' kernel sizes, strides and paddings (:func:`_grids`), and each picture
  pixel is interpolated (bilinear) between the cells around it: 0.05-0.2 more peaks in the box than
  resizing the map.
- The picture's own size. The model sees the whole picture resized to its input (``fit="squish"``, so no
  part of the picture goes unseen); the map is computed back onto every pixel of the original.

Models with test-time augmentation built in (:func:`jupyter_cifar.nets.with_tta`) are explained view by
view: each view (the picture, its mirror image, shifted copies) gets its own map, which is mapped back
through its view (the flip undone) and averaged with the weights the model gives the views' logits.
Mixed-precision models are explained through a float32 copy. Only the TensorFlow backend is supported.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import BadParameter, ImageError
from .images import FITS, ImageSource, describe, load_image

if TYPE_CHECKING:
    import keras

__all__ = ["AUTO_RULE", "METHODS", "explain", "overlay", "write_overlays"]

#: How the per-channel weights are found: "gradcam" (the mean gradient, Selvaraju et al.),
#: "gradcam++" (Chattopadhay et al.: positive gradients, weighted by second-order terms) or "layercam"
#: (Jiang et al.: each position's own positive gradient, no spatial averaging).
METHODS = ("gradcam", "gradcam++", "layercam")

#: The automatic choice of maps, in words (the measurements behind it are in tests/test_explain.py).
AUTO_RULE = "one map per resolution of at least 4x4, the first at each, averaged"

_MIN_SIDE = 4  # a map smaller than this on a side says little about where (1x1: nothing at all)
_BATCH = 32
# Layers that move or resize a map rather than compute features on it: never chosen automatically.
_NOT_FEATURES = ("ZeroPadding2D", "Cropping2D", "UpSampling2D", "Resizing", "Rescaling", "Normalization")
_CONVS = ("Conv2D", "DepthwiseConv2D", "SeparableConv2D")


# ----------------------------------------------------------------------------------------------------
# The public functions


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

    ``sources`` are anything :func:`jupyter_cifar.images.load_images` reads (bytes, paths, file objects,
    PIL images, arrays). A source that cannot be decoded gets its :class:`ImageError` in its slot instead
    of a map, as :func:`jupyter_cifar.predict.classify` does, and the others are still explained.

    The map shows where the evidence for the model's top-1 class lies, or for ``class_index`` when given
    (one class for all, or one per source: the label ``classify`` answered, say).
    1 is the strongest evidence in the picture and 0 none (a map that is 0 everywhere: nothing in the
    picture speaks for the class). ``layer``: a layer name (``"outer/inner"`` for one inside a nested
    model) or several, whose maps are averaged; ``None`` chooses by :data:`AUTO_RULE`. ``method``: one
    of :data:`METHODS`. ``fit``: how the picture is made the model's input size ("squish": all of it;
    "crop" and "pad" as :func:`~jupyter_cifar.images.load_image` does them, which ``classify`` uses);
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


# ----------------------------------------------------------------------------------------------------
# Decoding: the model's input and the picture's own size


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
    explainer = _explainer(model, layer)
    wanted = _classes_wanted(class_index, len(items), explainer.classes)
    size = explainer.input_size
    decoded: list[_Decoded | ImageError] = [
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
class _Decoded:
    x: np.ndarray  # (h, w, 3) uint8 at the model's input size
    width: int  # the picture's own size, upright (EXIF orientation applied), as load_image sees it
    height: int
    pixels: np.ndarray | None  # (height, width, 3) uint8, when asked for


def _decode(
    source: ImageSource, label: str, size: tuple[int, int], fit: str, pixels: bool
) -> _Decoded | ImageError:
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
    return _Decoded(x, width, height, own)


def _own_size(source: ImageSource, label: str) -> tuple[int, int]:
    """(width, height) of a source that load_image has just decoded, upright as load_image turns it
    (EXIF orientation): from an array's shape, or an image's header (nothing more is decoded)."""
    import io

    from PIL import Image

    from .images import _OPEN_FORMATS, _orientation

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


# ----------------------------------------------------------------------------------------------------
# Taking the model apart: which maps, where the logits are, the views


@dataclass(frozen=True)
class _View:
    """A test-time view: ``shift`` pixels down and right (with reflection), then mirrored if ``flip``."""

    weight: float
    flip: bool = False
    shift: int = 0


def _views(name: str) -> list[_View]:
    """The views of :func:`jupyter_cifar.nets.with_tta`'s ``views`` and their logits' weights."""
    if name == "flip":
        return [_View(0.5), _View(0.5, flip=True)]
    return [
        _View(0.25), _View(0.25, flip=True),
        _View(0.125, shift=1), _View(0.125, flip=True, shift=1),
        _View(0.125, shift=-1), _View(0.125, flip=True, shift=-1),
    ]  # fmt: skip


def _apply_view(x: np.ndarray, view: _View) -> np.ndarray:
    """The view of a batch (n, h, w, 3), exactly as with_tta's frozen layers make it."""
    if view.shift:
        padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
        x = padded[:, :-2, :-2] if view.shift > 0 else padded[:, 2:, 2:]
    return x[:, :, ::-1] if view.flip else x


@dataclass(frozen=True)
class _Target:
    """A layer to explain: the chain of nested models it lies in (outermost first) and the layer."""

    chain: tuple[Any, ...]
    layer: Any

    @property
    def name(self) -> str:
        return "/".join([m.name for m in self.chain[1:]] + [self.layer.name])


def _graph(model: Any) -> Any:
    """The functional graph of a model (a Sequential keeps one inside)."""
    return getattr(model, "_functional", None) or model


def _node(layer: Any, container: Any) -> Any:
    """The one node of ``layer`` in ``container``'s graph; BadParameter if it is called more than once."""
    from keras.src.ops.function import make_node_key

    graph = _graph(container)
    keys = getattr(graph, "_nodes", None)
    nodes = [
        node for i, node in enumerate(layer._inbound_nodes) if keys is None or make_node_key(layer, i) in keys
    ]
    if len(nodes) != 1:
        raise BadParameter(
            "layer",
            f"{layer.name} is used {len(nodes)} times in {container.name}: its map is not one picture's",
        )
    return nodes[0]


def _flat_layers(model: Any, chain: tuple[Any, ...] = ()) -> list[_Target]:
    """Every layer of the model in order, those of nested models (used once) in their place."""
    import keras

    chain = (*chain, model)
    out: list[_Target] = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            try:
                _node(layer, model)
            except BadParameter:
                continue
            out += _flat_layers(layer, chain)
        else:
            out.append(_Target(chain, layer))
    return out


def _spatial(target: _Target) -> tuple[int, int] | None:
    """(height, width) of a layer's output if it is a 4D map with a known size, else None."""
    try:
        shape = tuple(_node(target.layer, target.chain[-1]).output_tensors[0].shape)
    except (BadParameter, IndexError, AttributeError):
        return None
    if len(shape) != 4 or shape[1] is None or shape[2] is None:
        return None
    return int(shape[1]), int(shape[2])


def _candidates(flat: list[_Target]) -> list[tuple[_Target, tuple[int, int]]]:
    """The feature maps: 4D outputs from the first convolution on, not paddings or resizings."""
    out = []
    seen_conv = False
    for target in flat:
        kind = type(target.layer).__name__
        if getattr(target.layer, "data_format", "channels_last") == "channels_first":
            raise BadParameter(
                "model", f"layer {target.name} is channels-first; explain needs channels-last maps"
            )
        seen_conv = seen_conv or kind in _CONVS
        size = _spatial(target)
        if seen_conv and size is not None and kind not in _NOT_FEATURES:
            out.append((target, size))
    return out


def _auto_layers(candidates: list[tuple[_Target, tuple[int, int]]]) -> list[_Target]:
    """:data:`AUTO_RULE`: for each resolution of at least 4x4, the first map at it (where a pooling or
    strided convolution lands), all in the same (innermost) model as the deepest of them."""
    chosen: list[_Target] = []
    sizes: set[tuple[int, int]] = set()
    for target, size in candidates:
        if min(size) >= _MIN_SIDE and size not in sizes:
            sizes.add(size)
            chosen.append(target)
    if not chosen:
        return []
    chain = chosen[-1].chain
    return [t for t in chosen if t.chain == chain]


def _find(flat: list[_Target], name: str) -> _Target:
    matches = [t for t in flat if t.name == name] or [t for t in flat if t.layer.name == name]
    if not matches:
        shown = ", ".join(t.name for t in flat[-8:])
        raise BadParameter("layer", f"no layer named {name!r} in the model (its last layers: {shown})")
    return matches[0]


def _score_tensor(model: Any) -> tuple[Any, Callable[[Any], Any]]:
    """The tensor in ``model``'s graph to take the class scores from, and what turns it into logits.

    Grad-CAM wants the score before the softmax: the input of a final softmax layer; for a final Dense
    with a softmax activation, its input times its kernel plus bias; a model that outputs logits, its
    output. Any other softmax output is turned into log-probabilities: they differ from the logits by the
    same amount for every class, though their gradients also count against the other classes.
    """
    import keras
    import tensorflow as tf

    from .nets import outputs_probabilities

    output = model.outputs[0]
    last = output._keras_history[0]
    if not outputs_probabilities(model):
        return output, lambda t: t
    if isinstance(last, keras.layers.Softmax | keras.layers.Activation):
        return _node(last, model).input_tensors[0], lambda t: t
    if isinstance(last, keras.layers.Dense):
        dense = last

        def logits(t: Any) -> Any:
            z = tf.matmul(tf.cast(t, tf.float32), tf.cast(dense.kernel, tf.float32))
            return z + tf.cast(dense.bias, tf.float32) if dense.use_bias else z

        return _node(last, model).input_tensors[0], logits
    return output, lambda t: tf.math.log(tf.cast(t, tf.float32) + 1e-30)


def _float32_copy(model: Any) -> Any:
    """A float32 copy of a mixed-precision model (same weights), or the model if it computes in float32.

    Gradients through bfloat16 keep three significant digits; the copy is what the maps are computed on.
    When no copy can be made (a layer that cannot be rebuilt from its config), the model is used as it is.
    """
    import keras

    def layers(m: Any) -> Iterable[Any]:
        for layer in m.layers:
            yield layer
            if isinstance(layer, keras.Model):
                yield from layers(layer)

    if all(getattr(layer.dtype_policy, "compute_dtype", "float32") == "float32" for layer in layers(model)):
        return model

    def as_float32(layer: Any) -> Any:
        config = layer.get_config()
        config["dtype"] = "float32"
        return layer.__class__.from_config(config)

    try:
        copy = keras.models.clone_model(model, clone_function=as_float32, recursive=True)
        if [w.shape for w in copy.weights] != [w.shape for w in model.weights]:
            return model
        copy.set_weights(model.get_weights())
    except Exception:
        return model
    return copy


class _Explainer:
    """What explaining one model with one choice of layers needs, built once (see :data:`_CACHE`)."""

    def __init__(self, model: Any, layer: str | Sequence[str] | None) -> None:
        import keras

        from .nets import tta_views, without_tta
        from .predict import _input_size

        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise BadParameter(
                "model",
                f"has {len(model.inputs)} inputs and {len(model.outputs)} outputs; explain needs one of each",
            )
        views = tta_views(model)
        body = without_tta(model) if views != "none" else model
        self.views = _views(views) if body is not model else [_View(1.0)]
        self.source = body  # the model whose weights the float32 copy follows
        self.model = _float32_copy(body)
        self.copied = self.model is not body
        size = _input_size(model)
        if size is None:
            raise BadParameter(
                "model",
                f"{model.name} takes pictures of any size; explain needs a model built for one size "
                "(its maps' sizes say where they lie), e.g. on keras.Input((32, 32, 3))",
            )
        self.input_size: tuple[int, int] = size  # (height, width)
        self.classes = int(model.outputs[0].shape[-1])

        flat = _flat_layers(self.model)
        if layer is None:
            candidates = _candidates(flat)
            self.targets = _auto_layers(candidates)
            if not self.targets:
                found = ", ".join(f"{t.name} {s[0]}x{s[1]}" for t, s in candidates[-3:]) or "none"
                raise BadParameter(
                    "model",
                    f"{model.name} has no convolutional feature map of {_MIN_SIDE}x{_MIN_SIDE} or more "
                    f"(its last maps: {found}); name one with layer=",
                )
        else:
            wanted = [layer] if isinstance(layer, str) else list(layer)
            if not wanted:
                raise BadParameter("layer", "names no layer")
            self.targets = [_find(flat, name) for name in wanted]
            for target in self.targets:
                if isinstance(target.layer, keras.layers.InputLayer) or _spatial(target) is None:
                    raise BadParameter(
                        "layer", f"{target.name} does not output a 2D feature map (height, width, channels)"
                    )
            if len({t.chain for t in self.targets}) != 1:
                raise BadParameter("layer", "the layers must all lie in the same (nested) model")
        self.forward = self._build(self.model, self.targets[0].chain, [t.layer for t in self.targets])
        self.grids = _grids(self.model, self.targets, self.input_size)

    def _build(
        self, model: Any, chain: tuple[Any, ...], layers: list[Any]
    ) -> Callable[[Any], tuple[list[Any], Any]]:
        """x -> (the layers' maps, the logits): one functional sub-model per nesting level, chained."""
        score, to_logits = _score_tensor(model)
        try:
            inner = self._level(model, chain, layers, score)
        except ValueError as error:
            raise BadParameter(
                "layer", f"cannot separate the chosen maps from {model.name}: {error}"
            ) from None

        def forward(x: Any) -> tuple[list[Any], Any]:
            maps, out = inner(x)
            return maps, to_logits(out)

        return forward

    def _level(self, model: Any, chain: tuple[Any, ...], layers: list[Any], out: Any) -> Callable[[Any], Any]:
        import keras

        if len(chain) == 1:
            maps = [_node(layer, model).output_tensors[0] for layer in layers]
            sub = keras.Model(model.inputs, [*maps, out])
            return lambda x: (lambda r: (list(r[:-1]), r[-1]))(sub(x, training=False))
        nested = chain[1]
        node = _node(nested, model)
        pre = None
        if [id(t) for t in node.input_tensors] != [id(t) for t in model.inputs]:
            pre = keras.Model(model.inputs, _one(node.input_tensors))
        post = keras.Model(_one(node.output_tensors), out)
        inner = self._level(nested, chain[1:], layers, nested.outputs[0])

        def forward(x: Any) -> tuple[list[Any], Any]:
            h = pre(x, training=False) if pre is not None else x
            maps, y = inner(h)
            return maps, post(y, training=False)

        return forward

    def maps(
        self, x: np.ndarray, pictures: list[_Decoded], class_index: np.ndarray | None, method: str, fit: str
    ) -> list[np.ndarray]:
        """Heatmaps at the pictures' own sizes for a batch ``x`` (n, h, w, 3) of model inputs."""
        import tensorflow as tf

        if self.copied:  # follow the model's current weights (it may have been trained since)
            self.model.set_weights(self.source.get_weights())
        n, views = len(x), self.views
        batch = np.concatenate([_apply_view(x.astype(np.float32), v) for v in views])
        inputs = tf.convert_to_tensor(batch)
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            maps, logits = self.forward(inputs)
            logits = tf.cast(logits, tf.float32)
            combined = sum(v.weight * logits[k * n : (k + 1) * n] for k, v in enumerate(views))
            if class_index is None:
                classes = tf.argmax(combined, axis=1, output_type=tf.int32)
            else:
                classes = tf.constant(class_index, dtype=tf.int32)
            score = tf.reduce_sum(tf.gather(logits, tf.tile(classes, [len(views)]), batch_dims=1))
        grads = tape.gradient(score, maps)
        cams = []
        for m, g in zip(maps, grads, strict=True):
            a = tf.cast(m, tf.float32).numpy()
            gn = np.zeros_like(a) if g is None else tf.cast(g, tf.float32).numpy()
            cams.append(_cam(a, gn, method))  # (views * n, rows, cols)
        h, w = self.input_size
        out = []
        for b, picture in enumerate(pictures):
            ys = _to_input(picture.height, h, picture.width, w, fit)
            xs = _to_input(picture.width, w, picture.height, h, fit)
            total = np.zeros((picture.height, picture.width), np.float32)
            for k, view in enumerate(views):  # each view's map, mapped back, weighted as its logits are
                view_map = np.zeros_like(total)
                for cam, (row_offset, row_stride, col_offset, col_stride) in zip(
                    cams, self.grids, strict=True
                ):
                    rows = _onto_grid(*ys, h, row_offset, row_stride, cam.shape[1], view.shift, False)
                    cols = _onto_grid(*xs, w, col_offset, col_stride, cam.shape[2], view.shift, view.flip)
                    view_map += _normalised(rows @ cam[k * n + b] @ cols.T)  # each layer counts alike
                total += view.weight * _normalised(view_map)
            out.append(_normalised(total))
        return out


_Grid = tuple[float, float, float, float]  # row offset, row stride, column offset, column stride


def _grids(model: Any, targets: list[_Target], input_size: tuple[int, int]) -> list[_Grid]:
    """Where each target map's cells lie on the model's input: cell (i, j) is centred (offset + i * stride)
    pixels down and (offset + j * stride) across, in input pixels (pixel k spans k..k+1).

    Worked out from the layers' configurations along the graph (kernel sizes, strides, paddings, crops),
    so it is exact whatever the weights. A map behind a layer whose geometry is not known here is taken
    to cover the input evenly (what resizing it would assume).
    """
    geometry = _geometry(model, (0.5, 1.0, 0.5, 1.0))
    grids = []
    for target in targets:
        tensor = _node(target.layer, target.chain[-1]).output_tensors[0]
        grid = geometry.get(id(tensor))
        if grid is None:
            rows, cols = int(tensor.shape[1]), int(tensor.shape[2])
            h, w = input_size
            grid = (h / rows / 2, h / rows, w / cols / 2, w / cols)
        grids.append(grid)
    return grids


def _geometry(model: Any, start: _Grid) -> dict[int, _Grid]:
    """The grid of every 4D tensor of ``model`` (and of its nested models) whose input has grid ``start``,
    by the id of the tensor."""
    import keras

    known = {id(model.inputs[0]): start}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        try:
            node = _node(layer, model)
        except BadParameter:
            continue
        inputs = [t for t in node.input_tensors if id(t) in known]
        if len(inputs) != len(node.input_tensors) or len(node.output_tensors) != 1:
            continue
        output = node.output_tensors[0]
        if isinstance(layer, keras.Model):
            inner = _geometry(layer, known[id(inputs[0])])
            known.update(inner)
            grid = inner.get(id(layer.outputs[0]))
        else:
            grid = _layer_grid(layer, known[id(inputs[0])], tuple(inputs[0].shape), tuple(output.shape))
        if grid is not None:
            known[id(output)] = grid
    return known


def _layer_grid(layer: Any, grid: _Grid, before: tuple[Any, ...], after: tuple[Any, ...]) -> _Grid | None:
    """The grid of a layer's output from its input's, or None when this layer's geometry is not known."""
    if len(before) != 4 or len(after) != 4 or None in before[1:3] or None in after[1:3]:
        return None
    kind = type(layer).__name__
    out = []
    for axis in (0, 1):
        offset, stride = grid[2 * axis], grid[2 * axis + 1]
        size_in, size_out = int(before[1 + axis]), int(after[1 + axis])
        if kind in _CONVS or kind in ("MaxPooling2D", "AveragePooling2D"):
            kernel = _pair(getattr(layer, "kernel_size", None) or layer.pool_size)[axis]
            step = _pair(layer.strides or kernel)[axis]
            dilation = _pair(getattr(layer, "dilation_rate", 1))[axis]
            reach = (kernel - 1) * dilation + 1
            pad = max((size_out - 1) * step + reach - size_in, 0) // 2 if layer.padding == "same" else 0
            offset, stride = offset + stride * ((reach - 1) / 2 - pad), stride * step
        elif kind in ("ZeroPadding2D", "Cropping2D"):
            amounts = layer.padding if kind == "ZeroPadding2D" else layer.cropping
            first = int(amounts[axis][0])
            offset += stride * (-first if kind == "ZeroPadding2D" else first)
        elif kind == "UpSampling2D":
            factor = _pair(layer.size)[axis]
            offset, stride = offset + stride * (0.5 / factor - 0.5), stride / factor
        elif size_in != size_out:
            return None
        out += [offset, stride]
    return out[0], out[1], out[2], out[3]


def _pair(value: Any) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _one(tensors: list[Any]) -> Any:
    """A list of one tensor as the tensor (a functional model with one input or output takes it so)."""
    return tensors[0] if len(tensors) == 1 else tensors


def _centroid(profile: np.ndarray) -> float | None:
    """The centre of mass of a non-negative 1D profile, in pixel coordinates (pixel k spans k..k+1)."""
    mass = float(profile.sum())
    if not mass > 0:
        return None
    return float((profile * (np.arange(len(profile)) + 0.5)).sum() / mass)


def _cam(a: np.ndarray, g: np.ndarray, method: str) -> np.ndarray:
    """Class activation maps (n, rows, cols) from maps ``a`` and their gradients ``g`` (n, rows, cols, c)."""
    if method == "gradcam":
        weights = g.mean(axis=(1, 2), keepdims=True)
        cam = (weights * a).sum(-1)
    elif method == "gradcam++":
        g2, g3 = g**2, g**3
        denominator = 2 * g2 + a.sum(axis=(1, 2), keepdims=True) * g3
        alpha = g2 / np.where(denominator != 0, denominator, 1)
        weights = (alpha * np.maximum(g, 0)).sum(axis=(1, 2), keepdims=True)
        cam = (weights * a).sum(-1)
    else:  # layercam
        cam = (np.maximum(g, 0) * a).sum(-1)
    return np.maximum(cam, 0).astype(np.float32)


def _normalised(heat: np.ndarray) -> np.ndarray:
    """Divided by its maximum (0 stays "no evidence"); all zeros stays all zeros."""
    top = float(heat.max()) if heat.size else 0.0
    return (heat / top if top > 0 and np.isfinite(top) else np.zeros_like(heat)).astype(np.float32)


def _to_input(
    own: int, side: int, other_own: int, other_side: int, fit: str
) -> tuple[np.ndarray, np.ndarray]:
    """Where the centres of a picture's pixels along one axis (``own`` of them) land on the model's input
    (``side`` pixels along that axis), resized by ``fit`` as images.py does it, and whether the model
    sees them at all (a crop drops some)."""
    v = np.arange(own, dtype=np.float64) + 0.5
    if fit == "crop":
        scale = max(side / own, other_side / other_own)  # input pixels per picture pixel
        u = (v - (own - side / scale) / 2) * scale  # the crop keeps the middle side / scale pixels
    elif fit == "pad":  # scaled to fit, centred between bars (as images._resize and _finish place it)
        placed = max(1, min(side, round(own * min(side / own, other_side / other_own))))
        u = v * placed / own + (side - placed) // 2
    else:
        u = v * side / own
    return u, (u >= 0) & (u <= side)


def _onto_grid(
    u: np.ndarray,
    seen: np.ndarray,
    side: int,
    offset: float,
    stride: float,
    cells: int,
    shift: int,
    flip: bool,
) -> np.ndarray:
    """(pixels, cells) bilinear weights: input coordinates ``u`` through a view (moved ``shift`` pixels,
    then mirrored if ``flip``) onto a map's grid (cell i at offset + i * stride); unseen pixels get none."""
    u = u + shift
    if flip:
        u = side - u
    t = np.clip((u - offset) / stride, 0, cells - 1)
    low = np.floor(t).astype(np.int64)
    high = np.minimum(low + 1, cells - 1)
    frac = t - low
    matrix = np.zeros((len(u), cells), np.float32)
    rows = np.arange(len(u))
    np.add.at(matrix, (rows, low), (1 - frac) * seen)
    np.add.at(matrix, (rows, high), frac * seen)
    return matrix


# One explainer per model and choice of layers, dropped with the model (a model may be a key: Keras
# models hash by identity). The sub-models and the measured grids are what makes a second call fast.
_CACHE: weakref.WeakKeyDictionary[Any, dict[tuple[str, ...] | None, _Explainer]] = weakref.WeakKeyDictionary()


def _explainer(model: Any, layer: str | Sequence[str] | None) -> _Explainer:
    import keras

    if not isinstance(model, keras.Model):
        raise BadParameter("model", f"must be a Keras model (got {type(model).__name__})")
    backend = keras.config.backend()
    if backend != "tensorflow":
        raise BadParameter(
            "KERAS_BACKEND", f"explain computes its gradients with TensorFlow; Keras is running on {backend}"
        )
    key = None if layer is None else ((layer,) if isinstance(layer, str) else tuple(layer))
    per_model = _CACHE.setdefault(model, {})
    if key not in per_model:
        per_model[key] = _Explainer(model, layer)
    return per_model[key]
