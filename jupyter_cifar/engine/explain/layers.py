"""Taking a model apart for :mod:`jupyter_cifar.engine.explain`: which feature maps to explain, and where the
class scores (before any softmax) come from.

A layer is found in the graph of the model, or of a model nested in it (used once: a model called
twice has no one map per picture). Mixed-precision models are explained through a float32 copy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ...errors import BadParameter

#: The automatic choice of maps, in words (the measurements behind it are in tests/test_explain.py).
AUTO_RULE = "one map per resolution of at least 4x4, the first at each, averaged"
MIN_SIDE = 4  # a map smaller than this on a side says little about where (1x1: nothing at all)
# Layers that move or resize a map rather than compute features on it: never chosen automatically.
NOT_FEATURES = ("ZeroPadding2D", "Cropping2D", "UpSampling2D", "Resizing", "Rescaling", "Normalization")
CONVS = ("Conv2D", "DepthwiseConv2D", "SeparableConv2D")


@dataclass(frozen=True)
class Target:
    """A layer to explain: the chain of nested models it lies in (outermost first) and the layer."""

    chain: tuple[Any, ...]
    layer: Any

    @property
    def name(self) -> str:
        return "/".join([m.name for m in self.chain[1:]] + [self.layer.name])


def functional_graph(model: Any) -> Any:
    """The functional graph of a model (a Sequential keeps one inside)."""
    return getattr(model, "_functional", None) or model


def node_of(layer: Any, container: Any) -> Any:
    """The one node of ``layer`` in ``container``'s graph; BadParameter if it is called more than once."""
    from keras.src.ops.function import make_node_key

    graph = functional_graph(container)
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


def flat_layers(model: Any, chain: tuple[Any, ...] = ()) -> list[Target]:
    """Every layer of the model in order, those of nested models (used once) in their place."""
    import keras

    chain = (*chain, model)
    out: list[Target] = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            try:
                node_of(layer, model)
            except BadParameter:
                continue
            out += flat_layers(layer, chain)
        else:
            out.append(Target(chain, layer))
    return out


def spatial_size(target: Target) -> tuple[int, int] | None:
    """(height, width) of a layer's output if it is a 4D map with a known size, else None."""
    try:
        shape = tuple(node_of(target.layer, target.chain[-1]).output_tensors[0].shape)
    except (BadParameter, IndexError, AttributeError):
        return None
    if len(shape) != 4 or shape[1] is None or shape[2] is None:
        return None
    return int(shape[1]), int(shape[2])


def feature_maps(flat: list[Target]) -> list[tuple[Target, tuple[int, int]]]:
    """The feature maps: 4D outputs from the first convolution on, not paddings or resizings."""
    out = []
    seen_conv = False
    for target in flat:
        kind = type(target.layer).__name__
        if getattr(target.layer, "data_format", "channels_last") == "channels_first":
            raise BadParameter(
                "model", f"layer {target.name} is channels-first; explain needs channels-last maps"
            )
        seen_conv = seen_conv or kind in CONVS
        size = spatial_size(target)
        if seen_conv and size is not None and kind not in NOT_FEATURES:
            out.append((target, size))
    return out


def auto_layers(candidates: list[tuple[Target, tuple[int, int]]]) -> list[Target]:
    """:data:`AUTO_RULE`: for each resolution of at least 4x4, the first map at it (where a pooling or
    strided convolution lands), all in the same (innermost) model as the deepest of them."""
    chosen: list[Target] = []
    sizes: set[tuple[int, int]] = set()
    for target, size in candidates:
        if min(size) >= MIN_SIDE and size not in sizes:
            sizes.add(size)
            chosen.append(target)
    if not chosen:
        return []
    chain = chosen[-1].chain
    return [t for t in chosen if t.chain == chain]


def find_layer(flat: list[Target], name: str) -> Target:
    matches = [t for t in flat if t.name == name] or [t for t in flat if t.layer.name == name]
    if not matches:
        shown = ", ".join(t.name for t in flat[-8:])
        raise BadParameter("layer", f"no layer named {name!r} in the model (its last layers: {shown})")
    return matches[0]


def score_tensor(model: Any) -> tuple[Any, Callable[[Any], Any]]:
    """The tensor in ``model``'s graph to take the class scores from, and what turns it into logits.

    Grad-CAM wants the score before the softmax: the input of a final softmax layer; for a final Dense
    with a softmax activation, its input times its kernel plus bias; a model that outputs logits, its
    output. Any other softmax output is turned into log-probabilities: they differ from the logits by the
    same amount for every class, though their gradients also count against the other classes.
    """
    import keras
    import tensorflow as tf

    from ..nets import outputs_probabilities

    output = model.outputs[0]
    last = output._keras_history[0]
    if not outputs_probabilities(model):
        return output, lambda t: t
    if isinstance(last, keras.layers.Softmax | keras.layers.Activation):
        return node_of(last, model).input_tensors[0], lambda t: t
    if isinstance(last, keras.layers.Dense):
        dense = last

        def logits(t: Any) -> Any:
            z = tf.matmul(tf.cast(t, tf.float32), tf.cast(dense.kernel, tf.float32))
            return z + tf.cast(dense.bias, tf.float32) if dense.use_bias else z

        return node_of(last, model).input_tensors[0], logits
    return output, lambda t: tf.math.log(tf.cast(t, tf.float32) + 1e-30)


def float32_copy(model: Any) -> Any:
    """A float32 copy of a mixed-precision model (same weights), or the model if it computes in float32.

    Gradients through bfloat16 keep three significant digits; the copy is what the maps are computed on.
    When no copy can be made (a layer that cannot be rebuilt from its config), the model is used as it is.
    """
    from ..nets import with_precision

    try:
        return with_precision(model, "float32")
    except ValueError:
        return model


def one_tensor(tensors: list[Any]) -> Any:
    """A list of one tensor as the tensor (a functional model with one input or output takes it so)."""
    return tensors[0] if len(tensors) == 1 else tensors
