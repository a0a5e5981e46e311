"""How each built-in Keras layer the app imports sizes its output and its variables, without Keras.

:mod:`jupyter_cifar.engine.modelsizes` walks a model's graph; for each layer it asks :data:`LAYER_SIZES` what
the layer outputs for one image and which variables its ``build`` makes, from its config and its inputs'
shapes, exactly as Keras 3 works them out (the tests build every rule's layer with Keras and compare).
A config that Keras would refuse, or that leaves a size unclear, is refused here (:class:`_Refused`).
These are the layers of the app's presets, of the common Sequential idioms and of ``keras.applications``'
image families (MobileNetV2, ResNet50, EfficientNetB0): a model built from them imports by default.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

Shape = tuple[int, ...]  # a variable's shape, or one image's (without the batch dimension)
# A layer's sizes from its config and its inputs' shapes: (its output's shape, its variables' shapes,
# its LoRA factors' shapes: a legacy .h5 file holds them, a .keras file holds them merged into the kernel).
_Sizes = tuple[Shape, list[Shape], list[Shape]]
_Infer = Callable[[dict[str, Any], list[Shape]], _Sizes]


class _Refused(Exception):
    """Why a config is refused, found while its sizes are worked out (the caller adds the file's name)."""


def _one(inputs: list[Shape], rank: int | None = None) -> Shape:
    if len(inputs) != 1:
        raise _Refused(f"takes one input, not {len(inputs)}")
    if rank is not None and len(inputs[0]) != rank:
        raise _Refused(f"takes inputs of {rank} dimensions per image, not {_shown(inputs[0])}")
    return inputs[0]


def _same_shape(config: dict[str, Any], inputs: list[Shape]) -> _Sizes:
    return _one(inputs), [], []


def _rescaling(config: dict[str, Any], inputs: list[Shape]) -> _Sizes:
    x = _one(inputs)
    for key in ("scale", "offset"):
        value = config.get(key, 0)
        row = value if isinstance(value, list) else [value]
        if len(row) not in (1, x[-1]) or not all(isinstance(n, int | float) for n in row):
            raise _Refused(f"has {key} {_shown(value)}: a number, or one per channel")
    return x, [], []


def _dense(config: dict[str, Any], inputs: list[Shape]) -> _Sizes:
    x = _one(inputs)
    units = _count(config, "units")
    return (*x[:-1], units), [(x[-1], units), *_bias(config, units)], _lora(config, (x[-1],), units)


def _conv2d(config: dict[str, Any], inputs: list[Shape]) -> _Sizes:
    first = _channels_first(config)
    (height, width), channels = _spatial(_one(inputs, 3), first)
    filters, groups = _count(config, "filters"), _count(config, "groups", 1)
    if channels % groups or filters % groups:
        raise _Refused(f"has {groups} groups, which must divide its {channels} inputs and {filters} filters")
    kernel = (*_counts(config, "kernel_size"), channels // groups, filters)
    strides, dilation = _counts(config, "strides", (1, 1)), _counts(config, "dilation_rate", (1, 1))
    size = _window(config, (height, width), kernel[:2], strides, dilation)
    output = (filters, *size) if first else (*size, filters)
    return output, [kernel, *_bias(config, filters)], _lora(config, kernel[:-1], filters)


def _max_pooling2d(config: dict[str, Any], inputs: list[Shape]) -> _Sizes:
    first = _channels_first(config)
    (height, width), channels = _spatial(_one(inputs, 3), first)
    pool = _counts(config, "pool_size", (2, 2))
    size = _window(config, (height, width), pool, _counts(config, "strides", pool), (1, 1))
    return ((channels, *size) if first else (*size, channels)), [], []


def _batch_normalization(config: dict[str, Any], inputs: list[Shape]) -> _Sizes:
    x = _one(inputs)
    axis = config.get("axis", -1)
    if isinstance(axis, list) and len(axis) == 1:  # tf.keras 2 wrote a list
        axis = axis[0]
    if not isinstance(axis, int) or isinstance(axis, bool) or axis == 0 or not -len(x) <= axis <= len(x):
        raise _Refused(f"has axis {_shown(axis)}, not an axis of its inputs {_shown(x)} (nor the batch's)")
    features = (x[axis - 1] if axis > 0 else x[axis],)
    # moving mean and variance; beta (center), gamma (scale); three more for batch renormalization
    count = (
        2 + _flag(config, "center", True) + _flag(config, "scale", True) + 3 * _flag(config, "renorm", False)
    )
    return x, [features] * count, []


def _global_max_pooling2d(config: dict[str, Any], inputs: list[Shape]) -> _Sizes:
    first = _channels_first(config)
    _, channels = _spatial(_one(inputs, 3), first)
    if not _flag(config, "keepdims", False):
        return (channels,), [], []
    return ((channels, 1, 1) if first else (1, 1, channels)), [], []


def _flatten(config: dict[str, Any], inputs: list[Shape]) -> _Sizes:
    return (math.prod(_one(inputs)),), [], []


def _permute(config: dict[str, Any], inputs: list[Shape]) -> _Sizes:
    x = _one(inputs)
    dims = config.get("dims")
    order = list(range(1, len(x) + 1))
    if not (isinstance(dims, list) and all(type(d) is int for d in dims) and sorted(dims) == order):
        raise _Refused(f"has dims {_shown(dims)}, not an order of its inputs' {len(x)} dimensions")
    return tuple(x[d - 1] for d in dims), [], []


def _average(config: dict[str, Any], inputs: list[Shape]) -> _Sizes:
    if not inputs or len(set(inputs)) != 1:
        raise _Refused(f"averages inputs of different shapes ({_shown(inputs)})")
    return inputs[0], [], []


# -- the layers of the common Sequential idioms and of keras.applications' image families ----------------


def _spatial_rank(config: dict[str, Any], inputs: list[Shape]) -> _Sizes:
    """A layer that keeps an image's shape and needs one (SpatialDropout2D)."""
    return _one(inputs, 3), [], []


def _prelu(config: dict[str, Any], inputs: list[Shape]) -> _Sizes:
    x = _one(inputs)
    shared = config.get("shared_axes") or []
    shared = [shared] if isinstance(shared, int) else shared
    if not isinstance(shared, list) or not all(type(a) is int and 1 <= a <= len(x) for a in shared):
        raise _Refused(f"has shared_axes {_shown(shared)}, not axes of its inputs {_shown(x)}")
    alpha = tuple(1 if i + 1 in shared else n for i, n in enumerate(x))
    return x, [alpha], []


def _depthwise_conv2d(config: dict[str, Any], inputs: list[Shape]) -> _Sizes:
    first = _channels_first(config)
    (height, width), channels = _spatial(_one(inputs, 3), first)
    multiplier = _count(config, "depth_multiplier", 1)
    kernel = (*_counts(config, "kernel_size"), channels, multiplier)
    strides, dilation = _counts(config, "strides", (1, 1)), _counts(config, "dilation_rate", (1, 1))
    size = _window(config, (height, width), kernel[:2], strides, dilation)
    out = channels * multiplier
    return ((out, *size) if first else (*size, out)), [kernel, *_bias(config, out)], []


def _separable_conv2d(config: dict[str, Any], inputs: list[Shape]) -> _Sizes:
    first = _channels_first(config)
    (height, width), channels = _spatial(_one(inputs, 3), first)
    multiplier, filters = _count(config, "depth_multiplier", 1), _count(config, "filters")
    depthwise = (*_counts(config, "kernel_size"), channels, multiplier)
    strides, dilation = _counts(config, "strides", (1, 1)), _counts(config, "dilation_rate", (1, 1))
    size = _window(config, (height, width), depthwise[:2], strides, dilation)
    weights = [depthwise, (1, 1, channels * multiplier, filters), *_bias(config, filters)]
    return ((filters, *size) if first else (*size, filters)), weights, []


def _conv2d_transpose(config: dict[str, Any], inputs: list[Shape]) -> _Sizes:
    first = _channels_first(config)
    (height, width), channels = _spatial(_one(inputs, 3), first)
    filters = _count(config, "filters")
    window = _counts(config, "kernel_size")
    strides, dilation = _counts(config, "strides", (1, 1)), _counts(config, "dilation_rate", (1, 1))
    padding = config.get("padding", "valid")
    if padding not in ("valid", "same"):
        raise _Refused(f"has padding {_shown(padding)}, not 'valid' or 'same'")
    extra = config.get("output_padding")
    extras: tuple[int | None, ...] = (None, None)
    if extra is not None:
        extras = (extra, extra) if type(extra) is int else tuple(extra) if isinstance(extra, list) else ()
        below = len(extras) == 2 and all(
            type(p) is int and 0 <= p < s for p, s in zip(extras, strides, strict=True)
        )
        if not below:
            raise _Refused(f"has output_padding {_shown(extra)}, not two numbers below its strides")
    size = []
    for n, k, s, d, p in zip((height, width), window, strides, dilation, extras, strict=True):
        span = (k - 1) * d + 1
        if p is None:
            size.append(n * s + max(span - s, 0) if padding == "valid" else n * s)
        else:
            size.append((n - 1) * s + span - 2 * (span // 2 if padding == "same" else 0) + p)
    if min(size) < 1:
        raise _Refused(f"gives an empty output ({_shown(size)})")
    kernel = (*window, filters, channels)
    return ((filters, *size) if first else (*size, filters)), [kernel, *_bias(config, filters)], []


def _pairs(config: dict[str, Any], key: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """ZeroPadding2D's ``padding``, Cropping2D's ``cropping``: n, (rows, columns) or ((top, bottom),
    (left, right)), as (before, after) for each of height and width."""
    value = config.get(key, 1 if key == "padding" else 0)
    if type(value) is int:
        value = [value, value]
    if not isinstance(value, list) or len(value) != 2:
        raise _Refused(f"has {key} {_shown(value)}")
    out = []
    for side in value:
        pair = [side, side] if type(side) is int else side
        if not isinstance(pair, list) or len(pair) != 2 or not all(type(n) is int and n >= 0 for n in pair):
            raise _Refused(f"has {key} {_shown(value)}: whole numbers of 0 or more")
        out.append((pair[0], pair[1]))
    return out[0], out[1]


def _zero_padding2d(config: dict[str, Any], inputs: list[Shape]) -> _Sizes:
    first = _channels_first(config)
    (height, width), channels = _spatial(_one(inputs, 3), first)
    (top, bottom), (left, right) = _pairs(config, "padding")
    size = (height + top + bottom, width + left + right)
    return ((channels, *size) if first else (*size, channels)), [], []


def _cropping2d(config: dict[str, Any], inputs: list[Shape]) -> _Sizes:
    first = _channels_first(config)
    (height, width), channels = _spatial(_one(inputs, 3), first)
    (top, bottom), (left, right) = _pairs(config, "cropping")
    size = (height - top - bottom, width - left - right)
    if min(size) < 1:
        raise _Refused(f"crops more than its input's {height}x{width}")
    return ((channels, *size) if first else (*size, channels)), [], []


def _up_sampling2d(config: dict[str, Any], inputs: list[Shape]) -> _Sizes:
    first = _channels_first(config)
    (height, width), channels = _spatial(_one(inputs, 3), first)
    rows, columns = _counts(config, "size", (2, 2))
    size = (height * rows, width * columns)
    return ((channels, *size) if first else (*size, channels)), [], []


def _sized_image(config: dict[str, Any], inputs: list[Shape]) -> _Sizes:
    """Resizing, CenterCrop, RandomCrop: an image of the ``height`` and ``width`` the config says."""
    first = _channels_first(config)
    _, channels = _spatial(_one(inputs, 3), first)
    size = (_count(config, "height"), _count(config, "width"))
    return ((channels, *size) if first else (*size, channels)), [], []


def _broadcast(config: dict[str, Any], inputs: list[Shape]) -> _Sizes:
    """Add, Subtract, Multiply, Maximum, Minimum: inputs of one shape, or shapes that broadcast."""
    if len(inputs) < 2:
        raise _Refused(f"merges {len(inputs)} input: it needs two or more")
    rank = max(map(len, inputs))
    out = []
    for dims in zip(*((1,) * (rank - len(x)) + x for x in inputs), strict=True):
        sizes = set(dims) - {1}
        if len(sizes) > 1:
            raise _Refused(f"merges inputs of shapes that do not broadcast ({_shown(inputs)})")
        out.append(sizes.pop() if sizes else 1)
    return tuple(out), [], []


def _subtract(config: dict[str, Any], inputs: list[Shape]) -> _Sizes:
    if len(inputs) != 2:
        raise _Refused(f"subtracts {len(inputs)} inputs: it takes two")
    return _broadcast(config, inputs)


def _axis(value: Any, rank: int) -> int:
    """A config's axis (the batch's counted, negative from the end) as an index of one image's shape."""
    if type(value) is not int or not -rank <= value <= rank or value == 0:
        raise _Refused(f"has axis {_shown(value)}, not an axis of its {rank}-dimensional inputs")
    return value - 1 if value > 0 else rank + value


def _concatenate(config: dict[str, Any], inputs: list[Shape]) -> _Sizes:
    if len(inputs) < 2 or len(set(map(len, inputs))) != 1:
        raise _Refused(f"joins inputs {_shown(inputs)}: two or more of one rank")
    axis = _axis(config.get("axis", -1), len(inputs[0]))
    others = {x[:axis] + x[axis + 1 :] for x in inputs}
    if len(others) != 1:
        raise _Refused(f"joins inputs whose other dimensions differ ({_shown(inputs)})")
    x = inputs[0]
    return (*x[:axis], sum(x[axis] for x in inputs), *x[axis + 1 :]), [], []


def _reshape(config: dict[str, Any], inputs: list[Shape]) -> _Sizes:
    x = _one(inputs)
    target = config.get("target_shape")
    if not isinstance(target, list) or not all(type(n) is int and (n >= 1 or n == -1) for n in target):
        raise _Refused(f"has target_shape {_shown(target)}, not whole numbers (one may be -1)")
    known = math.prod(n for n in target if n != -1)
    size = math.prod(x)
    if target.count(-1) > 1 or (-1 in target and size % known) or (-1 not in target and known != size):
        raise _Refused(f"reshapes {_shown(x)} ({size:,} numbers) to {_shown(target)}")
    return tuple(size // known if n == -1 else n for n in target), [], []


def _axes(config: dict[str, Any], x: Shape, default: int = -1) -> list[int]:
    """A normalization's ``axis``: one or several, as indexes of one image's shape."""
    value = config.get("axis", default)
    values = value if isinstance(value, list) else [value]
    if not values:
        raise _Refused("has no axis")
    return [_axis(a, len(x)) for a in values]


def _layer_normalization(config: dict[str, Any], inputs: list[Shape]) -> _Sizes:
    x = _one(inputs)
    axes = _axes(config, x)
    shape = tuple(x[a] for a in axes)
    rms = _flag(config, "rms_scaling", False)
    count = _flag(config, "scale", True) + (_flag(config, "center", True) and not rms)
    return x, [shape] * count, []


def _group_normalization(config: dict[str, Any], inputs: list[Shape]) -> _Sizes:
    x = _one(inputs)
    [axis] = _axes(config, x)
    groups, channels = _count(config, "groups", 32), x[axis]
    if channels % groups:
        raise _Refused(f"has {groups} groups, which must divide its {channels} channels")
    count = _flag(config, "scale", True) + _flag(config, "center", True)
    return x, [(channels,)] * count, []


def _normalization(config: dict[str, Any], inputs: list[Shape]) -> _Sizes:
    """Mean and variance given in the config (constants), or adapted (variables: mean, variance, count)."""
    x = _one(inputs)
    keep = [] if config.get("axis", -1) in (None, []) else _axes(config, x)  # none: one mean for all
    shape = tuple(x[a] for a in keep)
    mean, variance = config.get("mean"), config.get("variance")
    if (mean is None) != (variance is None):
        raise _Refused("has a mean without a variance, or a variance without a mean")
    if mean is None:
        return x, [shape, shape, ()], []
    for name, value in (("mean", mean), ("variance", variance)):
        row = value if isinstance(value, list) else [value]
        if len(row) not in (1, math.prod(shape)) or not all(isinstance(n, int | float) for n in row):
            raise _Refused(f"has {name} {_shown(value)}: a number, or one per normalized feature")
    return x, [], []


_SAME_SHAPE = (
    "Dropout", "GaussianNoise", "GaussianDropout", "AlphaDropout", "Identity", "ReLU", "LeakyReLU", "ELU",
    "Softmax", "RandomFlip", "RandomTranslation", "RandomRotation", "RandomZoom", "RandomContrast",
    "RandomBrightness",
)  # fmt: skip
#: Every layer the app imports by default (InputLayer apart) and how it sizes its output and variables.
LAYER_SIZES: dict[str, _Infer] = {
    # the presets' layers (and the seed's tutorial CNN)
    "Rescaling": _rescaling,
    "Conv2D": _conv2d,
    "MaxPooling2D": _max_pooling2d,
    "BatchNormalization": _batch_normalization,
    "Activation": _same_shape,
    "GlobalMaxPooling2D": _global_max_pooling2d,
    "Flatten": _flatten,
    "Dense": _dense,
    "Permute": _permute,
    "Average": _average,
    # the common Sequential idioms and keras.applications' image families
    **dict.fromkeys(_SAME_SHAPE, _same_shape),
    "SpatialDropout2D": _spatial_rank,
    "PReLU": _prelu,
    "AveragePooling2D": _max_pooling2d,
    "GlobalAveragePooling2D": _global_max_pooling2d,
    "ZeroPadding2D": _zero_padding2d,
    "Cropping2D": _cropping2d,
    "UpSampling2D": _up_sampling2d,
    "Resizing": _sized_image,
    "CenterCrop": _sized_image,
    "RandomCrop": _sized_image,
    "DepthwiseConv2D": _depthwise_conv2d,
    "SeparableConv2D": _separable_conv2d,
    "Conv2DTranspose": _conv2d_transpose,
    "Add": _broadcast,
    "Multiply": _broadcast,
    "Maximum": _broadcast,
    "Minimum": _broadcast,
    "Subtract": _subtract,
    "Concatenate": _concatenate,
    "Reshape": _reshape,
    "LayerNormalization": _layer_normalization,
    "GroupNormalization": _group_normalization,
    "Normalization": _normalization,
}
#: The layer classes a model may use without an opt-in: those above, and the input layer.
SIZED_LAYERS = frozenset(LAYER_SIZES) | {"InputLayer"}


def _spatial(x: Shape, channels_first: bool) -> tuple[Shape, int]:
    return (x[1:], x[0]) if channels_first else (x[:2], x[2])


def _window(config: dict[str, Any], size: Shape, window: Shape, strides: Shape, dilation: Shape) -> Shape:
    """The output's height and width after a sliding window (a convolution's or a pooling's)."""
    padding = config.get("padding", "valid")
    padding = padding.lower() if isinstance(padding, str) else padding
    if padding not in ("valid", "same"):
        raise _Refused(f"has padding {_shown(padding)}, not 'valid' or 'same'")
    output = []
    for n, k, s, d in zip(size, window, strides, dilation, strict=True):
        span = d * (k - 1) + 1
        m = -(-n // s) if padding == "same" else (n - span) // s + 1
        if m < 1:
            raise _Refused(f"slides a window of {span} over {n}: its output would be empty")
        output.append(m)
    return tuple(output)


def _count(config: dict[str, Any], key: str, default: int | None = None) -> int:
    value = config.get(key, default)
    if not isinstance(value, int) or not _is_count(value):
        raise _Refused(f"has {key} {_shown(value)}, not a positive whole number")
    return value


def _counts(config: dict[str, Any], key: str, default: Shape | None = None) -> Shape:
    """A pair such as ``kernel_size``: one number for both, or two."""
    value = config.get(key)
    if value is None and default is not None:
        return default
    pair = [value, value] if _is_count(value) else value
    if not isinstance(pair, list) or len(pair) != 2 or not all(_is_count(n) for n in pair):
        raise _Refused(f"has {key} {_shown(value)}, not two positive whole numbers")
    return tuple(pair)


def _bias(config: dict[str, Any], units: int) -> list[Shape]:
    return [(units,)] if _flag(config, "use_bias", True) else []


def _lora(config: dict[str, Any], inputs: Shape, outputs: int) -> list[Shape]:
    """The two factors of a LoRA rank that Keras adds to a kernel of shape ``(*inputs, outputs)``."""
    if not config.get("lora_rank"):
        return []
    rank = _count(config, "lora_rank")
    return [(*inputs, rank), (rank, outputs)]


def _flag(config: dict[str, Any], key: str, default: bool) -> bool:
    value = config.get(key, default)
    if not isinstance(value, bool):
        raise _Refused(f"has {key} {_shown(value)}, not true or false")
    return value


def _channels_first(config: dict[str, Any]) -> bool:
    value = config.get("data_format")
    if value not in (None, "channels_last", "channels_first"):
        raise _Refused(f"has data_format {_shown(value)}")
    return value == "channels_first"


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _shown(value: Any) -> str:
    return _clip(repr(value))


def _clip(text: str) -> str:
    """Text short enough for a message (a shape may hold numbers of thousands of digits)."""
    return text if len(text) <= 60 else text[:57] + "..."
