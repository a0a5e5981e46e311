"""Recipe pieces that change the optimizer or the weights: Muon for the convolutions' kernels
(``jupyter_cifar.engine.muon``) and airbench's lookahead (``jupyter_cifar.engine.lookahead``).

Whether they pay is the benchmarks' to say (``benchmarks/recipe_sweep.py --variants ep5,ep5+muon``); these
tests pin what each really does: Muon's step orthogonalized, renormalised, with Nesterov momentum,
wired to the kernels only; lookahead's slow average really averaging, on its ramped schedule.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import keras
import numpy as np
import pytest

from jupyter_cifar.engine import nets
from jupyter_cifar.engine.lookahead import Lookahead, pull
from jupyter_cifar.engine.muon import KernelMuon, orthogonalize


def _numpy(x: object) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x), np.float64)


@pytest.mark.parametrize("shape", [(576, 64), (64, 576), (128, 128)])
def test_orthogonalize_equalises_the_singular_values(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    u, _ = np.linalg.qr(rng.normal(size=(shape[0], min(shape))))
    v, _ = np.linalg.qr(rng.normal(size=(shape[1], min(shape))))
    spread = np.geomspace(0.1, 10, min(shape))  # singular values 100x apart
    matrix = (u * spread) @ v.T
    out = _numpy(orthogonalize(keras.ops.convert_to_tensor(matrix.astype(np.float32)), steps=5))
    assert out.shape == shape
    singular = np.linalg.svd(out, compute_uv=False)
    assert singular.min() > 0.6 and singular.max() < 1.25, (singular.min(), singular.max())
    # ... and it points where U V^T does (the nearest semi-orthogonal matrix).
    target = u @ v.T
    cosine = (out * target).sum() / np.linalg.norm(out) / np.linalg.norm(target)
    assert cosine > 0.97


def test_orthogonalize_in_bfloat16_stays_near_float32() -> None:
    matrix = np.random.default_rng(4).normal(size=(2304, 256)).astype(np.float32)
    exact = _numpy(orthogonalize(keras.ops.convert_to_tensor(matrix)))
    rough = _numpy(orthogonalize(keras.ops.convert_to_tensor(matrix), dtype="bfloat16"))
    assert rough.dtype == exact.dtype and rough.shape == exact.shape
    assert np.linalg.norm(rough - exact) / np.linalg.norm(exact) < 0.03


def test_muon_iterates_in_bfloat16_where_the_model_computes_in_16_bits() -> None:
    preset = dataclasses.replace(nets.PRESETS["fast"], kernels="muon")
    for compute, expected in (("float32", "float32"), ("bfloat16", "bfloat16"), ("float16", "bfloat16")):
        optimizer = nets.make_optimizer(preset, 0.1, total_steps=10, compute_dtype=compute)
        (muon,) = [o for o in optimizer.optimizers if isinstance(o, KernelMuon)]
        assert muon.ns_dtype == expected
    model = nets.build_model("fast", precision="mixed_bfloat16")
    nets.compile_for_training(model, preset, 0.1, total_steps=10)
    (muon,) = [o for o in model.optimizer.optimizers if isinstance(o, KernelMuon)]
    assert muon.ns_dtype == "bfloat16"


def test_a_step_renormalises_the_kernel_then_moves_it_by_the_orthogonalized_gradient() -> None:
    rng = np.random.default_rng(1)
    start = rng.normal(size=(3, 3, 8, 16)).astype(np.float32) * 5
    kernel = keras.Variable(start, name="kernel")
    optimizer = KernelMuon(0.1, momentum=0.0)
    gradient = rng.normal(size=start.shape).astype(np.float32)
    optimizer.apply([keras.ops.convert_to_tensor(gradient)], [kernel])
    renormalised = start * np.sqrt(16) / np.linalg.norm(start)
    step = _numpy(orthogonalize(keras.ops.convert_to_tensor(gradient.reshape(-1, 16)))).reshape(start.shape)
    np.testing.assert_allclose(_numpy(kernel), renormalised - 0.1 * step, atol=1e-5)


def test_nesterov_momentum_carries_earlier_gradients() -> None:
    """Two steps with different gradients: the second orthogonalizes g2 + m * (m * g1 + g2)."""
    rng = np.random.default_rng(2)
    start = rng.normal(size=(32, 8)).astype(np.float32)
    g1, g2 = (rng.normal(size=start.shape).astype(np.float32) for _ in range(2))
    kernel = keras.Variable(start, name="kernel")
    optimizer = KernelMuon(0.05, momentum=0.6)
    optimizer.apply([keras.ops.convert_to_tensor(g1)], [kernel])
    after_one = _numpy(kernel)
    optimizer.apply([keras.ops.convert_to_tensor(g2)], [kernel])
    expected_direction = g2 + 0.6 * (0.6 * g1 + g2)
    renormalised = after_one * np.sqrt(8) / np.linalg.norm(after_one)
    step = _numpy(orthogonalize(keras.ops.convert_to_tensor(expected_direction.astype(np.float32))))
    np.testing.assert_allclose(_numpy(kernel), renormalised - 0.05 * step, atol=1e-5)
    # Without the first gradient's momentum the result differs: the carried term is really there.
    alone = _numpy(orthogonalize(keras.ops.convert_to_tensor(g2)))
    assert np.abs(renormalised - 0.05 * alone - _numpy(kernel)).max() > 1e-3


def test_refuses_what_it_cannot_train() -> None:
    with pytest.raises(ValueError, match="momentum"):
        KernelMuon(momentum=1.0)
    with pytest.raises(ValueError, match="ns_steps"):
        KernelMuon(ns_steps=0)
    bias = keras.Variable(np.zeros(4, np.float32), name="bias")
    with pytest.raises(ValueError, match="kernels only"):
        KernelMuon().apply([keras.ops.ones((4,))], [bias])


def test_the_muon_recipe_gives_the_kernels_to_muon_and_the_rest_to_sgd() -> None:
    preset = dataclasses.replace(nets.PRESETS["fast"], kernels="muon", muon_lr=0.2, bias_lr=4.0)
    model = nets.build_model("fast")
    optimizer = nets.make_optimizer(preset, preset.learning_rate, total_steps=50)  # Muon at 0.2
    assert isinstance(optimizer, keras.optimizers.MultiOptimizer)
    variables = model.trainable_variables
    before = {v.path: _numpy(v).copy() for v in variables}
    optimizer.apply([keras.ops.ones(v.shape) * 0.01 for v in variables], variables)
    kernels = [v for v in variables if re.fullmatch(nets.CONV_KERNELS, v.path)]
    assert len(kernels) == 6
    for v in kernels:  # renormalised to sqrt(filters), then moved by about lr's share of that
        filters = v.shape[-1]
        moved = np.linalg.norm(_numpy(v) - before[v.path] * np.sqrt(filters) / np.linalg.norm(before[v.path]))
        assert np.linalg.norm(_numpy(v)) == pytest.approx(np.sqrt(filters), rel=0.1)
        assert 0.02 < moved < 0.3 * np.sqrt(filters)
    # The head is SGD's: a step of exactly lr times the (decayed-free, warming-up) rate's gradient.
    head = next(v for v in variables if v.path.startswith("classify"))
    offsets = [v for v in variables if re.fullmatch(nets.BN_OFFSETS, v.path)]
    head_step = np.abs(_numpy(head) - before[head.path]).mean()
    offset_step = np.mean([np.abs(_numpy(v) - before[v.path]).mean() for v in offsets])
    assert head_step > 0 and offset_step == pytest.approx(4 * head_step, rel=1e-3)
    with pytest.raises(ValueError, match="unknown optimizer for the kernels"):
        nets.make_optimizer(dataclasses.replace(preset, kernels="adam"), 0.1, total_steps=50)


def test_a_model_trained_with_muon_saves_and_loads_with_plain_keras(tmp_path) -> None:
    """One step of training, saved: plain Keras opens it in safe mode, for inference and to train on."""
    preset = dataclasses.replace(nets.PRESETS["fast"], kernels="muon")
    model = nets.build_model("fast")
    nets.compile_for_training(model, preset, 0.1, total_steps=10)
    x = np.random.default_rng(3).integers(0, 256, (16, 32, 32, 3)).astype(np.float32)
    y = keras.utils.to_categorical(np.arange(16) % 10, 10)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    path = tmp_path / "muon.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True, compile=False)
    np.testing.assert_allclose(_numpy(loaded(x)), _numpy(model(x)), atol=1e-5)
    resumed = keras.saving.load_model(path, safe_mode=True)  # the optimizer too: it is registered
    assert any(isinstance(o, KernelMuon) for o in resumed.optimizer.optimizers)


def test_lookahead_pull_ramps_up_as_a_cube_and_ends_on_the_slow_copy() -> None:
    assert pull(0, 100, 0.8, 3) == 0.0
    assert pull(50, 100, 0.8, 3) == pytest.approx(0.8 / 8)
    assert pull(99, 100, 0.8, 3) == pytest.approx(0.8 * 0.99**3)
    assert pull(100, 100, 0.8, 3) == 1.0
    with pytest.raises(ValueError, match="bad lookahead"):
        Lookahead([], 0)


def test_lookahead_really_averages_and_sets_the_weights_to_the_average() -> None:
    """Drive the callback by hand: the weights move as an optimizer would move them between its calls."""
    v = keras.Variable(np.zeros(3, np.float32), name="w")
    callback = Lookahead([v], total_steps=6, every=2, decay=0.5, power=1.0)
    callback.on_train_begin()
    for step, value in enumerate([1.0, 2.0, 4.0, 8.0, 16.0, 32.0]):
        v.assign(_numpy(v) + value)  # an optimizer's step
        callback.on_train_batch_end(step)
    # Step 2: w = 3, d = 1/6, slow = 2.5, w := 2.5; step 4: w = 2.5 + 4 + 8 = 14.5,
    # d = 1/3, slow = 2.5/3 + 2/3 * 14.5 = 10.5, w := 10.5; step 6 (the last): w := slow = 10.5.
    np.testing.assert_allclose(_numpy(v), 10.5)
    np.testing.assert_allclose(callback.slow[0], 10.5)


def test_the_trainer_ends_a_lookahead_run_on_the_slow_weights(cifar10) -> None:
    from jupyter_cifar.engine.training import TrainConfig, Trainer

    preset = dataclasses.replace(nets.PRESETS["fast"], lookahead=True)
    nets.PRESETS["fast_lookahead_test"] = dataclasses.replace(preset, name="fast_lookahead_test")
    try:
        seen: list[Lookahead] = []
        config = TrainConfig(preset="fast_lookahead_test", epochs=1, train_limit=512, test_limit=200, seed=0)
        trainer = Trainer(cifar10, config)
        made = trainer._recipe_callbacks

        def keep(model: keras.Model, total_steps: int) -> list:
            callbacks = made(model, total_steps)
            seen.extend(callbacks)
            return callbacks

        trainer._recipe_callbacks = keep  # type: ignore[method-assign]
        result = trainer.run()
    finally:
        del nets.PRESETS["fast_lookahead_test"]
    assert result.status == "finished", result.error
    (callback,) = seen
    assert callback.step == callback.total > 0
    kernel = result.model.get_layer("block2_conv2").kernel
    slow = callback.slow[[v.path for v in callback.variables].index(kernel.path)]
    np.testing.assert_allclose(_numpy(kernel), slow, atol=1e-6)


def test_a_muon_checkpoint_passes_the_model_file_checks_and_a_lookalike_does_not(tmp_path) -> None:
    """A checkpoint names KernelMuon in its compile config: ours, exactly as Keras writes it, passes."""
    import json
    import zipfile

    from jupyter_cifar.engine.modelfiles import load_model, save_model
    from jupyter_cifar.errors import ModelFileError

    preset = dataclasses.replace(nets.PRESETS["fast"], kernels="muon")
    model = nets.build_model("fast")
    nets.compile_for_training(model, preset, 0.1, total_steps=10)
    x = np.random.default_rng(5).integers(0, 256, (8, 32, 32, 3)).astype(np.float32)
    model.fit(x, keras.utils.to_categorical(np.arange(8), 10), verbose=0)
    path = save_model(model, tmp_path / "checkpoint.keras")
    assert "KernelMuon" in zipfile.ZipFile(path).read("config.json").decode()
    np.testing.assert_allclose(_numpy(load_model(path)(x)), _numpy(model(x)), atol=1e-5)

    with zipfile.ZipFile(path) as z:
        entries = {name: z.read(name) for name in z.namelist()}

    def naming(module: str) -> Path:
        text = entries["config.json"].decode().replace('"jupyter_cifar.engine.muon"', f'"{module}"')
        assert json.loads(text) and f'"{module}"' in text  # still a config, naming KernelMuon in module
        written = tmp_path / f"{module}.keras"
        with zipfile.ZipFile(written, "w") as z:
            for name, data in entries.items():
                z.writestr(name, text if name == "config.json" else data)
        return written

    # A checkpoint written before the engine became a package names the module KernelMuon lived in then.
    np.testing.assert_allclose(
        _numpy(load_model(naming("jupyter_cifar.muon"))(x)), _numpy(model(x)), atol=1e-5
    )
    with pytest.raises(ModelFileError, match="refused"):
        load_model(naming("os"))


def test_balanced_is_accurates_network_and_recipe_for_fewer_epochs() -> None:
    balanced, accurate = nets.PRESETS["balanced"], nets.PRESETS["accurate"]
    shapes = [[tuple(w.shape) for w in nets.build_model(p).weights] for p in ("balanced", "accurate")]
    assert shapes[0] == shapes[1]  # the same network
    assert balanced.epochs < accurate.epochs and balanced.batch_size < accurate.batch_size
    same = ("kernels", "muon_lr", "learning_rate", "weight_decay", "bias_lr", "tta", "lookahead")
    assert {k: getattr(balanced, k) for k in same} == {k: getattr(accurate, k) for k in same}


@pytest.mark.parametrize("name", ["fast", "accurate", "balanced"])
def test_whitened_presets_train_their_kernels_with_muon_at_its_rate_share(name: str) -> None:
    preset = nets.PRESETS[name]
    assert preset.kernels == "muon" and not preset.lookahead
    for share in (1.0, 0.25):  # the preset's own rate, then a fine-tuning's quarter of it
        optimizer = nets.make_optimizer(preset, preset.learning_rate * share, total_steps=100)
        (muon,) = [o for o in optimizer.optimizers if isinstance(o, KernelMuon)]
        schedule = muon._learning_rate
        assert float(schedule(0)) == pytest.approx(preset.muon_lr * share)
        assert float(schedule(50)) == pytest.approx(preset.muon_lr * share / 2)  # linear to zero
        assert float(schedule(100)) == pytest.approx(0.0, abs=1e-9)
    assert nets.PRESETS["tutorial"].kernels == "sgd"  # Adam for everything: the seed's recipe
