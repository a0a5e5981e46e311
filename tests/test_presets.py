"""The fast-training presets: each learns on a small subset, and what they produce is plain Keras.

The timing goals (0.70 in a minute, 0.90 in ten) are the benchmark's to check
(``benchmarks/time_to_accuracy.py``), never a test's.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest
from underjax import run_under_jax

from jupyter_cifar.engine import nets, precision, tta
from jupyter_cifar.engine.batches import Batches
from jupyter_cifar.engine.modelfiles import load_model
from jupyter_cifar.engine.predict import predict_proba
from jupyter_cifar.engine.training import TrainConfig, Trainer
from jupyter_cifar.errors import BadParameter

TRAINED = [name for name in nets.PRESETS if name != "tutorial"]  # the tutorial: tests/test_training.py


@pytest.fixture(scope="module")
def tiny(cifar10):
    return cifar10.subset(2000, 500)


@pytest.fixture(scope="module")
def trained(tiny):
    """Each preset after 2 epochs on 2,000 images (batch 64, so that there are enough steps)."""
    return {
        name: Trainer(tiny, TrainConfig(preset=name, epochs=2, batch_size=64, seed=1)).run()
        for name in TRAINED
    }


@pytest.mark.slow
@pytest.mark.parametrize("name", TRAINED)
def test_each_preset_learns_on_a_small_subset(trained, name: str) -> None:
    result = trained[name]
    assert result.status == "finished", result.error
    assert result.evaluation.n == 500
    assert result.evaluation.accuracy > 0.30, result.evaluation.accuracy  # chance: 0.10
    # The precision it trained in, "auto" resolved, is kept with it.
    assert result.precision == precision.resolve_precision(nets.get_preset(name).precision)
    assert result.metadata()["precision"] == result.precision != "auto"


@pytest.mark.slow
@pytest.mark.parametrize("name", TRAINED)
def test_a_trained_preset_saves_and_opens_with_plain_keras(trained, tiny, name: str, tmp_path) -> None:
    model = trained[name].model
    path = tmp_path / f"{name}.keras"
    model.save(path)
    plain = keras.saving.load_model(path)  # safe_mode, no custom objects
    ours = load_model(path)
    x = tiny.x_test[:64]
    expected = predict_proba(model, x)
    np.testing.assert_allclose(predict_proba(plain, x), expected, atol=1e-4)
    np.testing.assert_allclose(predict_proba(ours, x), expected, atol=1e-4)
    assert all(layer.dtype_policy.name != "mixed_float16" for layer in plain.layers)
    assert plain.name == name
    # Nothing of ours in the file (Muon's optimizer is registered in this process, not in a user's).
    with zipfile.ZipFile(path) as z:
        assert b"jupyter_cifar" not in z.read("config.json")
    assert not plain.compiled


@pytest.mark.slow
def test_accurate_is_test_time_augmented_and_continues_training_inside(trained, tiny) -> None:
    model = trained["accurate"].model
    assert tta.tta_views(model) == "flip-translate"
    assert tta.without_tta(model) is not model
    more = Trainer(
        tiny.subset(500, 100), TrainConfig(preset="accurate", epochs=1, batch_size=64, seed=2), model=model
    )
    result = more.run()
    assert result.status == "finished", result.error
    assert tta.tta_views(result.model) == "flip-translate"  # wrapped again after training its inside
    assert tta.without_tta(result.model) is not result.model


@pytest.mark.parametrize("views", ["flip", "flip-translate"])
def test_tta_averages_the_logits_of_the_views(views: str) -> None:
    """As airbench computes them: the image and its mirror; with "flip-translate" these count half, and
    the two 1-pixel shifts of a reflect-padded copy (down-right, up-left), each with its mirror, a quarter."""
    model = nets.build_model("fast")
    rng = np.random.default_rng(0)
    model.set_weights([w + rng.normal(0, 0.05, w.shape).astype(w.dtype) for w in model.get_weights()])
    x = rng.integers(0, 256, (4, 32, 32, 3)).astype(np.float32)
    wrapped = tta.with_tta(model, views)
    body = tta.without_tta(wrapped)

    def mirrored(images: np.ndarray) -> np.ndarray:
        both = body(images), body(images[:, :, ::-1])
        return sum(keras.ops.convert_to_numpy(logits) for logits in both) / 2

    logits = mirrored(x)
    if views == "flip-translate":
        padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
        logits = logits / 2 + mirrored(padded[:, :32, :32]) / 4 + mirrored(padded[:, 2:, 2:]) / 4
    expected = np.exp(logits - logits.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(wrapped(x)), expected, atol=1e-5)
    assert nets.outputs_probabilities(wrapped)
    assert tta.tta_views(wrapped) == views and tta.tta_views(model) == "none"
    with pytest.raises(ValueError, match="unknown test-time augmentation"):
        tta.with_tta(model, "none")


def test_batchnorm_offsets_learn_faster_by_the_presets_factor() -> None:
    """accurate's 64x learning rate for BatchNorm offsets (airbench's bias scaler), by MultiOptimizer."""
    assert nets.PRESETS["accurate"].bias_lr == 64
    sgd = dataclasses.replace(nets.PRESETS["fast"], kernels="sgd")  # fast's recipe, SGD for everything
    preset = dataclasses.replace(sgd, bias_lr=8.0, weight_decay=0.0)
    model = nets.build_model("fast")
    optimizer = nets.make_optimizer(preset, 0.1, total_steps=100)
    variables = model.trainable_variables
    before = {v.path: keras.ops.convert_to_numpy(v).copy() for v in variables}
    optimizer.apply([keras.ops.ones(v.shape) for v in variables], variables)
    step = {v.path: float(np.abs(keras.ops.convert_to_numpy(v) - before[v.path]).mean()) for v in variables}
    offsets = [path for path in step if re.fullmatch(nets.BN_OFFSETS, path)]
    scales = [path for path in step if path.endswith("/gamma")]
    assert len(offsets) == len(scales) == 6
    for offset, scale in zip(offsets, scales, strict=True):
        assert step[offset] == pytest.approx(8 * step[scale], rel=1e-4)
    plain = nets.make_optimizer(sgd, 0.1, total_steps=100)
    assert not isinstance(plain, keras.optimizers.MultiOptimizer)


def test_whitening_layer_whitens_patches(cifar10) -> None:
    model = nets.build_model("fast")
    nets.init_from_data(model, cifar10.x_train)
    probe = keras.Model(model.input, model.get_layer("whiten").output)
    out = keras.ops.convert_to_numpy(probe(cifar10.x_test[:500].astype(np.float32)))
    half = out.shape[-1] // 2
    np.testing.assert_allclose(out[..., half:], -out[..., :half], atol=1e-4)  # filters and negations
    cov = np.cov(out[..., :half].reshape(-1, half), rowvar=False)
    # Decorrelated, and scaled to unit variance at most (airbench's eps damps the faintest directions).
    assert 0.5 < np.diag(cov).max() < 1.6, np.diag(cov)
    assert np.abs(cov - np.diag(np.diag(cov))).max() < 0.1
    assert not model.get_layer("whiten").trainable


def test_pipeline_alternates_flips_and_translates_within_bounds() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (300, 32, 32, 3), dtype=np.uint8)
    x[:, :, :, 0] = np.arange(300)[:, None, None] % 256  # channel 0 tells the image apart
    y = np.arange(300)
    batches = Batches(x, y, 64, augment="flip-translate", translate=2, seed=3)
    try:
        epochs = [batches.make_epoch(e) for e in range(2)]
    finally:
        batches.close()
    mirrored = []
    for images, labels in epochs:
        assert images.shape == x.shape and sorted(labels) == list(range(300))
        assert (images[:, :, :, 0] == (labels % 256)[:, None, None]).all()  # labels follow images
        flags = {}
        for image, label in zip(images, labels, strict=True):
            src = x[label]
            padded = np.pad(src, ((2, 2), (2, 2), (0, 0)), mode="reflect")
            crops = [padded[a : a + 32, b : b + 32] for a in range(5) for b in range(5)]
            plain = any((image == c).all() for c in crops)
            flipped = any((image == c[:, ::-1]).all() for c in crops)
            assert plain or flipped
            flags[int(label)] = flipped and not plain
        mirrored.append(flags)
    decided = [k for k in mirrored[0] if mirrored[0][k] or mirrored[1][k]]
    assert all(mirrored[0][k] != mirrored[1][k] for k in decided)  # each epoch mirrors the other half
    assert 100 < sum(mirrored[0].values()) < 200


def test_pipeline_hands_out_each_epoch_once_to_concurrent_readers() -> None:
    """Keras reads Batches with two threads (its enqueuer; see the class): an epoch's batches, asked for
    together and in any order, all come from one epoch, every image once, and the epochs are the ones a
    single reader gets (no epoch prepared twice or skipped, so the flips still alternate)."""
    import concurrent.futures

    x = np.zeros((1000, 32, 32, 3), np.uint8)

    def read(threads: int) -> list[np.ndarray]:
        batches = Batches(x, np.arange(1000), 50, augment="flip-translate", seed=0)
        assert batches.workers == 2 and not batches.use_multiprocessing
        epochs = []
        try:
            with concurrent.futures.ThreadPoolExecutor(threads) as pool:
                for epoch in range(3):
                    order = np.random.default_rng(epoch).permutation(len(batches))
                    labels = list(pool.map(lambda i: batches[int(i)][1], order))
                    epochs.append(np.concatenate([labels[k] for k in np.argsort(order)]))
                    batches.on_epoch_end()
        finally:
            batches.close()
        return epochs

    alone, together = read(1), read(8)
    for one, many in zip(alone, together, strict=True):
        assert sorted(many) == list(range(1000))
        np.testing.assert_array_equal(one, many)
    assert not (alone[0] == alone[1]).all()


def test_pipeline_is_repeatable_with_a_seed() -> None:
    x = np.random.default_rng(1).integers(0, 256, (100, 32, 32, 3), dtype=np.uint8)
    a, b = (Batches(x, np.arange(100), 10, seed=5) for _ in range(2))
    try:
        assert all((u == v).all() for u, v in zip(a[3], b[3], strict=True))
    finally:
        a.close()
        b.close()


def test_colour_jitter_shifts_brightness_and_scales_contrast_within_bounds() -> None:
    """``color``: each image's brightness moved by up to color x 64 levels and its contrast about the
    training set's mean scaled by 1 +- color, anew each epoch; without it the epoch is what it was."""
    rng = np.random.default_rng(0)
    x = rng.integers(40, 216, (400, 32, 32, 3), dtype=np.uint8)  # away from 0 and 255: nothing clipped
    y = np.arange(400)

    def two_epochs(color: float) -> list[tuple[np.ndarray, np.ndarray]]:
        """What the trainer reads: each epoch's batches, in order."""
        batches = Batches(x, y, 50, augment="none", color=color, seed=7)
        epochs = []
        try:
            for _ in range(2):
                parts = [batches[i] for i in range(len(batches))]
                epochs.append(tuple(np.concatenate(p) for p in zip(*parts, strict=True)))
                batches.on_epoch_end()
        finally:
            batches.close()
        return epochs

    before, after = two_epochs(0.0), two_epochs(0.2)
    mean = x.mean(axis=(0, 1, 2))
    factors = []
    np.testing.assert_array_equal(after[0][1], before[0][1])  # the same first order: only pixels change
    for same, labels in before:
        np.testing.assert_array_equal(same, x[labels])  # color 0 changes nothing
    for images, labels in after:
        assert images.dtype == np.uint8 and images.shape == x.shape
        src = x[labels].astype(np.float64) - mean
        out = images.astype(np.float64) - mean
        for a, b in zip(src[:50], out[:50], strict=True):
            # out = (src + shift) * scale, to within rounding: fit scale and shift per image
            scale, offset = np.polyfit(a.ravel(), b.ravel(), 1)
            shift = offset / scale
            assert 0.8 - 0.01 <= scale <= 1.2 + 0.01 and abs(shift) <= 0.2 * 64 + 1
            assert np.abs(b - (a + shift) * scale).max() <= 1.0  # exactly that map, rounded
            factors.append(scale)
    assert np.std(factors) > 0.05  # drawn per image, not one for all
    first, second = (images[np.argsort(labels)] for images, labels in after)  # back in x's order
    assert (first != second).any(axis=(1, 2, 3)).mean() > 0.9  # drawn anew each epoch
    for nonsense in (-0.1, 1.0):
        with pytest.raises(ValueError, match="colour jitter"):
            Batches(x, y, 50, color=nonsense)


# The flags of /proc/cpuinfo (those that matter, among the others) on each kind of CPU we run on.
SAPPHIRE_RAPIDS = "fpu sse2 avx2 avx512f avx512bw avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8"
EPYC_GENOA = "fpu sse2 avx2 avx512f avx512bw avx512_vnni avx512_bf16 avx512_vbmi2"
SKYLAKE_SERVER = "fpu sse2 avx2 avx512f avx512bw avx512vl avx512cd"
AVX2_DESKTOP = "fpu sse2 avx avx2 fma"


@pytest.mark.parametrize(
    ("flags", "backend", "expected"),
    [
        (SAPPHIRE_RAPIDS, "tensorflow", "mixed_bfloat16"),  # AMX
        (SAPPHIRE_RAPIDS, "torch", "mixed_bfloat16"),
        (SAPPHIRE_RAPIDS, "jax", "float32"),  # XLA's CPU backend gains nothing from bf16
        (EPYC_GENOA, "tensorflow", "mixed_bfloat16"),  # AVX512-BF16, no AMX: 1.50-1.77x, measured
        (EPYC_GENOA, "torch", "float32"),  # not measured there: float32 stays
        (EPYC_GENOA, "jax", "float32"),
        (SKYLAKE_SERVER, "tensorflow", "float32"),  # AVX-512 without bf16 units: emulated, slow
        (AVX2_DESKTOP, "tensorflow", "float32"),
        ("", "tensorflow", "float32"),  # no /proc/cpuinfo
    ],
)
def test_auto_precision_for_each_kind_of_cpu(flags: str, backend: str, expected: str) -> None:
    """What the flags promise, measured: bfloat16 only where its units also run faster than float32 by
    the margin; the measurement is asked for only where the flags promise such units."""
    asked: list[float] = []

    def measured(speedup: float):
        def speedup_here() -> float:
            asked.append(speedup)
            return speedup

        return speedup_here

    # As measured: 3.2x on the Xeon with AMX, 1.95x for the AMD EPYC's products.
    assert precision.cpu_precision(backend, set(flags.split()), measured(2.0)) == expected
    # The same flags where the kernels do not deliver (the Xeon with AMX off for oneDNN: 0.60x), or
    # bfloat16 does not run at all (0.0), or gains too little for mixed precision's casts to pay.
    for slow in (0.6, 0.0, precision.BFLOAT16_MARGIN - 0.01):
        assert precision.cpu_precision(backend, set(flags.split()), measured(slow)) == "float32"
    assert bool(asked) == (expected == "mixed_bfloat16")


def test_auto_precision_reads_this_machines_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    # Other kinds of CPU than this one, by their flags (the measurement is this machine's own).
    monkeypatch.setattr(precision, "gpu_visible", lambda: False)
    for flags in (EPYC_GENOA, AVX2_DESKTOP):
        monkeypatch.setattr(precision, "cpu_flags", lambda flags=flags: set(flags.split()))
        expected = precision.cpu_precision("tensorflow", set(flags.split()), precision.bfloat16_speedup)
        assert precision.resolve_precision("auto") == expected
    monkeypatch.setattr(precision, "gpu_visible", lambda: True)
    assert precision.resolve_precision("auto") == "mixed_float16"


def test_this_cpu_is_read_once_from_proc_cpuinfo() -> None:
    """The flags and the model name come from the first processor's block (every benchmark's line and the
    kernels' probe name the CPU with them)."""
    with open("/proc/cpuinfo") as f:
        first = f.read().split("\n\n")[0]
    fields = dict((k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in first.splitlines()))
    assert precision.cpu_flags() == set(fields["flags"].split()) and "fpu" in precision.cpu_flags()
    assert (
        precision.cpu_model()
        == f"{fields['model name']}, family {fields['cpu family']} model {fields['model']}"
    )
    assert precision.cpu_info() is precision.cpu_info()  # read once


def test_a_run_names_the_machine_it_trains_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a trained model keeps beside its images/s: this CPU, its clock, the features the kernels turn
    on, oneDNN's cap where one is set, the cores this process may use; as one line for people."""
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    facts = precision.machine()
    assert facts["cpu"] == precision.cpu_model() and "gpus" not in facts  # no GPU here
    assert facts["features"] == [f for f in precision.KERNEL_FEATURES if f in precision.cpu_flags()]
    assert facts["cores"] == len(os.sched_getaffinity(0))
    assert facts["ghz"] == round(float(precision.cpu_info()["cpu MHz"]) / 1000, 1)
    assert precision.machine_text(facts) == (
        f"{facts['cpu']} at {facts['ghz']:g} GHz ({', '.join(facts['features']) or 'no AVX2/AVX-512/AMX'}), "
        f"{facts['cores']} cores"
    )
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    held = precision.machine(gpus=False)
    assert held["onednn_isa"] == "AVX2" and "oneDNN held to AVX2)" in precision.machine_text(held)
    # A stored record's facts are whatever JSON its saver sent: shown, never trusted to have their types.
    assert precision.machine_text({"cpu": "X", "ghz": "fast", "features": "avx2", "cores": [2]}) == "X"
    assert precision.machine_text({"cpu": "X", "features": [], "gpus": ["gpu:0"]}) == (
        "X (no AVX2/AVX-512/AMX), gpu:0"
    )
    assert precision.machine_text(["odd"]) == "['odd']"
    kernels = {"block1_conv1": "oneDNN", "block3_conv1": "written out", "block2_conv1": "oneDNN"}
    assert precision.kernels_text(kernels) == "oneDNN: block1_conv1, block2_conv1; written out: block3_conv1"
    assert precision.kernels_text("odd") == "odd"


def test_bfloat16_is_measured_on_this_cpu() -> None:
    """The real measurement, here: it runs, and "auto" follows it. On both kinds of CPU we run on (a Xeon
    with AMX, an AMD EPYC with AVX512-BF16) bfloat16 measures faster and is chosen."""
    speedup = precision.bfloat16_speedup()
    assert speedup > 0.0  # it ran (0.0: bfloat16 failed to run)
    promised = precision.cpu_precision("tensorflow", precision.cpu_flags(), lambda: float("inf"))
    chosen = precision.resolve_precision("auto")
    pays = speedup >= precision.BFLOAT16_MARGIN
    assert chosen == ("mixed_bfloat16" if promised == "mixed_bfloat16" and pays else "float32")
    if promised == "mixed_bfloat16":
        assert pays, f"bfloat16 measured at {speedup:.2f}x float32's speed on a CPU with bfloat16 units"


PROBE_CHECK = """
import json, sys
import numpy as np
from keras import ops
from jupyter_cifar.engine import precision

rng = np.random.default_rng(0)
a, x, k = (rng.normal(size=s).astype("float32") for s in ((4, 4), (2, 5, 5, 3), (3, 3, 3, 2)))
# sum(a @ a) and sum(conv(x, k, "same")), differentiated by hand.
ones = np.ones_like(a)
want_a = ones @ a.T + a.T @ ones
xpad = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
want_k = np.zeros_like(k)
want_xpad = np.zeros_like(xpad)
for i in range(3):
    for j in range(3):
        want_k[i, j] = xpad[:, i : i + 5, j : j + 5].sum(axis=(0, 1, 2))[:, None]
        want_xpad[:, i : i + 5, j : j + 5] += k[i, j].sum(axis=1)
want_x = want_xpad[:, 1:-1, 1:-1]
got = precision._gradients(sys.argv[1])(*(ops.convert_to_tensor(t) for t in (a, x, k)))
errors = [np.abs(ops.convert_to_numpy(g) - w).max() for g, w in zip(got, (want_a, want_x, want_k))]
print(json.dumps([float(e) for e in errors]))
"""


def test_the_bfloat16_probe_runs_the_backward_kernels_too() -> None:
    """The probe times what training runs: the gradients of its product and convolution (for the
    input and for the filters), computed by the backend's own differentiation, here checked against
    the gradients worked out by hand, under TensorFlow (here) and under JAX (a process of its own)."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE_CHECK, "tensorflow"], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert max(json.loads(out.stdout.strip().splitlines()[-1])) < 1e-4
    errors, _ = run_under_jax(PROBE_CHECK, "jax")
    assert max(errors) < 1e-4
    with pytest.raises(BadParameter, match="numpy"):
        precision._gradients("numpy")


@pytest.mark.skipif(
    "avx512f" not in precision.cpu_flags(), reason="oneDNN's AVX-512 cap needs an AVX-512 CPU"
)
def test_auto_precision_picks_float32_where_bfloat16_kernels_are_slow() -> None:
    """A CPU whose flags promise bfloat16 but whose kernels run it slower than float32, for real: oneDNN
    held to plain AVX-512 (``ONEDNN_MAX_CPU_ISA``, read when TensorFlow loads, hence a process of its own)
    emulates bfloat16. The measurement sees it and "auto" trains in float32; the flags alone would have
    said bfloat16."""
    script = (
        "import json; from jupyter_cifar.engine import precision as p;"
        "print(json.dumps({'speedup': p.bfloat16_speedup(), 'auto': p.resolve_precision('auto')}))"
    )
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX512_CORE", "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    child = json.loads(out.stdout.strip().splitlines()[-1])
    assert 0.0 < child["speedup"] < 1.0, child  # emulated: measured at 0.24x on the Xeon
    assert child["auto"] == "float32", child


def test_precision_settings() -> None:
    assert precision.resolve_precision("float32") == "float32"
    assert precision.resolve_precision("auto") in ("float32", "mixed_bfloat16", "mixed_float16")
    with pytest.raises(BadParameter):
        precision.resolve_precision("float8")
    with pytest.raises(BadParameter):
        TrainConfig(precision="half").resolved()
    before = keras.config.dtype_policy().name
    model = nets.build_model("fast", precision="mixed_bfloat16")
    assert keras.config.dtype_policy().name == before  # the global policy is left as it was
    assert model.get_layer("block1_conv1").compute_dtype == "bfloat16"
    assert model.layers[-1].compute_dtype == "float32"  # the softmax stays float32
    assert nets.PRESETS["tutorial"].precision == "float32"


def test_presets_are_listed_with_their_recipes() -> None:
    assert nets.DEFAULT_PRESET == "fast"
    assert {"tutorial", "fast", "accurate"} <= set(nets.PRESETS)
    for preset in nets.PRESETS.values():
        assert preset.augment in ("none", "flip", "flip-translate")
        assert preset.precision in precision.PRECISIONS


def test_convs_start_by_passing_their_inputs_through() -> None:
    """airbench's partial dirac init: each 3x3 conv's first filters copy one input channel each."""
    model = nets.build_model("fast")
    x = np.random.default_rng(0).normal(size=(2, 15, 15, 24)).astype(np.float32)
    conv = model.get_layer("block1_conv1")  # 24 channels in (the whitening's), 24 out
    out = keras.ops.convert_to_numpy(conv(x))
    np.testing.assert_allclose(out, x, atol=1e-6)
    wider = model.get_layer("block2_conv1")  # 24 in, 64 out: the first 24 copy, the rest are random
    (kernel,) = wider.get_weights()
    assert kernel.shape == (3, 3, 24, 64)
    np.testing.assert_array_equal(kernel[1, 1, :, :24], np.eye(24))
    assert np.abs(kernel[..., 24:]).sum() > 0
