"""Faster training under TensorFlow: a view of the model with faster kernels, the model unchanged.

On the 2-core Xeon (AMX, mixed bfloat16) two of TensorFlow's training ops held ``accurate`` back:

- Keras 3's ``BatchNormalization`` trains with separate ops (a cast to float32, mean, variance, then the
  normalisation), where TensorFlow has one fused kernel (oneDNN's on a CPU) for all of it;
- oneDNN's weight gradient of a 3x3 convolution with many channels on a small feature map (256 channels
  on 7x7 and 3x3 maps here) ran 5-10x slower than the same convolution's forward pass; as nine matrix
  products, one per kernel offset, it runs 1.6x (7x7) to 3.7x (3x3) faster. With fewer channels or on
  larger maps oneDNN's own is as fast or faster and stays (:func:`matmul_grad_pays`).

On a CPU with AVX2 and no AVX-512 (float32), the convolutions on 3x3 maps ran at an eighth to a third of
oneDNN's speed on larger maps, through its kernels and through the matrix products alike: there a
convolution on a map that small trains as one matrix product with the convolution written out
(:class:`WrittenOutConv`, :func:`written_out_pays`).

A convolution that is one matrix product (a 1x1 kernel; any kernel with "same" padding on a 1x1 map, of
which only the centre tap meets the pixel), as imported networks have them (ResNet's and MobileNet's 1x1
convolutions on a 32x32 image's last 4x4 to 1x1 maps), trained through TensorFlow's convolution kernels
at a tenth to a fiftieth of the speed of the same product on the smallest maps: on maps of at most 16
pixels it trains as that product (:class:`PointwiseConv`, :func:`pointwise`).

Those lines differ from one kind of CPU to the next, so on maps of at most 64 pixels the view does not
trust them: it times each way on this machine once per shape and keeps the answer (:mod:`.convprobe`); the
rules decide where the probe is turned off.

:func:`for_training` gives the model to train: a view that shares every layer and variable with the model,
except that BatchNorm layers are called through :class:`FusedBatchNorm` and such convolutions through
:class:`MatmulGradConv` or :class:`WrittenOutConv`, each using the wrapped layer's own weights. Training the
view trains the model; the model itself (what is validated, saved and returned) holds nothing but built-in
Keras layers, so saved files are the same as without this. Measured on the Xeon above
(``benchmarks/fast_kernels.py``), a whole training step of ``accurate`` (batch 512) ran at 1,014 images/s with
Keras' layers, 1,547 with the fused BatchNorm (1.53x), 1,784 with both (1.76x); ``fast``'s (batch 256) at
3,906, 4,802 and 5,057 (1.29x).
Other backends get the model back unchanged (XLA fuses these ops itself).
"""

from __future__ import annotations

import functools
from typing import Any

import keras

from . import convprobe
from .precision import gpu_visible

# Where the matmul weight gradient pays (:func:`matmul_pays`): with AMX, where input channels x filters >=
# this x the map's pixels; on a CPU with AVX512-BF16 but no AMX, on maps of at most this many pixels.
CHANNELS_PER_PIXEL = 512
SMALL_MAP_PIXELS = 64
# Where the whole convolution as one matrix product pays (:func:`written_out_pays`): maps of at most this
# many pixels.
WRITTEN_OUT_PIXELS = 9
# Where the probe tries it (:func:`probe_ways`): maps of at most 5x5, a matrix of at most 2^23 entries
# (32 MiB in float32; 3x3 maps with 256 channels in and out: 5.3 M).
WRITTEN_OUT_PROBE_PIXELS = 25
WRITTEN_OUT_ELEMENTS = 2**23
# Where a convolution that is one matrix product trains as one (:func:`pointwise`): input maps of at most
# this many pixels.
POINTWISE_PIXELS = 16
# The ways' names, as the probe keeps them and a run's metadata says them (besides oneDNN's).
MATMULS, WRITTEN_OUT = "matmuls", "written out"


def matmul_pays(
    channels: int, filters: int, pixels: int, dtype: str = "bfloat16", *, flags: set[str] | None = None
) -> bool:
    """Whether nine matrix products beat oneDNN's weight gradient for a 3x3 convolution of this shape,
    computed in ``dtype``, on a CPU with these /proc/cpuinfo flags (default: this one's), as measured
    (:func:`matmul_grad_pays`). In float32 never: on the Xeon, with AMX and with oneDNN held below it,
    they made ``fast``'s and ``accurate``'s steps 0.91-0.99x as fast alone and 0.97-1.00x beside the
    fused BatchNorm (``benchmarks/fast_kernels.py --precision float32``)."""
    from .precision import cpu_flags

    if dtype == "float32":
        return False
    flags = cpu_flags() if flags is None else flags
    if "avx512_bf16" in flags and not flags >= {"amx_bf16", "amx_tile"}:
        return pixels <= SMALL_MAP_PIXELS
    return channels * filters >= CHANNELS_PER_PIXEL * pixels


def written_out_pays(pixels: int, dtype: str = "float32", *, flags: set[str] | None = None) -> bool:
    """Whether a 3x3 convolution on a map of this many pixels, computed in ``dtype`` on a CPU with these
    flags (default: this one's), trains faster as one matrix product with the convolution written out
    (:class:`WrittenOutConv`), as measured: in float32 on a CPU with AVX2 and no AVX-512 (an AMD EPYC of
    family 25 model 1, batch 256, one training step's forward pass and both gradients, oneDNN's time over
    the product's, ``benchmarks/conv_crossover.py``): on 3x3 maps 1.25-1.38x (64x64 channels), 2.51-3.30x
    (128x128), 1.75-1.84x (256x256); on 5x5 0.32-0.33x, on 7x7 0.11-0.15x. Where it was not measured
    (AVX-512 CPUs, bfloat16), oneDNN's stays."""
    from .precision import cpu_flags

    flags = cpu_flags() if flags is None else flags
    return dtype == "float32" and "avx2" in flags and "avx512f" not in flags and pixels <= WRITTEN_OUT_PIXELS


def for_training(
    model: keras.Model,
    *,
    batchnorm: bool = True,
    convolutions: bool | None = None,
    written_out: bool = True,
    batch: int | None = None,
    probe: bool | None = None,
) -> keras.Model:
    """``model``, or under TensorFlow a view of it that trains with the faster kernels.

    The view is compiled like ``model`` (same loss and metrics, and the very same optimizer object, so a
    checkpoint of ``model`` holds the optimizer's state); ``model`` must be compiled first. ``batchnorm``
    and ``convolutions`` choose which of the two kinds of kernel the view uses
    (``benchmarks/fast_kernels.py``), ``written_out`` whether the convolutions on small maps may be one
    matrix product; ``convolutions=None``: only where no GPU is visible (the matrix products were measured
    on a CPU; on a GPU, cuDNN's own stay). Which way trains each convolution on a small map is measured
    on this machine at ``batch`` (the training batch) once and kept (:mod:`.convprobe`), unless ``probe``
    is False (None: unless ``JUPYTER_CIFAR_KERNEL_PROBE=0``); elsewhere, and without the probe, the rules
    measured on each kind of CPU decide (:func:`written_out_pays`, :func:`matmul_grad_pays`).
    """
    if keras.backend.backend() != "tensorflow":
        return model
    if convolutions is None:
        convolutions = not gpu_visible()
    if probe is None:
        probe = convprobe.enabled()
    if not any(
        (batchnorm and fusable(layer)) or (convolutions and (plain_3x3(layer) or pointwise(layer)))
        for layer in model.layers
    ):
        return model
    if not model.compiled:
        raise ValueError(
            f"fastview.for_training: compile {model.name!r} first (its view trains with its optimizer)"
        )

    def faster(layer: keras.layers.Layer) -> keras.layers.Layer | None:
        if batchnorm and fusable(layer):
            return FusedBatchNorm(layer)
        if convolutions and not plain_3x3(layer) and pointwise(layer):
            return PointwiseConv(layer)
        if not (convolutions and plain_3x3(layer)):
            return None
        if probe and pixels(layer) <= convprobe.PROBE_PIXELS:
            ways = probe_ways(layer, written_out)
            way = ways[convprobe.fastest(layer, ways, batch)]
            return None if way is None else way(layer)
        if written_out and written_out_pays(pixels(layer), layer.compute_dtype):
            return WrittenOutConv(layer)
        if matmul_grad_pays(layer):
            return MatmulGradConv(layer)
        return None

    swaps = {id(layer): new for layer in model.layers if (new := faster(layer)) is not None}
    if not swaps:
        return model
    view = keras.models.clone_model(model, clone_function=lambda layer: swaps.get(id(layer), layer))
    config = keras.saving.deserialize_keras_object(model.get_compile_config())
    view.compile(**{**config, "optimizer": model.optimizer})
    return view


def kernels(view: keras.Model) -> dict[str, str]:
    """How ``view`` (from :func:`for_training`) trains each plain 3x3 convolution, by the model's layer
    name: TensorFlow's own kernels (``"oneDNN"`` on a CPU, ``"cuDNN"`` where a GPU is visible),
    ``"matmuls"`` (:class:`MatmulGradConv`) or ``"written out"`` (:class:`WrittenOutConv`); what a run
    keeps with its model, since its speed turns on them. Empty under another backend (XLA's choice)."""
    if keras.backend.backend() != "tensorflow":
        return {}
    own = "cuDNN" if gpu_visible() else convprobe.ONEDNN
    chosen = {}
    for layer in view.layers:
        conv = getattr(layer, "conv", layer)
        if plain_3x3(conv):
            chosen[conv.name] = WAY_NAMES.get(type(layer), own)
    return chosen


def probe_ways(layer: keras.layers.Layer, written_out: bool = True) -> dict[str, convprobe.Way]:
    """The ways :mod:`.convprobe` times for a plain 3x3 convolution: oneDNN's, the matmul weight gradient,
    and written out where its matrix is small enough to be worth a try (maps of at most
    :data:`WRITTEN_OUT_PROBE_PIXELS` pixels, at most :data:`WRITTEN_OUT_ELEMENTS` entries)."""
    ways: dict[str, convprobe.Way] = {convprobe.ONEDNN: None, MATMULS: MatmulGradConv}
    n, channels = pixels(layer), layer.input.shape[-1]
    if (
        written_out
        and n <= WRITTEN_OUT_PROBE_PIXELS
        and n * channels * n * layer.filters <= WRITTEN_OUT_ELEMENTS
    ):
        ways[WRITTEN_OUT] = WrittenOutConv
    return ways


def fusable(layer: keras.layers.Layer) -> bool:
    """A BatchNormalization layer the fused kernel computes exactly: the last axis, no renorm or sync."""
    return (
        type(layer) is keras.layers.BatchNormalization
        and len(layer.input.shape) == 4
        and layer.axis in (-1, 3)
        and layer.center
        and not layer.renorm
        and not layer.synchronized
    )


def matmul_grad_pays(layer: keras.layers.Layer) -> bool:
    """A plain 3x3 "same" convolution (no bias, no activation) with many channels for its map's size.

    The crossover, measured on the 2-core Xeon with AMX (bfloat16, batch 256-512), oneDNN's time / the
    matmuls': 7x7 map: 64x64 channels 0.61, 64x128 0.80, 128x128 0.93, 256x256 1.63-1.73; 3x3 map: 128x128
    1.57-1.78, 256x256 3.72; 15x15 map, 64x256: 0.46. In all of these, the matmuls win exactly where
    input channels x filters >= 512 x the map's pixels. On a 2-core AMD EPYC with AVX512-BF16 and no AMX
    (bfloat16, batch 256; ``benchmarks/conv_crossover.py``) the line is the map's size, whatever the
    channels: 15x15: 24x24 0.76, 64x256 0.89-0.94, 128x128 0.88-0.91, 128x256 0.92; 7x7: 24x64 1.07,
    32x128 1.20, 64x64 1.18-1.28, 64x128 1.38-1.51, 128x128 1.09-1.24, 256x256 1.25-1.29; 3x3: 64x64
    1.31-1.46, 128x128 1.40-1.46, 256x256 1.69-1.85 (:func:`matmul_pays`).
    """
    return plain_3x3(layer) and matmul_pays(
        layer.input.shape[-1], layer.filters, pixels(layer), layer.compute_dtype
    )


def plain_3x3(layer: keras.layers.Layer) -> bool:
    """A Conv2D layer with a 3x3 kernel, "same" padding, no stride, dilation, groups, bias or activation,
    on an input of known size (what :class:`MatmulGradConv` and :class:`WrittenOutConv` compute)."""
    if type(layer) is not keras.layers.Conv2D:
        return False
    _, height, width, _ = layer.input.shape
    return (
        layer.kernel_size == (3, 3)
        and layer.strides == (1, 1)
        and layer.dilation_rate == (1, 1)
        and layer.padding == "same"
        and layer.groups == 1
        and layer.data_format == "channels_last"
        and not layer.use_bias
        and layer.activation is keras.activations.linear
        and height is not None
        and width is not None
    )


def pointwise(layer: keras.layers.Layer) -> bool:
    """A Conv2D layer that is one matrix product, on a map of at most :data:`POINTWISE_PIXELS` pixels:
    a 1x1 kernel (with a stride, every s-th pixel), or any kernel with "same" padding on a 1x1 map; no
    dilation or groups (a bias and an activation are fine). What :class:`PointwiseConv` computes.

    Measured on a 2-core AMD EPYC of family 25 model 1 (AVX2, float32; ``benchmarks/pointwise.py``), one
    training step of the convolution alone (forward pass and every gradient), TensorFlow's time over the
    product's at batch 32 and 256: 1x1 maps, 512 to 2048 channels 12.7x and 40.9x, 2048 to 512 9.1x and
    30.6x; 2x2 with stride 2, 1024 to 2048 15.1x and 48.3x; 2x2, 256 to 1024 6.0x and 13.0x; 4x4 with
    stride 2, 512 to 1024 4.6x and 7.2x; 4x4, 256 to 1024 2.6x and 3.1x; then even: 8x8 0.97-1.19x,
    16x16 0.96-1.10x, 32x32 0.96-0.97x. A training step of Keras' ResNet50 for 32x32 images (batch 32)
    ran 3.95x as fast with its 30 such convolutions as products, MobileNetV2's (28) 1.36x. The losses
    are TensorFlow's weight gradients on the smallest maps, whatever the CPU's vector units (oneDNN's
    forward pass of the same shapes ran at the product's speed), so the line is kept on every CPU.
    """
    if type(layer) is not keras.layers.Conv2D:
        return False
    _, height, width, _ = layer.input.shape
    if height is None or width is None or height * width > POINTWISE_PIXELS:
        return False
    one_pixel = height == width == 1 and layer.padding == "same"
    return (
        (layer.kernel_size == (1, 1) or one_pixel)
        and layer.dilation_rate == (1, 1)
        and layer.groups == 1
        and layer.data_format == "channels_last"
    )


def pixels(layer: keras.layers.Layer) -> int:
    """The number of pixels of a convolution's input map."""
    _, height, width, _ = layer.input.shape
    return int(height * width)


class FusedBatchNorm(keras.layers.Layer):
    """Calls a BatchNormalization layer, through TensorFlow's fused kernel when training.

    Batch statistics, moving averages (Keras' biased variance, Keras' momentum) and gradients are those of
    Keras' layer. In inference the layer itself runs. The kernel stays in bfloat16 / float16 where the
    channels are a multiple of 16; otherwise it runs in float32 (oneDNN's bfloat16 kernel was 6x slower
    than Keras' ops at 24 channels, and 3-4x faster at 16, 32, 48 or 64).
    """

    def __init__(self, norm: keras.layers.BatchNormalization, **kwargs: Any) -> None:
        super().__init__(name=f"{norm.name}_fused", dtype=norm.dtype_policy, **kwargs)
        self.norm = norm

    def call(self, inputs: Any, training: bool | None = None, mask: Any = None) -> Any:
        import tensorflow as tf

        norm = self.norm
        if not (training and norm.trainable) or mask is not None:
            return norm(inputs, training=training, mask=mask)
        channels = inputs.shape[-1]
        x = inputs if inputs.dtype == tf.float32 or channels % 16 == 0 else tf.cast(inputs, tf.float32)
        scale = norm.gamma if norm.scale else tf.ones([channels], tf.float32)
        y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            x, scale, norm.beta, epsilon=norm.epsilon, data_format="NHWC", is_training=True
        )
        # The kernel's variance is the unbiased one; Keras' moving variance averages the biased one.
        n = tf.cast(tf.size(x) // channels, tf.float32)
        variance = variance * (n - 1) / n
        m = norm.momentum
        norm.moving_mean.assign(norm.moving_mean * m + mean * (1 - m))
        norm.moving_variance.assign(norm.moving_variance * m + variance * (1 - m))
        return tf.cast(y, inputs.dtype)


class MatmulGradConv(keras.layers.Layer):
    """Calls a 3x3 Conv2D layer; in training its kernel's gradient is nine matrix products.

    For kernel offset (i, j), the gradient is the input shifted by that offset (zero-padded like "same"),
    flattened to (pixels, input channels), transposed and multiplied by the output's gradient flattened to
    (pixels, output channels). The forward pass and the input's gradient are TensorFlow's own.
    """

    def __init__(self, conv: keras.layers.Conv2D, **kwargs: Any) -> None:
        super().__init__(name=f"{conv.name}_matmul_grad", dtype=conv.dtype_policy, **kwargs)
        self.conv = conv

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        import tensorflow as tf

        if not training:
            return self.conv(inputs)
        kernel = tf.cast(self.conv.kernel, inputs.dtype)
        _, height, width, channels = inputs.shape
        filters = kernel.shape[-1]

        @tf.custom_gradient
        def convolve(x: tf.Tensor, k: tf.Tensor) -> Any:
            def gradients(dy: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
                dx = tf.compat.v1.nn.conv2d_backprop_input(tf.shape(x), k, dy, [1, 1, 1, 1], "SAME")
                padded = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
                dy_rows = tf.reshape(dy, [-1, filters])
                dk = [
                    tf.matmul(
                        tf.reshape(padded[:, i : i + height, j : j + width], [-1, channels]),
                        dy_rows,
                        transpose_a=True,
                    )
                    for i in range(3)
                    for j in range(3)
                ]
                return dx, tf.reshape(tf.stack(dk), [3, 3, channels, filters])

            return tf.nn.conv2d(x, k, 1, "SAME"), gradients

        return convolve(inputs, kernel)


class WrittenOutConv(keras.layers.Layer):
    """A plain 3x3 "same" convolution on a small map, trained as one matrix product.

    On a map of ``n`` pixels the convolution is linear in its input: written out, it is one
    (``n`` x channels) by (``n`` x filters) matrix whose block for input pixel ``q`` and output pixel ``p``
    is the kernel's offset that takes ``q`` to ``p``, or zero where none does. The layer builds that
    matrix from the kernel each step (an einsum with a constant 0/1 tensor of which offset joins which two
    pixels) and multiplies the flattened input by it: on a 3x3 map 81 blocks where the convolution has 49,
    but one large product instead of oneDNN's small-map kernels (:func:`written_out_pays`). Its gradients
    are TensorFlow's own, of the product and the einsum; inference goes through the convolution itself.
    """

    def __init__(self, conv: keras.layers.Conv2D, **kwargs: Any) -> None:
        super().__init__(name=f"{conv.name}_written_out", dtype=conv.dtype_policy, **kwargs)
        self.conv = conv

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        import tensorflow as tf

        if not training:
            return self.conv(inputs)
        _, height, width, channels = inputs.shape
        filters = self.conv.filters
        kernel = tf.reshape(tf.cast(self.conv.kernel, inputs.dtype), [9, channels, filters])
        matrix = tf.einsum("qpk,kcf->qcpf", tf.constant(offsets(height, width), inputs.dtype), kernel)
        n = height * width
        flat = tf.reshape(inputs, [-1, n * channels]) @ tf.reshape(matrix, [n * channels, n * filters])
        return tf.reshape(flat, [-1, height, width, filters])


class PointwiseConv(keras.layers.Layer):
    """A convolution that is one matrix product (:func:`pointwise`), trained as that product.

    A 1x1 kernel with stride ``s`` takes every ``s``-th pixel of each row and column ("same" and "valid"
    padding take the same ones for a 1x1 kernel) and multiplies each pixel's channels by the kernel's one
    matrix; on a 1x1 map with "same" padding only the kernel's centre tap (TensorFlow pads the lesser half
    before) meets the pixel. Its bias and activation follow. Gradients are TensorFlow's own, of the
    product; inference goes through the convolution itself.
    """

    def __init__(self, conv: keras.layers.Conv2D, **kwargs: Any) -> None:
        super().__init__(name=f"{conv.name}_pointwise", dtype=conv.dtype_policy, **kwargs)
        self.conv = conv

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        import tensorflow as tf

        conv = self.conv
        if not training:
            return conv(inputs)
        kh, kw = conv.kernel_size
        x = inputs[:, :: conv.strides[0], :: conv.strides[1], :] if kh == kw == 1 else inputs
        _, height, width, channels = x.shape
        kernel = tf.cast(conv.kernel[(kh - 1) // 2, (kw - 1) // 2], inputs.dtype)
        y = tf.reshape(tf.matmul(tf.reshape(x, [-1, channels]), kernel), [-1, height, width, conv.filters])
        if conv.use_bias:
            y = y + tf.cast(conv.bias, y.dtype)
        return conv.activation(y)


@functools.cache
def offsets(height: int, width: int) -> Any:
    """``S[q, p, k]``: 1 where a 3x3 "same" convolution takes input pixel ``q`` to output pixel ``p``
    through kernel offset ``k`` (row-major: ``3 * di + dj``), else 0."""
    import numpy as np

    table = np.zeros((height * width, height * width, 9), np.float32)
    for i in range(height):
        for j in range(width):
            for di in range(3):
                for dj in range(3):
                    y, x = i + di - 1, j + dj - 1
                    if 0 <= y < height and 0 <= x < width:
                        table[y * width + x, i * width + j, 3 * di + dj] = 1
    table.setflags(write=False)  # one table per map size, shared
    return table


WAY_NAMES = {MatmulGradConv: MATMULS, WrittenOutConv: WRITTEN_OUT}  # :func:`kernels`' names
