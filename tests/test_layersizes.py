"""Every layer the app imports by default sizes itself as Keras does (issue 15, point 1).

Each rule of :mod:`engine.layersizes` is checked against Keras itself: a model around the layer is
built by Keras, saved, and must pass the file checks with no opt-in (so the variables worked out are
exactly those of the weights file), with the output shape Keras gives; then it loads. Then the
everyday models a new user brings: a Sequential CNN with Dropout, one with augmentation layers, a
residual block, and keras.applications' MobileNetV2, ResNet50 and EfficientNetB0 at 32x32.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from keras import layers

from jupyter_cifar.engine.modelfiles import EXTRA_LAYERS_ENV, inspect_model_file, load_model
from jupyter_cifar.engine.modelsizes import _Sizer

pytestmark = [
    pytest.mark.slow,
    # rms_scaling is deprecated in Keras, and still in the configs users have
    pytest.mark.filterwarnings("ignore:You passed `rms_scaling=True`:UserWarning"),
]

SHAPE = (12, 12, 6)

ONE_INPUT: dict[str, Any] = {
    "Dropout": lambda: layers.Dropout(0.3),
    "SpatialDropout2D": lambda: layers.SpatialDropout2D(0.2),
    "GaussianNoise": lambda: layers.GaussianNoise(0.1),
    "GaussianDropout": lambda: layers.GaussianDropout(0.1),
    "AlphaDropout": lambda: layers.AlphaDropout(0.1),
    "Identity": lambda: layers.Identity(),
    "ReLU6": lambda: layers.ReLU(6.0),
    "LeakyReLU": lambda: layers.LeakyReLU(0.2),
    "ELU": lambda: layers.ELU(),
    "Softmax": lambda: layers.Softmax(axis=-1),
    "PReLU": lambda: layers.PReLU(),
    "PReLU shared": lambda: layers.PReLU(shared_axes=[1, 2]),
    "AveragePooling2D": lambda: layers.AveragePooling2D(2),
    "AveragePooling2D same": lambda: layers.AveragePooling2D(3, strides=2, padding="same"),
    "GlobalAveragePooling2D": lambda: layers.GlobalAveragePooling2D(),
    "GlobalAveragePooling2D keepdims": lambda: layers.GlobalAveragePooling2D(keepdims=True),
    "ZeroPadding2D": lambda: layers.ZeroPadding2D(1),
    "ZeroPadding2D pairs": lambda: layers.ZeroPadding2D(((1, 2), (3, 4))),
    "ZeroPadding2D channels_first": lambda: layers.ZeroPadding2D((1, 2), data_format="channels_first"),
    "Cropping2D": lambda: layers.Cropping2D(2),
    "Cropping2D pairs": lambda: layers.Cropping2D(((1, 2), (0, 3))),
    "UpSampling2D": lambda: layers.UpSampling2D((2, 3)),
    "Resizing": lambda: layers.Resizing(20, 10),
    "CenterCrop": lambda: layers.CenterCrop(8, 6),
    "RandomCrop": lambda: layers.RandomCrop(8, 8),
    "RandomFlip": lambda: layers.RandomFlip(),
    "RandomTranslation": lambda: layers.RandomTranslation(0.1, 0.2),
    "RandomRotation": lambda: layers.RandomRotation(0.1),
    "RandomZoom": lambda: layers.RandomZoom(0.1),
    "RandomContrast": lambda: layers.RandomContrast(0.2),
    "RandomBrightness": lambda: layers.RandomBrightness(0.1),
    "DepthwiseConv2D": lambda: layers.DepthwiseConv2D(3, depth_multiplier=2),
    "DepthwiseConv2D strided": lambda: layers.DepthwiseConv2D(5, strides=2, padding="same", use_bias=False),
    "DepthwiseConv2D dilated": lambda: layers.DepthwiseConv2D(3, dilation_rate=2),
    "DepthwiseConv2D channels_first": lambda: layers.DepthwiseConv2D(3, data_format="channels_first"),
    "SeparableConv2D": lambda: layers.SeparableConv2D(7, 3),
    "SeparableConv2D strided": lambda: layers.SeparableConv2D(
        4, 3, strides=2, padding="same", depth_multiplier=2, use_bias=False
    ),
    "Conv2DTranspose same": lambda: layers.Conv2DTranspose(4, 3, strides=2, padding="same"),
    "Conv2DTranspose valid": lambda: layers.Conv2DTranspose(5, 3, strides=2),
    "Conv2DTranspose output_padding": lambda: layers.Conv2DTranspose(
        3, 4, strides=2, padding="same", output_padding=1
    ),
    "Conv2DTranspose valid output_padding": lambda: layers.Conv2DTranspose(3, 3, strides=3, output_padding=2),
    "Conv2DTranspose dilated": lambda: layers.Conv2DTranspose(2, 3, dilation_rate=2, use_bias=False),
    "Reshape": lambda: layers.Reshape((-1, 6)),
    "Reshape whole": lambda: layers.Reshape((6, 12, 12)),
    "LayerNormalization": lambda: layers.LayerNormalization(),
    "LayerNormalization axes": lambda: layers.LayerNormalization(axis=[1, 2, 3]),
    "LayerNormalization rms": lambda: layers.LayerNormalization(rms_scaling=True),
    "LayerNormalization no center": lambda: layers.LayerNormalization(center=False),
    "GroupNormalization": lambda: layers.GroupNormalization(groups=3),
    "GroupNormalization no center": lambda: layers.GroupNormalization(groups=2, center=False),
    "Normalization adapted": lambda: layers.Normalization(),
    "Normalization all axes": lambda: layers.Normalization(axis=None),
    "Normalization constants": lambda: layers.Normalization(mean=[0.5] * 6, variance=[0.25] * 6),
    "Normalization one constant": lambda: layers.Normalization(mean=0.5, variance=0.25),
}

TWO_INPUTS: dict[str, Any] = {  # (layer, the second input's shape)
    "Add": (lambda: layers.Add(), SHAPE),
    "Add broadcast": (lambda: layers.Add(), (1, 1, 6)),
    "Multiply squeeze-excite": (lambda: layers.Multiply(), (1, 1, 6)),
    "Subtract": (lambda: layers.Subtract(), SHAPE),
    "Maximum": (lambda: layers.Maximum(), SHAPE),
    "Minimum": (lambda: layers.Minimum(), SHAPE),
    "Concatenate": (lambda: layers.Concatenate(), (12, 12, 2)),
    "Concatenate axis 1": (lambda: layers.Concatenate(axis=1), (3, 12, 6)),
}


def sized_output(config: dict[str, Any]) -> list[Any]:
    """The output shapes the app works out for a model's config, without Keras."""
    return _Sizer().model(json.loads(json.dumps(config)), None, 0)


def check_as_keras_builds(model: keras.Model, path: Path) -> None:
    model.save(path)
    inspect_model_file(path)  # no opt-in: the worked-out variables are exactly the file's
    config = json.loads(json.dumps(keras.saving.serialize_keras_object(model)))
    expected = [tuple(t.shape[1:]) for t in model.outputs]
    assert sized_output(config) == expected
    assert load_model(path).count_params() == model.count_params()


@pytest.fixture(autouse=True)
def _no_opt_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(EXTRA_LAYERS_ENV, raising=False)


@pytest.mark.parametrize("case", list(ONE_INPUT))
def test_a_layer_sizes_itself_as_keras_builds_it(case: str, tmp_path: Path) -> None:
    inputs = keras.Input(SHAPE)
    model = keras.Model(inputs, ONE_INPUT[case]()(inputs))
    check_as_keras_builds(model, tmp_path / "layer.keras")


@pytest.mark.parametrize("case", list(TWO_INPUTS))
def test_a_merge_layer_sizes_itself_as_keras_builds_it(case: str, tmp_path: Path) -> None:
    make, other = TWO_INPUTS[case]
    a, b = keras.Input(SHAPE), keras.Input(other)
    model = keras.Model([a, b], make()([a, b]))
    check_as_keras_builds(model, tmp_path / "merge.keras")


def residual(x: Any, filters: int) -> Any:
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
    y = layers.BatchNormalization()(y)
    y = layers.ReLU()(y)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False)(y)
    return layers.ReLU()(layers.Add()([x, layers.BatchNormalization()(y)]))


def everyday_model(name: str) -> keras.Model:
    """What a new user brings (issue 15's six), at 32x32 with 10 classes, weights=None."""
    apps = keras.applications
    if name == "sequential-dropout":
        return keras.Sequential(
            [keras.Input((32, 32, 3)), layers.Rescaling(1 / 255), layers.Conv2D(32, 3, activation="relu"),
             layers.MaxPooling2D(), layers.Dropout(0.25), layers.Flatten(),
             layers.Dense(64, activation="relu"), layers.Dropout(0.5), layers.Dense(10, activation="softmax")]
        )  # fmt: skip
    if name == "sequential-augmented":
        return keras.Sequential(
            [keras.Input((32, 32, 3)), layers.RandomFlip("horizontal"), layers.RandomTranslation(0.1, 0.1),
             layers.Rescaling(1 / 255), layers.Conv2D(16, 3, padding="same", activation="relu"),
             layers.GlobalAveragePooling2D(), layers.Dense(10)]
        )  # fmt: skip
    if name == "residual":
        inputs = keras.Input((32, 32, 3))
        x = layers.Conv2D(16, 3, padding="same")(layers.Rescaling(1 / 255)(inputs))
        x = residual(residual(x, 16), 16)
        return keras.Model(inputs, layers.Dense(10)(layers.GlobalAveragePooling2D()(x)))
    builder = {
        "mobilenetv2": apps.MobileNetV2,
        "resnet50": apps.ResNet50,
        "efficientnetb0": apps.EfficientNetB0,
    }
    return builder[name](input_shape=(32, 32, 3), weights=None, classes=10)


FAMILIES = [
    "sequential-dropout", "sequential-augmented", "residual", "mobilenetv2", "resnet50", "efficientnetb0"
]  # fmt: skip


@pytest.mark.parametrize("name", FAMILIES)
def test_everyday_keras_models_import_by_default(name: str, tmp_path: Path) -> None:
    model = everyday_model(name)
    path = tmp_path / f"{name}.keras"
    check_as_keras_builds(model, path)
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    expected = model.predict(images, verbose=0)
    np.testing.assert_allclose(load_model(path).predict(images, verbose=0), expected, rtol=1e-5, atol=1e-6)


def test_operations_on_tensors_are_refused_naming_the_layer_to_use(tmp_path: Path) -> None:
    """``x * y`` in a functional model (MobileNetV3's squeeze-excite, ConvNeXt's residuals) saves Keras'
    operation, not a layer: it has no size rule, so it is refused whatever the opt-in, saying what to use."""
    from jupyter_cifar.errors import ModelFileError

    inputs = keras.Input((32, 32, 3))
    x = layers.Conv2D(8, 3, padding="same")(inputs)
    model = keras.Model(inputs, layers.Dense(10)(layers.GlobalAveragePooling2D()(x * x)))
    path = tmp_path / "ops.keras"
    model.save(path)
    with pytest.raises(
        ModelFileError, match=r"applies Keras' operation '.*Multiply'.*keras\.layers\.Multiply"
    ):
        inspect_model_file(path)
    with pytest.raises(ModelFileError, match="applies Keras' operation"):
        inspect_model_file(path, extra_layers=["keras"])
