"""Test-time augmentation inside the saved model: each image's logits averaged over its mirror image
(and, as airbench does, two 1-pixel shifts, each mirrored too), built from standard Keras layers only so
that the result saves and loads with plain ``keras.saving``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import keras

TTA_VIEWS = ("none", "flip", "flip-translate")


def with_tta(model: keras.Model, views: str = "flip") -> keras.Model:
    """The model averaging its logits over views of each image (test-time augmentation).

    ``views``: "flip" (the image and its mirror image, weighted equally) or "flip-translate" (airbench's:
    half the weight on those two, a quarter on each of two copies shifted by one pixel down-right and
    up-left with reflected borders, each also mirrored: six passes). Built from standard layers only, so
    the result saves and loads with plain ``keras.saving``: each view is a frozen dense layer holding a
    32x32 permutation of the columns (and one of the rows). The model must have a layer named ``logits``
    (the presets' whitened networks do).
    """
    import keras
    from keras import layers

    if views not in TTA_VIEWS[1:]:
        raise ValueError(f"unknown test-time augmentation {views!r}")
    body = keras.Model(model.input, model.get_layer("logits").output, name=f"{model.name}_body")
    shape = tuple(model.input.shape[1:])
    if len(shape) != 3 or shape[0] != shape[1]:
        raise ValueError(f"test-time augmentation needs square images (the model takes {shape})")
    inputs = keras.Input(shape, name="image")
    side = int(shape[1])
    frozen: dict[str, np.ndarray] = {}

    def remap(x: keras.KerasTensor, name: str, matrix: np.ndarray, axis: str) -> keras.KerasTensor:
        """Apply a 32x32 0/1 matrix along the columns (axis "x") or rows ("y") of every channel."""
        order = (1, 3, 2) if axis == "x" else (3, 2, 1)
        x = layers.Permute(order, name=f"{name}_in")(x)
        x = layers.Dense(side, use_bias=False, trainable=False, name=name)(x)
        frozen[name] = matrix
        return layers.Permute(order, name=f"{name}_out")(x)

    mirror = np.eye(side, dtype=np.float32)[::-1]

    def mirrored_pair(x: keras.KerasTensor, tag: str, name: str) -> keras.KerasTensor:
        flipped = remap(x, f"mirror{tag}", mirror, "x")
        return layers.Average(name=name)([body(x), body(flipped)])

    if views == "flip":
        logits = mirrored_pair(inputs, "", "tta_logits")
    else:
        logits = mirrored_pair(inputs, "", "pair")
        shifted = []
        for tag, step in (("down", 1), ("up", -1)):
            moved = inputs
            for axis in ("y", "x"):
                moved = remap(moved, f"shift_{tag}_{axis}", _shift_matrix(side, step), axis)
            shifted.append(mirrored_pair(moved, f"_{tag}", f"pair_{tag}"))
        logits = layers.Average(name="tta_logits")([logits, logits, *shifted])
    outputs = layers.Activation("softmax", dtype="float32", name="probabilities")(logits)
    wrapped = keras.Model(inputs, outputs, name=model.name)
    for name, matrix in frozen.items():
        wrapped.get_layer(name).set_weights([matrix])
    return wrapped


def _shift_matrix(side: int, step: int) -> np.ndarray:
    """M with (x @ M)[j] = x[j - step], reflected at the borders (airbench's 1-pixel padding and crop)."""
    source = np.arange(side) - step
    source = np.abs(source)  # -1 -> 1: reflect at the start
    source = np.where(source > side - 1, 2 * (side - 1) - source, source)  # side -> side - 2
    matrix = np.zeros((side, side), np.float32)
    matrix[source, np.arange(side)] = 1
    return matrix


def tta_views(model: keras.Model) -> str:
    """Which of :data:`TTA_VIEWS` a model built by :func:`with_tta` averages over ("none" for others)."""
    names = {layer.name for layer in model.layers}
    if "mirror" not in names or "tta_logits" not in names:
        return "none"
    return "flip-translate" if "shift_down_x" in names else "flip"


def without_tta(model: keras.Model) -> keras.Model:
    """The trainable network inside a :func:`with_tta` model (it outputs logits); else ``model``."""
    import keras

    if tta_views(model) == "none":
        return model
    inner = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    return inner[0] if len(inner) == 1 else model
