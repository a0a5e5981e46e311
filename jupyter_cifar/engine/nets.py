"""Network presets by name: the seed's tutorial CNN, kept for comparison, and better ones.

A preset is a builder plus the training recipe that suits it (optimizer, learning rate, batch size,
epochs), so that ``jupyter cifar train --preset NAME`` and the Train panel need nothing else. Models take
raw 0..255 pixels (a ``Rescaling`` layer is part of the network) so that a saved model is complete:
whoever loads it needs no preprocessing code of ours. Everything is built from Keras 3's
backend-agnostic layers, so the presets also run under ``KERAS_BACKEND=jax`` or ``torch``.

``fast`` (the default) and ``accurate`` follow airbench (Keller Jordan): a frozen 2x2 patch-whitening
conv set from the training images, three conv/max-pool/BatchNorm groups, a scaled linear head, label
smoothing 0.2, Nesterov SGD with warm-up and cosine decay, flips that alternate each epoch and 2-pixel
translations (numpy, in the trainer: :class:`jupyter_cifar.engine.batches.Batches`). ``accurate`` also gives
BatchNorm's offsets 64 times the learning rate (airbench's bias scaler, through Keras' ``MultiOptimizer``)
and averages each test image over its mirror image and 1-pixel shifts inside the saved model
(:func:`jupyter_cifar.engine.tta.with_tta`).
``fast``, ``accurate`` and ``balanced`` (``accurate`` for 5 epochs in smaller batches) train their
convolutions' kernels with Muon (:mod:`jupyter_cifar.engine.muon`, airbench94_muon's optimizer), which gets
more from each epoch than SGD; the other weights keep SGD.

Speed settings (measured by ``benchmarks/backends.py`` and ``benchmarks/time_to_accuracy.py``):

- the backend: ``KERAS_BACKEND`` (read once, when Keras is first imported). TensorFlow, the default, was
  the fastest on the 2-core Xeon (AMX) CPU these presets were tuned on; the same code runs on jax and torch.
- precision: ``TrainConfig.precision`` / :func:`jupyter_cifar.engine.precision.resolve_precision`. "auto" uses
  mixed float16 on a GPU and mixed bfloat16 on CPUs with bfloat16 units (AMX, or AVX512-BF16 under
  TensorFlow), float32 elsewhere.
- threads: TensorFlow reads ``TF_NUM_INTRAOP_THREADS`` / ``TF_NUM_INTEROP_THREADS`` and torch
  ``OMP_NUM_THREADS`` at start-up; the defaults (one thread per core) are right on an idle machine.
- kernels: under TensorFlow the trainer fits a view of the model whose BatchNorm layers run TensorFlow's
  fused kernel and whose many-channel convolutions on small maps compute their kernel's gradient as
  matrix products (:mod:`jupyter_cifar.engine.fastview`; ``accurate`` trains 1.76x faster on that CPU); the
  model itself keeps Keras' layers.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import BadParameter
from .precision import resolve_precision

if TYPE_CHECKING:
    import keras

# Keras is imported inside the builders: the registry (names, recipes) is readable without it, so the
# command line can list presets and check arguments before TensorFlow loads.

INPUT_SHAPE = (32, 32, 3)
WHITEN_PATCH = 2  # the whitening conv's kernel size


@dataclass(frozen=True)
class Preset:
    """A named network with the recipe it trains best with."""

    name: str
    description: str
    build: Callable[[int], keras.Model]
    epochs: int
    batch_size: int
    learning_rate: float
    optimizer: str = "adam"  # "adam" or "sgd" (with Nesterov momentum)
    schedule: str = "constant"  # or "cosine": linear warm-up over the first fifth, then cosine decay
    label_smoothing: float = 0.0
    outputs: str = "probabilities"  # or "logits"
    # Augmentation done by the trainer's numpy pipeline (the model sees it only in training):
    # "none", "flip" (random horizontal flips), or "flip-translate" (flips that alternate each epoch, as
    # in airbench, plus random translations of up to ``translate`` pixels with reflected borders).
    augment: str = "none"
    translate: int = 2
    color: float = 0.0  # colour jitter's strength (:class:`jupyter_cifar.engine.batches.Batches`)
    momentum: float = 0.9  # SGD's
    weight_decay: float = 0.0  # decoupled (Keras' ``weight_decay``), scaled by the learning rate
    warmup: float = 0.2  # the warm-up's share of the steps ("cosine" schedule)
    # "auto": mixed_float16 on a GPU, mixed_bfloat16 on a CPU with bf16 matrix units (AMX / AVX512-BF16),
    # float32 elsewhere. Trained weights are float32 either way; a model is saved computing in its policy
    # (mixed_float16 as float32: :func:`as_float32`), and trained further in the one resolved then.
    precision: str = "auto"
    # Test-time augmentation built into the trained model (:func:`jupyter_cifar.engine.tta.with_tta`): "none",
    # "flip" (the image and its mirror image) or "flip-translate" (also both shifted by one pixel each
    # way, as airbench does).
    tta: str = "none"
    # BatchNorm offsets ("beta") learn this many times faster than the other weights (airbench's 64).
    bias_lr: float = 1.0
    # "muon": the convolutions' kernels train with :class:`jupyter_cifar.engine.muon.KernelMuon`
    # (airbench94_muon's optimizer) at ``muon_lr`` decaying linearly to zero, with ``muon_momentum``; the
    # optimizer above keeps the other weights. "sgd": one optimizer for all.
    kernels: str = "sgd"
    muon_lr: float = 0.24
    muon_momentum: float = 0.6
    # airbench's lookahead (:mod:`jupyter_cifar.engine.lookahead`): every 5 steps the weights are pulled
    # towards a slow average of themselves, harder as training ends; the last step sets them to it.
    lookahead: bool = False
    # Small training sets: unless a batch size is asked for, batches shrink so that an epoch has at least
    # this many steps (the learning rate follows; 0: never).
    min_steps: int = 0


def _tutorial(num_classes: int) -> keras.Model:
    """The TensorFlow "Convolutional Neural Network (CNN)" tutorial's network, as the seed used it.

    Only the input scaling (the tutorial divides by 255 before ``fit``) moved into the model.
    """
    import keras
    from keras import layers

    inputs = keras.Input(INPUT_SHAPE, name="image")
    x = layers.Rescaling(1 / 255, name="scale")(inputs)
    x = layers.Conv2D(32, (3, 3), activation="relu")(x)
    x = layers.MaxPooling2D((2, 2))(x)
    x = layers.Conv2D(64, (3, 3), activation="relu")(x)
    x = layers.MaxPooling2D((2, 2))(x)
    x = layers.Conv2D(64, (3, 3), activation="relu")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(64, activation="relu")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="tutorial")


def _whitened_net(
    num_classes: int,
    widths: tuple[int, int, int],
    name: str,
    *,
    activation: str = "relu",
    bn_scale: bool = True,
) -> keras.Model:
    """airbench's network shape for any widths: a frozen 2x2 patch-whitening conv, three conv groups.

    Each group is conv -> max-pool -> BatchNorm -> act -> conv -> BatchNorm -> act, halving the
    resolution (31 -> 15 -> 7 -> 3); a global max-pool and one dense layer classify. The ``whiten``
    layer's weights come from the training images (:func:`init_from_data`); it is not trained.
    Multiply-adds per image forward: about 118 M at airbench's widths (64, 256, 256). ``bn_scale=False``
    leaves out BatchNorm's scales (airbench freezes them at 1).

    ReLU by default, not airbench's GELU: on the 2-core CPU GELU's elementwise work made training 1.47x
    slower (637 against 935 images/s at full width), which costs more epochs than GELU gains per epoch.
    """
    import keras
    from keras import layers

    inputs = keras.Input(INPUT_SHAPE, name="image")
    x = layers.Rescaling(1 / 255, name="scale")(inputs)
    x = layers.Conv2D(2 * WHITEN_PATCH**2 * 3, WHITEN_PATCH, name="whiten", trainable=False)(x)
    x = layers.Activation(activation, name="whiten_act")(x)
    for i, filters in enumerate(widths):
        block = f"block{i + 1}"
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{block}_conv1")(x)
        x = layers.MaxPooling2D(2, name=f"{block}_pool")(x)
        x = layers.BatchNormalization(momentum=0.6, epsilon=1e-5, scale=bn_scale, name=f"{block}_bn1")(x)
        x = layers.Activation(activation, name=f"{block}_act1")(x)
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{block}_conv2")(x)
        x = layers.BatchNormalization(momentum=0.6, epsilon=1e-5, scale=bn_scale, name=f"{block}_bn2")(x)
        x = layers.Activation(activation, name=f"{block}_act2")(x)
    x = layers.GlobalMaxPooling2D(name="pool")(x)
    x = layers.Dense(num_classes, use_bias=False, name="classify")(x)
    x = layers.Rescaling(1 / 8, name="logits")(x)  # airbench's 1/9: small logits at the start
    outputs = layers.Activation("softmax", dtype="float32", name="probabilities")(x)
    model = keras.Model(inputs, outputs, name=name)
    for layer in model.layers:
        if layer.name.endswith(("_conv1", "_conv2")):
            _start_as_identity(layer)
    return model


def _start_as_identity(conv: keras.layers.Layer) -> None:
    """Let a 3x3 conv's first filters pass their input channel through (airbench's partial dirac init).

    The other filters keep their random start. A signal flows through the fresh network unchanged in
    part, which trains faster early on: +1 point after `fast`'s 2 epochs (0.774 against 0.764, 2 seeds).
    """
    (kernel,) = conv.get_weights()
    size, _, inputs, outputs = kernel.shape
    n = min(inputs, outputs)
    kernel[:, :, :, :n] = 0
    kernel[size // 2, size // 2, np.arange(n), np.arange(n)] = 1
    conv.set_weights([kernel])


# The whitened presets' widths (recipe_sweep rebuilds them with other activations).
WIDTHS: dict[str, tuple[int, int, int]] = {"fast": (24, 64, 128), "accurate": (64, 256, 256)}


def _fast(num_classes: int) -> keras.Model:
    """airbench's shape at widths (24, 64, 128): 16.3 M multiply-adds per image (the tutorial's: 4.5 M)."""
    return _whitened_net(num_classes, WIDTHS["fast"], "fast")


def _accurate(num_classes: int) -> keras.Model:
    """airbench's shape at its full widths (64, 256, 256): about 118 M multiply-adds per image."""
    return _whitened_net(num_classes, WIDTHS["accurate"], "accurate", bn_scale=False)


def _balanced(num_classes: int) -> keras.Model:
    """accurate's network, named for the preset that trains it (a model's name is its architecture)."""
    return _whitened_net(num_classes, WIDTHS["accurate"], "balanced", bn_scale=False)


# What the whitened presets share: airbench's recipe (Nesterov SGD, warm-up then cosine decay, label
# smoothing, alternating flips and 2-pixel translations), at least 64 steps an epoch on small subsets, and
# airbench94_muon's Muon for the convolutions' kernels (each preset's comment says what it gave there).
# Measured on `fast` with SGD (2 epochs, 2 seeds each): learning rate 0.4 with momentum 0.9 gave 0.774; 0.8
# with 0.9, 1.0 with 0.85 and 1.5 with 0.85 all 0.784-0.786 (airbench's own: about 1.5 with 0.85 at batch
# 1024).
_AIRBENCH_RECIPE: dict[str, Any] = {
    "learning_rate": 1.0,
    "momentum": 0.85,
    "optimizer": "sgd",
    "schedule": "cosine",
    "label_smoothing": 0.2,
    "augment": "flip-translate",
    "weight_decay": 5e-4,
    "warmup": 0.15,
    "min_steps": 64,
    "kernels": "muon",
    "muon_lr": 0.12,
}

# accurate's and balanced's: airbench's weight decay and BatchNorm-offset rate, test-time mirror and shifts.
_WIDE_RECIPE: dict[str, Any] = {
    **_AIRBENCH_RECIPE,
    "weight_decay": 2e-3,
    "bias_lr": 64,
    "tta": "flip-translate",
}

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            name="fast",
            description="airbench-style patch-whitened net, narrow (16 M multiply-adds per image), 2 epochs "
            "with flips and translations, its convolutions trained by Muon (the default: about 0.81 test "
            "accuracy)",
            build=_fast,
            epochs=2,
            batch_size=256,
            # Measured on an AMD EPYC (AVX512-BF16, 2 cores; recipe_sweep --base fast, seeds 0 and 1): SGD
            # for everything 0.7838 and 0.7923; Muon for the kernels at 0.12, 0.8099 and 0.8145 (+2.4
            # points), 4-12 % fewer images a second; at 0.24, 0.8010 (seed 0).
            **_AIRBENCH_RECIPE,
        ),
        Preset(
            name="accurate",
            description="airbench's patch-whitened net at full width (118 M multiply-adds per image), 15 "
            "epochs with flips and translations, its convolutions trained by Muon, test-time mirroring and "
            "shifts (about 0.91)",
            build=_accurate,
            epochs=15,
            batch_size=512,
            # Measured on one H100 (9 epochs, ReLU, SGD): weight decay 2e-3 and 64x BatchNorm-offset learning
            # rate 0.894 and 0.898 (2 seeds) against 0.892 and 0.890 with neither; flip-translate TTA
            # another +0.1-0.2 over mirroring alone. Epochs (3 seeds each): 9: 0.899, 12: 0.905, 13: 0.905,
            # 14: 0.908, 15: 0.909 [0.908-0.909], 16: 0.910. Then on a 2-core Xeon with AMX, 15 epochs: SGD
            # for everything 0.9060-0.9073 (3 seeds); Muon for the kernels at 0.12, 0.9134 and 0.9100
            # (seeds 0 and 1; recipe_sweep's accurate+muon+mlr0.12).
            **_WIDE_RECIPE,
        ),
        Preset(
            name="balanced",
            description="accurate's network and recipe for 5 epochs in batches of 384, its convolutions "
            "trained by Muon (airbench94_muon's optimizer), test-time mirroring and shifts (about 0.895 in "
            "a third of accurate's time)",
            build=_balanced,
            epochs=5,
            batch_size=384,
            # Measured on an AMD EPYC (AVX512-BF16, 2 cores; recipe_sweep, 5 epochs, seeds 0 and 1): SGD alone
            # 0.8784 and 0.8787; Muon for the kernels at 0.24 (airbench's rate at batch 2000) 0.8876 (seed 0);
            # at 0.12, 0.8952 and 0.8901 (+1.4 points), 1 % slower per image; in batches of 384 instead of
            # 512 (a third more steps), 0.8982 and 0.8926 (+0.3), 1.5 % slower. Not kept (seed 0): Muon at
            # 0.16 0.8963, Muon's momentum 0.8 0.8909, lookahead -0.1. On a Xeon with AMX (seeds 0 and 1):
            # colour jitter 0.13 (hiverge's) 0.8927 and 0.8947 against 0.8947 and 0.8919 without, level.
            **_WIDE_RECIPE,
        ),
        Preset(
            name="tutorial",
            description="the CNN of TensorFlow's image classification tutorial (about 0.70 after 10 epochs)",
            build=_tutorial,
            epochs=10,
            batch_size=32,
            learning_rate=1e-3,
            optimizer="adam",
            outputs="logits",
            precision="float32",
        ),
    )
}
DEFAULT_PRESET = "fast"


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        known = ", ".join(PRESETS)
        raise BadParameter("--preset", f"unknown preset {name!r} (known: {known})") from None


def build_model(
    preset: str = DEFAULT_PRESET, num_classes: int = 10, *, precision: str = "float32"
) -> keras.Model:
    """A fresh, uncompiled network of the named preset.

    ``precision`` is a Keras dtype policy for the layers ("float32", "mixed_bfloat16", "mixed_float16")
    or "auto" (see :func:`resolve_precision`); the final softmax always computes in float32.
    """
    import keras

    builder = get_preset(preset).build
    policy = resolve_precision(precision)
    if policy == "float32":
        return builder(num_classes)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        return builder(num_classes)
    finally:
        keras.config.set_dtype_policy(previous)


def init_from_data(model: keras.Model, x_train: np.ndarray, samples: int = 1000, seed: int = 0) -> None:
    """Set a ``whiten`` layer (if the model has one) to whiten 2x2 patches of the training images.

    As in airbench: the filters are the eigenvectors of the patches' covariance scaled by 1/sqrt of their
    eigenvalues, together with their negations; the bias centres the patches. A model without such a
    layer is left alone.
    """
    try:
        layer = model.get_layer("whiten")
    except ValueError:
        return
    k = WHITEN_PATCH
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(x_train), size=min(samples, len(x_train)), replace=False)
    x = x_train[np.sort(pick)].astype(np.float32) / 255.0
    _, h, w, c = x.shape
    patches = np.stack(
        [x[:, i : h - k + 1 + i, j : w - k + 1 + j, :] for i in range(k) for j in range(k)], axis=3
    ).reshape(-1, k * k * c)  # rows ordered (kernel row, kernel column, channel), like a Conv2D kernel
    mean = patches.mean(axis=0)
    eigenvalues, eigenvectors = np.linalg.eigh(np.cov(patches - mean, rowvar=False))
    filters = eigenvectors / np.sqrt(eigenvalues + 5e-4)  # one filter per column
    filters = np.concatenate([filters, -filters], axis=1)  # (k*k*c, 2*k*k*c)
    bias = -(mean @ filters)
    layer.set_weights([filters.reshape(k, k, c, -1).astype(np.float32), bias.astype(np.float32)])


def as_float32(model: keras.Model) -> keras.Model:
    """A float32 copy of a mixed_float16 model (its weights are float32 already), else ``model``.

    A model trained on a GPU in float16 might not run on a CPU; bfloat16 models (trained on CPUs with AMX)
    stay as they are: every backend runs them on a CPU, and they classify 2.5x faster there. Any network
    :func:`with_precision` can rebuild, not only the presets'.
    """
    return with_precision(model, "float32") if compute_policy(model) == "mixed_float16" else model


def compute_policy(model: keras.Model) -> str:
    """The dtype policy a model computes in: that of most of its layers with weights (a mixed-precision
    model's last layer computes in float32; a loaded model's own policy says float32 whatever its layers
    compute in)."""
    import keras

    def layers(m: keras.Model) -> Iterator[keras.layers.Layer]:
        for layer in m.layers:
            if isinstance(layer, keras.Model):
                yield from layers(layer)
            elif layer.weights:
                yield layer

    counts = Counter(layer.dtype_policy.name for layer in layers(model))
    return counts.most_common(1)[0][0] if counts else model.dtype_policy.name


def with_precision(model: keras.Model, policy: str) -> keras.Model:
    """The same network and weights with its layers under the dtype ``policy`` (its last layer computing in
    float32, as Keras advises for mixed precision), or ``model`` where it computes so already. Mixed
    policies keep float32 variables, so the weights carry over unchanged. Raises ``ValueError`` where the
    network cannot be rebuilt from its layers' configs (a subclassed model, say).
    """
    import keras

    if compute_policy(model) == policy:
        return model
    last = model.layers[-1]

    def rebuilt(layer: keras.layers.Layer) -> keras.layers.Layer:
        config = layer.get_config()
        config["dtype"] = "float32" if layer is last else policy
        return layer.__class__.from_config(config)

    try:
        copy = keras.models.clone_model(model, clone_function=rebuilt, recursive=True)
    except Exception as e:  # whatever a layer's from_config raises
        raise ValueError(f"{model.name} cannot be rebuilt in {policy} ({type(e).__name__}: {e})") from e
    if [w.shape for w in copy.weights] != [w.shape for w in model.weights]:
        raise ValueError(f"{model.name} rebuilt in {policy} has other weights than it had")
    copy.set_weights(model.get_weights())
    return copy


def inference_copy(model: keras.Model) -> keras.Model:
    """The same network and weights, not compiled: what a trained model is saved as.

    The optimizer's state belongs in checkpoints, and a model whose kernels Muon trained names our
    optimizer in its compile config, which plain ``keras.saving.load_model`` could not open.
    """
    copy = type(model).from_config(model.get_config())  # Keras' clone_model would compile it again
    copy.set_weights(model.get_weights())
    return copy


BN_OFFSETS = r".*_bn\d/beta"  # the paths of BatchNorm's offsets in the presets' networks
CONV_KERNELS = r".*_conv\d/kernel"  # and of their trained convolutions' kernels


def make_optimizer(
    preset: Preset,
    learning_rate: float,
    total_steps: int,
    compute_dtype: str = "float32",
    clock: keras.Variable | None = None,
) -> keras.Optimizer:
    """The preset's optimizer: Keras' own, and ours for Muon (a checkpoint names it; a saved model does not).

    With ``preset.bias_lr`` other than 1, BatchNorm's offsets get their own optimizer at that multiple of
    the learning rate (Keras' ``MultiOptimizer``, mapping variable paths to optimizers). With
    ``preset.kernels == "muon"`` the convolutions' kernels get :class:`jupyter_cifar.engine.muon.KernelMuon`
    (registered with Keras' serialization) at ``preset.muon_lr`` times the share ``learning_rate`` is of
    the preset's, its Newton-Schulz iterations in bfloat16 when the model computes in a 16-bit type
    (``compute_dtype``), else in float32.

    With ``clock`` (a time budget: :mod:`jupyter_cifar.engine.budget`) the schedules follow the share of
    the time spent instead of ``total_steps``.
    """
    import keras

    if clock is not None:
        from .clock import STEPS, OnTheClock

        total_steps = STEPS

    def scheduled(schedule: keras.optimizers.schedules.LearningRateSchedule) -> Any:
        return schedule if clock is None else OnTheClock(schedule, total_steps, clock)

    def one(rate: float) -> keras.Optimizer:
        lr: float | keras.optimizers.schedules.LearningRateSchedule = rate
        if preset.schedule == "cosine":
            warmup = max(1, round(total_steps * preset.warmup))
            lr = scheduled(
                keras.optimizers.schedules.CosineDecay(
                    initial_learning_rate=rate / 10,
                    decay_steps=max(1, total_steps - warmup),
                    warmup_target=rate,
                    warmup_steps=warmup,
                    alpha=0.01,
                )
            )
        optimizer: keras.Optimizer
        if preset.optimizer == "sgd":
            optimizer = keras.optimizers.SGD(
                lr, momentum=preset.momentum, nesterov=True, weight_decay=preset.weight_decay or None
            )
        else:
            optimizer = keras.optimizers.Adam(lr, weight_decay=preset.weight_decay or None)
        if preset.weight_decay:
            # BatchNorm's scales and offsets are not decayed (their layers' names contain "_bn").
            optimizer.exclude_from_weight_decay(var_names=["_bn"])
        return optimizer

    if preset.bias_lr == 1 and preset.kernels == "sgd":
        return one(learning_rate)
    optimizers = keras.optimizers.OptimizerMap(one(learning_rate))
    if preset.bias_lr != 1:
        optimizers[BN_OFFSETS] = one(learning_rate * preset.bias_lr)
    if preset.kernels == "muon":
        from .muon import KernelMuon

        # A learning rate other than the preset's (asked for, a small set's smaller batches, a fine-tuning's
        # share) scales Muon's too.
        rate = preset.muon_lr * learning_rate / preset.learning_rate
        decay = scheduled(keras.optimizers.schedules.PolynomialDecay(rate, max(1, total_steps), 0.0))
        ns_dtype = "bfloat16" if compute_dtype in ("bfloat16", "float16") else "float32"
        optimizers[CONV_KERNELS] = KernelMuon(decay, momentum=preset.muon_momentum, ns_dtype=ns_dtype)
    elif preset.kernels != "sgd":
        raise ValueError(f"unknown optimizer for the kernels {preset.kernels!r}")
    return keras.optimizers.MultiOptimizer(optimizers)


def outputs_probabilities(model: keras.Model) -> bool:
    """Whether a model's output is already a softmax (else it gives logits, like the tutorial's)."""
    from keras import layers

    last = model.layers[-1]
    if isinstance(last, layers.Softmax):
        return True
    activation = getattr(last, "activation", None)
    return getattr(activation, "__name__", "") == "softmax"


def compile_for_training(
    model: keras.Model,
    preset: Preset,
    learning_rate: float,
    total_steps: int,
    clock: keras.Variable | None = None,
) -> bool:
    """Compile with the preset's recipe; returns whether labels must be given one-hot.

    The compile config names Keras' own objects, and ours (registered: Muon, a time budget's schedules): a
    checkpoint holds it, a trained model is saved without it (:func:`inference_copy`). Label smoothing
    needs one-hot labels (Keras' sparse loss has none).
    """
    import keras

    from_logits = not outputs_probabilities(model)
    one_hot = preset.label_smoothing > 0
    loss = (
        keras.losses.CategoricalCrossentropy(from_logits=from_logits, label_smoothing=preset.label_smoothing)
        if one_hot
        else keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)
    )
    model.compile(
        optimizer=make_optimizer(preset, learning_rate, total_steps, model.dtype_policy.compute_dtype, clock),
        loss=loss,
        metrics=[
            keras.metrics.CategoricalAccuracy(name="accuracy")
            if one_hot
            else keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        ],
    )
    return one_hot
