"""The heatmaps themselves, for :mod:`jupyter_cifar.engine.explain`: one model's maps and their gradients for
a batch, weighted into class activation maps (:data:`METHODS`) and mapped back onto each picture.

What explaining a model with one choice of layers needs (the sub-models, the grids) is built once and
kept with the model (:func:`explainer_for`).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import BadParameter
from .geometry import View, apply_view, map_grids, onto_grid, to_input, views_of
from .layers import (
    MIN_SIDE,
    auto_layers,
    feature_maps,
    find_layer,
    flat_layers,
    float32_copy,
    node_of,
    one_tensor,
    score_tensor,
    spatial_size,
)

if TYPE_CHECKING:
    from .heatmaps import Decoded

#: How the per-channel weights are found: "gradcam" (the mean gradient, Selvaraju et al.),
#: "gradcam++" (Chattopadhay et al.: positive gradients, weighted by second-order terms) or "layercam"
#: (Jiang et al.: each position's own positive gradient, no spatial averaging).
METHODS = ("gradcam", "gradcam++", "layercam")


class Explainer:
    """What explaining one model with one choice of layers needs, built once (see :data:`_CACHE`)."""

    def __init__(self, model: Any, layer: str | Sequence[str] | None) -> None:
        import keras

        from ..predict import _input_size
        from ..tta import tta_views, without_tta

        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise BadParameter(
                "model",
                f"has {len(model.inputs)} inputs and {len(model.outputs)} outputs; explain needs one of each",
            )
        views = tta_views(model)
        body = without_tta(model) if views != "none" else model
        self.views = views_of(views) if body is not model else [View(1.0)]
        self.source = body  # the model whose weights the float32 copy follows
        self.model = float32_copy(body)
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

        flat = flat_layers(self.model)
        if layer is None:
            candidates = feature_maps(flat)
            self.targets = auto_layers(candidates)
            if not self.targets:
                found = ", ".join(f"{t.name} {s[0]}x{s[1]}" for t, s in candidates[-3:]) or "none"
                raise BadParameter(
                    "model",
                    f"{model.name} has no convolutional feature map of {MIN_SIDE}x{MIN_SIDE} or more "
                    f"(its last maps: {found}); name one with layer=",
                )
        else:
            wanted = [layer] if isinstance(layer, str) else list(layer)
            if not wanted:
                raise BadParameter("layer", "names no layer")
            self.targets = [find_layer(flat, name) for name in wanted]
            for target in self.targets:
                if isinstance(target.layer, keras.layers.InputLayer) or spatial_size(target) is None:
                    raise BadParameter(
                        "layer", f"{target.name} does not output a 2D feature map (height, width, channels)"
                    )
            if len({t.chain for t in self.targets}) != 1:
                raise BadParameter("layer", "the layers must all lie in the same (nested) model")
        self.forward = self._build(self.model, self.targets[0].chain, [t.layer for t in self.targets])
        self.grids = map_grids(self.model, self.targets, self.input_size)

    def _build(
        self, model: Any, chain: tuple[Any, ...], layers: list[Any]
    ) -> Callable[[Any], tuple[list[Any], Any]]:
        """x -> (the layers' maps, the logits): one functional sub-model per nesting level, chained."""
        score, to_logits = score_tensor(model)
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
            maps = [node_of(layer, model).output_tensors[0] for layer in layers]
            sub = keras.Model(model.inputs, [*maps, out])
            return lambda x: (lambda r: (list(r[:-1]), r[-1]))(sub(x, training=False))
        nested = chain[1]
        node = node_of(nested, model)
        pre = None
        if [id(t) for t in node.input_tensors] != [id(t) for t in model.inputs]:
            pre = keras.Model(model.inputs, one_tensor(node.input_tensors))
        post = keras.Model(one_tensor(node.output_tensors), out)
        inner = self._level(nested, chain[1:], layers, nested.outputs[0])

        def forward(x: Any) -> tuple[list[Any], Any]:
            h = pre(x, training=False) if pre is not None else x
            maps, y = inner(h)
            return maps, post(y, training=False)

        return forward

    def maps(
        self, x: np.ndarray, pictures: list[Decoded], class_index: np.ndarray | None, method: str, fit: str
    ) -> list[np.ndarray]:
        """Heatmaps at the pictures' own sizes for a batch ``x`` (n, h, w, 3) of model inputs."""
        import tensorflow as tf

        if self.copied:  # follow the model's current weights (it may have been trained since)
            self.model.set_weights(self.source.get_weights())
        n, views = len(x), self.views
        batch = np.concatenate([apply_view(x.astype(np.float32), v) for v in views])
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
            cams.append(activation_map(a, gn, method))  # (views * n, rows, cols)
        h, w = self.input_size
        out = []
        for b, picture in enumerate(pictures):
            ys = to_input(picture.height, h, picture.width, w, fit)
            xs = to_input(picture.width, w, picture.height, h, fit)
            total = np.zeros((picture.height, picture.width), np.float32)
            for k, view in enumerate(views):  # each view's map, mapped back, weighted as its logits are
                view_map = np.zeros_like(total)
                for cam, (row_offset, row_stride, col_offset, col_stride) in zip(
                    cams, self.grids, strict=True
                ):
                    rows = onto_grid(*ys, h, row_offset, row_stride, cam.shape[1], view.shift, False)
                    cols = onto_grid(*xs, w, col_offset, col_stride, cam.shape[2], view.shift, view.flip)
                    view_map += normalised(rows @ cam[k * n + b] @ cols.T)  # each layer counts alike
                total += view.weight * normalised(view_map)
            out.append(normalised(total))
        return out


def activation_map(a: np.ndarray, g: np.ndarray, method: str) -> np.ndarray:
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


def normalised(heat: np.ndarray) -> np.ndarray:
    """Divided by its maximum (0 stays "no evidence"); all zeros stays all zeros."""
    top = float(heat.max()) if heat.size else 0.0
    return (heat / top if top > 0 and np.isfinite(top) else np.zeros_like(heat)).astype(np.float32)


# One explainer per model and choice of layers, dropped with the model (a model may be a key: Keras
# models hash by identity). The sub-models and the measured grids are what makes a second call fast.
_CACHE: weakref.WeakKeyDictionary[Any, dict[tuple[str, ...] | None, Explainer]] = weakref.WeakKeyDictionary()


def explainer_for(model: Any, layer: str | Sequence[str] | None) -> Explainer:
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
        per_model[key] = Explainer(model, layer)
    return per_model[key]
