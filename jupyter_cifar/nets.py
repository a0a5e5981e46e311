"""Network presets by name: the seed's tutorial CNN, kept for comparison, and better ones.

A preset is a builder plus the training recipe that suits it (optimizer, learning rate, batch size,
epochs), so that ``jupyter cifar train --preset NAME`` and the Train panel need nothing else. Models take
raw 0..255 pixels (a ``Rescaling`` layer is part of the network) so that a saved model is complete:
whoever loads it needs no preprocessing code of ours. Everything is built from Keras 3's
backend-agnostic layers, so the presets also run under ``KERAS_BACKEND=jax`` or ``torch``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import BadParameter

if TYPE_CHECKING:
    import keras

# Keras is imported inside the builders: the registry (names, recipes) is readable without it, so the
# command line can list presets and check arguments before TensorFlow loads.

INPUT_SHAPE = (32, 32, 3)


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


def _conv_bn(x: keras.KerasTensor, filters: int, name: str) -> keras.KerasTensor:
    from keras import layers

    x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=0.9, name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def _fast(num_classes: int) -> keras.Model:
    """A small VGG-style net with BatchNorm: about 3x the tutorial's multiply-adds, far fewer epochs.

    Widths double as the resolution halves (32 -> 4 pixels), so each stage costs about the same; a global
    max-pool and one dense layer classify. Horizontal flips augment training only.
    """
    import keras
    from keras import layers

    inputs = keras.Input(INPUT_SHAPE, name="image")
    x = layers.Rescaling(1 / 255, name="scale")(inputs)
    x = layers.RandomFlip("horizontal", name="flip")(x)
    for i, filters in enumerate((32, 64, 128)):
        x = _conv_bn(x, filters, f"block{i + 1}")
        x = layers.MaxPooling2D(2, name=f"block{i + 1}_pool")(x)
    x = _conv_bn(x, 256, "block4")
    x = layers.GlobalMaxPooling2D(name="pool")(x)
    x = layers.Dense(num_classes, name="logits")(x)
    outputs = layers.Activation("softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="fast")


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            name="fast",
            description="BatchNorm VGG-style net, Adam with warm-up and cosine decay (the default)",
            build=_fast,
            epochs=8,
            batch_size=64,
            learning_rate=2e-3,
            optimizer="adam",
            schedule="cosine",
            label_smoothing=0.1,
        ),
        Preset(
            name="tutorial",
            description="The TensorFlow CNN tutorial network the seed project trained",
            build=_tutorial,
            epochs=10,
            batch_size=32,
            learning_rate=1e-3,
            optimizer="adam",
            outputs="logits",
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


def build_model(preset: str = DEFAULT_PRESET, num_classes: int = 10) -> keras.Model:
    """A fresh, uncompiled network of the named preset."""
    return get_preset(preset).build(num_classes)


def make_optimizer(preset: Preset, learning_rate: float, total_steps: int) -> keras.Optimizer:
    """The preset's optimizer; built-in Keras schedules only, so a saved model needs no code of ours."""
    import keras

    lr: float | keras.optimizers.schedules.LearningRateSchedule = learning_rate
    if preset.schedule == "cosine":
        warmup = max(1, total_steps // 5)
        lr = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=learning_rate / 10,
            decay_steps=max(1, total_steps - warmup),
            warmup_target=learning_rate,
            warmup_steps=warmup,
            alpha=0.01,
        )
    if preset.optimizer == "sgd":
        return keras.optimizers.SGD(lr, momentum=0.9, nesterov=True)
    return keras.optimizers.Adam(lr)


def outputs_probabilities(model: keras.Model) -> bool:
    """Whether a model's output is already a softmax (else it gives logits, like the tutorial's)."""
    from keras import layers

    last = model.layers[-1]
    if isinstance(last, layers.Softmax):
        return True
    activation = getattr(last, "activation", None)
    return getattr(activation, "__name__", "") == "softmax"


def compile_for_training(model: keras.Model, preset: Preset, learning_rate: float, total_steps: int) -> bool:
    """Compile with the preset's recipe; returns whether labels must be given one-hot.

    Only built-in Keras objects go into the compile config, so a saved model opens with plain
    ``keras.saving.load_model``. Label smoothing needs one-hot labels (Keras' sparse loss has none).
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
        optimizer=make_optimizer(preset, learning_rate, total_steps),
        loss=loss,
        metrics=[
            keras.metrics.CategoricalAccuracy(name="accuracy")
            if one_hot
            else keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        ],
    )
    return one_hot
