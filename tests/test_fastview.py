"""Training through a view of the model with faster TensorFlow kernels (jupyter_cifar.engine.fastview).

The fused BatchNorm must compute what Keras' BatchNormalization computes (outputs, gradients, moving
statistics), the convolutions the gradients TensorFlow computes; the view must train the model's own
variables and leave nothing but Keras' layers in what is saved.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from jupyter_cifar.engine import convprobe, fastview, nets, precision
from jupyter_cifar.engine.modelfiles import load_model
from jupyter_cifar.engine.training import TrainConfig, Trainer

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="the fused kernel is TensorFlow's; others fit as is"
)


def _compiled(preset: str) -> keras.Model:
    model = nets.build_model(preset, precision="mixed_bfloat16")
    nets.compile_for_training(model, nets.get_preset(preset), 0.1, total_steps=10)
    return model


@pytest.fixture
def amx(monkeypatch: pytest.MonkeyPatch) -> None:
    """The crossover measured with AMX, whatever this CPU is (each CPU's own: the last test)."""
    from jupyter_cifar.engine import precision

    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"})


@pytest.mark.parametrize("preset", ["fast", "accurate"])
def test_the_view_shares_every_variable_and_the_model_keeps_keras_layers(preset: str, amx: None) -> None:
    model = _compiled(preset)
    view = fastview.for_training(model, probe=False)  # the rule measured with AMX (the probe: its own file)
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    fused = [layer for layer in view.layers if isinstance(layer, fastview.FusedBatchNorm)]
    assert len(norms) == 6 and [f.norm for f in fused] == norms
    convs = [layer.conv.name for layer in view.layers if isinstance(layer, fastview.MatmulGradConv)]
    # 256 channels on the 7x7 and 3x3 maps; fast's 64 and 128 channels only on the 3x3 map
    expected = ["block2_conv2", "block3_conv1", "block3_conv2"] if preset == "accurate" else ["block3_conv2"]
    assert convs == expected
    # The same variable objects in the same order: the optimizer's slots line up with the model's.
    assert [id(v) for v in view.trainable_variables] == [id(v) for v in model.trainable_variables]
    assert {id(v) for v in view.non_trainable_variables} == {id(v) for v in model.non_trainable_variables}
    assert view.optimizer is model.optimizer
    assert all(type(layer).__module__.startswith("keras.") for layer in model.layers)


def test_an_uncompiled_model_is_refused_by_name() -> None:
    model = nets.build_model("fast")
    with pytest.raises(ValueError, match="compile 'fast' first"):
        fastview.for_training(model)


def test_a_model_without_batchnorm_is_its_own_view() -> None:
    model = _compiled("tutorial")
    assert fastview.for_training(model) is model


def test_each_kernel_can_be_left_out() -> None:
    model = _compiled("fast")
    kinds = {
        (bn, conv): {
            type(layer)
            for layer in fastview.for_training(model, batchnorm=bn, convolutions=conv, probe=False).layers
        }
        for bn in (True, False)
        for conv in (True, False)
    }
    assert {fastview.FusedBatchNorm, fastview.MatmulGradConv} <= kinds[True, True]
    assert fastview.MatmulGradConv not in kinds[True, False] and fastview.FusedBatchNorm in kinds[True, False]
    assert fastview.FusedBatchNorm not in kinds[False, True] and fastview.MatmulGradConv in kinds[False, True]
    assert fastview.for_training(model, batchnorm=False, convolutions=False) is model


@pytest.mark.parametrize(
    ("policy", "channels", "atol"),
    [("float32", 24, 1e-5), ("mixed_bfloat16", 24, 0.05), ("mixed_bfloat16", 32, 0.05)],
)
@pytest.mark.parametrize("scale", [True, False])
def test_a_fused_training_step_computes_what_keras_batchnorm_computes(
    policy: str, channels: int, atol: float, scale: bool
) -> None:
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(1.0, 3.0, (4, 3, 3, channels)), keras.DTypePolicy(policy).compute_dtype)
    w = tf.constant(rng.normal(size=(4, 3, 3, channels)), tf.float32)  # weights the outputs for a loss

    def step(layer: keras.layers.Layer, norm: keras.layers.BatchNormalization) -> list[np.ndarray]:
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(tf.cast(y, tf.float32) * w)
        grads = tape.gradient(loss, [x, *norm.trainable_variables])
        stats = [norm.moving_mean, norm.moving_variance]
        return [np.asarray(tf.cast(t, tf.float32)) for t in (y, *grads, *stats)]

    def norm() -> keras.layers.BatchNormalization:
        layer = keras.layers.BatchNormalization(momentum=0.6, epsilon=1e-5, scale=scale, dtype=policy)
        layer.build(x.shape)
        layer.beta.assign(rng.normal(size=channels))
        if scale:
            layer.gamma.assign(rng.uniform(0.5, 1.5, channels))
        return layer

    keras_norm = norm()
    fused_norm = norm()
    fused_norm.set_weights(keras_norm.get_weights())
    expected = step(keras_norm, keras_norm)
    got = step(fastview.FusedBatchNorm(fused_norm), fused_norm)
    names = ["output", "input gradient", *(v.name + " gradient" for v in keras_norm.trainable_variables)]
    for name, a, b in zip([*names, "moving mean", "moving variance"], got, expected, strict=True):
        # Moving statistics are float32 either way: a variance off by the n / (n - 1) factor (1/35 here)
        # fails; so would statistics of the wrong axis.
        tol = 1e-5 if name.startswith("moving") else atol
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * max(1.0, float(np.abs(b).max())), err_msg=name)
    # In inference the view is the layer itself.
    np.testing.assert_array_equal(
        fastview.FusedBatchNorm(fused_norm)(x, training=False), fused_norm(x, training=False)
    )


@pytest.mark.parametrize(("policy", "side", "rtol"), [("float32", 7, 1e-4), ("mixed_bfloat16", 3, 2e-2)])
def test_a_convolution_gets_the_gradients_tensorflow_computes(
    policy: str, side: int, rtol: float, amx: None
) -> None:
    rng = np.random.default_rng(1)
    inputs = keras.Input((side, side, 128))
    conv = keras.layers.Conv2D(200, 3, padding="same", use_bias=False, dtype=policy)
    model = keras.Model(inputs, conv(inputs))
    # 128 x 200 channels >= 512 x 49 pixels, in bfloat16; in float32 oneDNN's own stays (the gradients
    # computed by the matmuls are still checked in both precisions).
    assert fastview.matmul_grad_pays(conv) == (policy != "float32")
    wrapped = fastview.MatmulGradConv(conv)
    x = tf.constant(rng.normal(size=(5, side, side, 128)), conv.compute_dtype)
    w = tf.constant(rng.normal(size=(5, side, side, 200)), tf.float32)

    def gradients(layer: keras.layers.Layer) -> list[np.ndarray]:
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.cast(layer(x, training=True), tf.float32)
            loss = tf.reduce_sum(y * w)
        return [np.asarray(tf.cast(t, tf.float32)) for t in (y, *tape.gradient(loss, [x, conv.kernel]))]

    for name, got, expected in zip(
        ["output", "input", "kernel"], gradients(wrapped), gradients(model), strict=True
    ):
        np.testing.assert_allclose(
            got, expected, rtol=rtol, atol=rtol * float(np.abs(expected).max()), err_msg=name
        )
    for other in (
        keras.layers.Conv2D(200, 3, padding="valid", use_bias=False),  # not "same"
        keras.layers.Conv2D(16, 3, padding="same", use_bias=False),  # too few channels for the map
    ):
        other(inputs)
        assert not fastview.matmul_grad_pays(other)


@pytest.mark.parametrize(
    ("side", "channels", "filters", "policy", "rtol"),
    [
        (3, 128, 200, "float32", 1e-4),
        (2, 16, 24, "float32", 1e-4),
        (1, 8, 8, "float32", 1e-4),
        (3, 5, 3, "float32", 1e-4),
        # where the probe (convprobe) may pick it in bfloat16: as close as oneDNN's own bfloat16 kernels
        (3, 128, 200, "mixed_bfloat16", 2e-2),
    ],
)
def test_a_small_map_convolution_written_out_computes_what_the_convolution_computes(
    side: int, channels: int, filters: int, policy: str, rtol: float
) -> None:
    rng = np.random.default_rng(2)
    inputs = keras.Input((side, side, channels))
    conv = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, dtype=policy)
    model = keras.Model(inputs, conv(inputs))
    written = fastview.WrittenOutConv(conv)
    x = tf.constant(rng.normal(size=(6, side, side, channels)), conv.compute_dtype)
    w = tf.constant(rng.normal(size=(6, side, side, filters)), tf.float32)

    def gradients(layer: keras.layers.Layer) -> list[np.ndarray]:
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.cast(layer(x, training=True), tf.float32)
            loss = tf.reduce_sum(y * w)
        return [np.asarray(tf.cast(t, tf.float32)) for t in (y, *tape.gradient(loss, [x, conv.kernel]))]

    for name, got, expected in zip(
        ["output", "input", "kernel"], gradients(written), gradients(model), strict=True
    ):
        np.testing.assert_allclose(
            got, expected, rtol=rtol, atol=rtol * float(np.abs(expected).max()), err_msg=name
        )
    # The convolution's own kernel, trained in place.
    assert [id(v) for v in written.trainable_variables] == [id(conv.kernel)]
    np.testing.assert_array_equal(np.asarray(written(x, training=False)), np.asarray(conv(x)))


def test_the_written_out_convolution_is_used_where_it_was_measured_to_pay(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In float32 on a CPU with AVX2 and no AVX-512, on maps of at most 3x3 (measured there: 1.38-2.51x
    on 3x3 maps, 0.33x on 5x5); nowhere else, where it was not measured."""
    from jupyter_cifar.engine import precision

    avx2, amx = {"avx2", "fma"}, {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}
    assert fastview.written_out_pays(9, flags=avx2) and fastview.written_out_pays(1, flags=avx2)
    assert not fastview.written_out_pays(25, flags=avx2)
    assert not fastview.written_out_pays(9, "bfloat16", flags=avx2)
    assert not fastview.written_out_pays(9, flags=amx) and not fastview.written_out_pays(9, flags={"sse4_2"})
    for flags, kinds in ((avx2, ["WrittenOutConv"]), (amx, [])):
        monkeypatch.setattr(precision, "cpu_flags", lambda flags=flags: flags)
        model = nets.build_model("fast", precision="float32")
        nets.compile_for_training(model, nets.get_preset("fast"), 0.1, total_steps=10)
        view = fastview.for_training(model, probe=False)
        swapped = [(type(layer).__name__, layer.conv.name) for layer in view.layers if hasattr(layer, "conv")]
        assert swapped == [(kind, "block3_conv2") for kind in kinds]  # fast's one convolution on a 3x3 map
        assert [id(v) for v in view.trainable_variables] == [id(v) for v in model.trainable_variables]
        assert fastview.for_training(model, written_out=False, batchnorm=False, probe=False) is model


@pytest.mark.parametrize(
    ("side", "kernel", "strides", "padding", "bias", "activation", "policy"),
    [
        (1, 1, 1, "valid", True, "relu", "float32"),
        (4, 1, 2, "same", True, None, "float32"),
        (3, 1, 2, "valid", False, None, "float32"),
        (2, 1, 1, "same", True, "relu", "mixed_bfloat16"),
        (1, 3, 1, "same", True, "relu", "float32"),
        (1, 3, 2, "same", False, None, "mixed_bfloat16"),
        (1, 2, 1, "same", True, None, "float32"),  # an even kernel: TensorFlow pads after, the tap is [0, 0]
    ],
)
def test_a_convolution_that_is_one_product_trains_as_the_convolution_does(
    side: int, kernel: int, strides: int, padding: str, bias: bool, activation: str | None, policy: str
) -> None:
    rng = np.random.default_rng(3)
    inputs = keras.Input((side, side, 8))
    conv = keras.layers.Conv2D(
        6, kernel, strides=strides, padding=padding, use_bias=bias, activation=activation, dtype=policy
    )
    model = keras.Model(inputs, conv(inputs))
    if bias:
        conv.bias.assign(rng.normal(size=6))
    assert fastview.pointwise(conv)
    product = fastview.PointwiseConv(conv)
    x = tf.constant(rng.normal(size=(5, side, side, 8)), conv.compute_dtype)
    w = tf.constant(rng.normal(size=model.output_shape[1:]), tf.float32)

    def gradients(layer: keras.layers.Layer) -> list[np.ndarray]:
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.cast(layer(x, training=True), tf.float32)
            loss = tf.reduce_sum(y * w)
        found = (y, *tape.gradient(loss, [x, *conv.trainable_variables]))
        return [np.asarray(tf.cast(t, tf.float32)) for t in found]

    rtol = 1e-5 if policy == "float32" else 0.02
    got, expected = gradients(product), gradients(model)
    assert [g.shape for g in got] == [e.shape for e in expected]
    for name, g, e in zip(["output", "input", "kernel", "bias"], got, expected, strict=False):
        np.testing.assert_allclose(g, e, rtol=rtol, atol=rtol * float(np.abs(e).max()), err_msg=name)
    assert [id(v) for v in product.trainable_variables] == [id(v) for v in conv.trainable_variables]
    np.testing.assert_array_equal(np.asarray(product(x, training=False)), np.asarray(conv(x)))


def test_only_small_map_convolutions_that_are_one_product_become_one() -> None:
    def conv_on(side: int, *args: object, **kwargs: object) -> keras.layers.Conv2D:
        layer = keras.layers.Conv2D(4, *args, **kwargs)
        layer(keras.Input((side, side, 8)))
        return layer

    assert fastview.pointwise(conv_on(4, 1, strides=2)) and fastview.pointwise(conv_on(1, 3, padding="same"))
    assert not fastview.pointwise(conv_on(5, 1))  # 25 pixels: TensorFlow's own was as fast there
    assert not fastview.pointwise(conv_on(2, 3, padding="same"))  # more than the centre tap meets the map
    assert not fastview.pointwise(conv_on(4, 1, dilation_rate=2)) and not fastview.pointwise(
        conv_on(4, 1, groups=2)
    )
    assert not fastview.pointwise(keras.layers.DepthwiseConv2D(1))
    # Keras' ResNet50 made for 32x32 images: its 1x1 convolutions on the last maps (4x4 to 1x1) and its 3x3
    # ones on the 1x1 map train as products through the view, sharing the model's variables.
    keras.utils.set_random_seed(0)
    model = keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3), classes=10)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    view = fastview.for_training(model, probe=False)
    swapped = {layer.conv.name for layer in view.layers if isinstance(layer, fastview.PointwiseConv)}
    expected = {layer.name for layer in model.layers if fastview.pointwise(layer)}
    assert swapped == expected and "conv5_block1_2_conv" in swapped and "conv4_block1_1_conv" in swapped
    assert "conv3_block1_1_conv" not in swapped  # an 8x8 map
    assert [id(v) for v in view.trainable_variables] == [id(v) for v in model.trainable_variables]
    assert fastview.for_training(model, convolutions=False, batchnorm=False) is model


@pytest.mark.slow
def test_training_through_the_view_trains_and_checkpoints_the_model(
    cifar10, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = cifar10.subset(1024, 256)
    checkpoint, first = tmp_path / "run.keras", tmp_path / "epoch1.keras"
    views: list[keras.Model] = []  # what the trainer fits: seen through a spy on for_training
    models: list[keras.Model] = []  # and the model it trains (the result is its uncompiled copy)
    real = fastview.for_training

    def spy(model: keras.Model, **kwargs: object) -> keras.Model:
        models.append(model)
        views.append(real(model, **kwargs))
        return views[-1]

    monkeypatch.setattr(fastview, "for_training", spy)

    def keep_first(event: dict) -> None:
        if event["type"] == "epoch" and event["epoch"] == 1:
            shutil.copy(checkpoint, first)

    trainer = Trainer(
        data, TrainConfig(preset="fast", epochs=2, batch_size=64, seed=3, checkpoint=str(checkpoint))
    )
    trainer.subscribe(keep_first)
    starts: list[dict] = []
    trainer.subscribe(lambda event: starts.append(event) if event["type"] == "start" else None)
    result = trainer.run()
    assert result.status == "finished", result.error
    assert result.evaluation.accuracy > 0.2  # it learned: chance is 0.1
    (view,) = views
    # the trainer's probe timed fast's convolutions on small maps at its batch, and kept what it found
    kept = json.loads(convprobe.kept_path().read_text())
    assert {"7x7x64x64", "3x3x128x128"} <= {key.split(" | ")[4] for key in kept if " | batch 64 | " in key}
    assert any(isinstance(layer, fastview.FusedBatchNorm) for layer in view.layers)
    # The run says where it trained and how each 3x3 convolution did, at its start and in its metadata.
    convs = [layer.name for layer in models[0].layers if fastview.plain_3x3(layer)]
    assert result.kernels == fastview.kernels(view) and list(result.kernels) == convs
    assert set(result.kernels.values()) <= {"oneDNN", "matmuls", "written out"}
    assert result.machine == precision.machine() and result.machine["cpu"] == precision.cpu_model()
    meta = result.metadata()
    assert (meta["machine"], meta["kernels"]) == (result.machine, result.kernels)
    assert (starts[0]["machine"], starts[0]["kernels"]) == (result.machine, result.kernels)
    assert int(view.optimizer.iterations) == 2 * 1024 // 64  # fit ran on the view ...
    assert view.optimizer is models[0].optimizer  # ... whose optimizer is the model's
    with zipfile.ZipFile(first) as z:
        assert b"FusedBatchNorm" not in z.read("config.json")
    # The epoch-1 checkpoint is the trained model with its optimizer's state, in Keras' layers only.
    plain = keras.saving.load_model(first, safe_mode=True)
    assert int(plain.optimizer.iterations) == 1024 // 64
    moved = [v for v in plain.variables if v.path.endswith("_bn1/moving_mean")]
    assert moved and all(np.abs(np.asarray(v)).max() > 0 for v in moved)  # statistics were tracked
    assert load_model(checkpoint).name == "fast"


def test_the_matmul_crossover_is_the_one_measured_on_each_cpu() -> None:
    """AMX: matmuls where channels x filters >= 512 x pixels; AVX512-BF16 without AMX: on maps of up to
    64 pixels, whatever the channels (there 7x7 with 24x64 channels ran 1.07x faster as matmuls, 15x15
    with 128x256 0.92x). In float32, on no CPU (measured on the Xeon with and without AMX)."""
    amx = {"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}
    epyc = {"avx512f", "avx512_bf16"}
    for flags in (amx, {"avx2"}):  # a CPU not measured keeps the first line
        assert not fastview.matmul_pays(64, 64, 49, flags=flags)
        assert fastview.matmul_pays(256, 256, 49, flags=flags)
        assert fastview.matmul_pays(128, 128, 9, flags=flags)
    assert fastview.matmul_pays(24, 64, 49, flags=epyc) and fastview.matmul_pays(64, 64, 9, flags=epyc)
    assert not fastview.matmul_pays(128, 256, 225, flags=epyc)
    assert not fastview.matmul_pays(24, 24, 225, flags=epyc)
    # In float32 the matmuls did not pay on any shape of the presets, with AMX or without: never.
    for flags in (amx, epyc, {"avx2"}):
        assert not fastview.matmul_pays(256, 256, 9, "float32", flags=flags)
        assert fastview.matmul_pays(256, 256, 9, "bfloat16", flags=flags)
