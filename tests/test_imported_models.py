"""An imported Keras model works where a trained one does (issue 15, point 2): its input scaling said or
added at import, classified and evaluated at its own input size, trained further with ``train --from``.
Real command-line processes, real CIFAR-10."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
from keras import layers
from test_cli import assert_one_line_error, cli
from test_layersizes import FAMILIES, everyday_model

from jupyter_cifar.engine import nets
from jupyter_cifar.engine.modelfiles import load_model
from jupyter_cifar.engine.predict import predict_proba
from jupyter_cifar.engine.training import TrainConfig, Trainer
from jupyter_cifar.store import open_store

pytestmark = pytest.mark.slow


def plain_cnn() -> keras.Model:
    """A model trained the tutorial's way, on pixels its trainer divided by 255: no Rescaling layer."""
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [keras.Input((32, 32, 3)), layers.Conv2D(8, 3, activation="relu"), layers.GlobalAveragePooling2D(),
         layers.Dense(10)]
    )  # fmt: skip


def models(store: Path, *args: object) -> tuple[int, dict, str]:
    proc = cli("models", *args, "--store", store, "--json")
    return proc.returncode, json.loads(proc.stdout) if proc.stdout else {}, proc.stderr


def test_an_import_says_or_adds_its_input_scaling(tmp_path: Path) -> None:
    path = tmp_path / "plain.keras"
    model = plain_cnn()
    model.save(path)
    store = tmp_path / "store"
    status, record, _ = models(store, "import", path, "--name", "plain")
    assert status == 0 and record["metadata"]["input_scaling"].startswith("0-255 pixels assumed: the model")
    proc = cli("models", "import", path, "--name", "plain", "--store", store)
    assert "input: 0-255 pixels assumed" in proc.stdout and "--scale=0-1" in proc.stdout

    status, record, _ = models(store, "import", path, "--name", "plain", "--scale", "0-1")
    assert status == 0 and record["version"] == 3
    assert record["metadata"]["input_scaling"] == "Rescaling to 0-1 added in front (--scale 0-1)"
    with open_store(store) as stored:
        scaled = stored.load("plain:3")
    assert type(scaled.layers[0]).__name__ == "Rescaling"
    x = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(scaled.predict(x, verbose=0), model.predict(x / 255, verbose=0), atol=1e-5)

    with_layer = tmp_path / "scaled.keras"
    everyday_model("sequential-dropout").save(with_layer)
    proc = cli("models", "import", with_layer, "--name", "x", "--scale=-1-1", "--store", store)
    assert_one_line_error(proc, 2, "--scale", "scales its input itself")


def test_a_model_of_another_size_is_classified_and_evaluated_at_its_own(
    tmp_path: Path, cifar10_dir: Path, cifar10
) -> None:
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(input_shape=(96, 96, 3), weights=None, classes=10, alpha=0.35)
    path = tmp_path / "mobile96.keras"
    model.save(path)
    x = cifar10.x_test[:8]
    resized = keras.ops.image.resize(x.astype("float32"), (96, 96), antialias=True)
    expected = model.predict(resized, verbose=0)
    np.testing.assert_allclose(predict_proba(load_model(path), x), expected, atol=1e-5)
    proc = cli("evaluate", path, "--data", cifar10_dir, "--test-limit", "64", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["n"] == 64
    jpeg = next((cifar10_dir / "test").rglob("*.jpg"))
    proc = cli("classify", path, jpeg, "--json")
    assert proc.returncode == 0, proc.stderr
    [item] = json.loads(proc.stdout)
    assert item["ok"] and len(item["top"]) == 3
    # Training here feeds 32x32 images: a 96x96 model is refused for it, saying so.
    proc = cli("train", "--from", path, "--epochs", "1", "--data", cifar10_dir)
    assert_one_line_error(proc, 2, "--from", "it takes (96, 96, 3) inputs")


@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_imports_classifies_evaluates_and_trains_further(
    name: str, tmp_path: Path, cifar10_dir: Path
) -> None:
    """Issue 15's six everyday models, each through the whole path a trained model takes: imported by
    default, classified, evaluated, trained one epoch on 128 images (4 batches) with ``--from`` (history,
    parent)."""
    path = tmp_path / f"{name}.keras"
    keras.utils.set_random_seed(0)
    everyday_model(name).save(path)
    store = tmp_path / "store"
    assert models(store, "import", path, "--name", name)[0] == 0
    jpeg = next((cifar10_dir / "test" / "cat").glob("*.jpg"))
    proc = cli("classify", f"{name}:1", jpeg, "--store", store, "--json")
    assert proc.returncode == 0, proc.stderr
    [item] = json.loads(proc.stdout)
    assert item["ok"] and len(item["top"]) == 3
    proc = cli(
        "evaluate", f"{name}:1", "--data", cifar10_dir, "--test-limit", "64", "--store", store, "--json"
    )
    assert proc.returncode == 0, proc.stderr
    evaluation = json.loads(proc.stdout)
    assert evaluation["n"] == 64 and 0 <= evaluation["accuracy"] <= 1
    train = ("train", "--preset", "tutorial", "--epochs", "1", "--train-limit", "128", "--test-limit", "128",
             "--data", cifar10_dir, "--store", store, "--save", name, "--json")  # fmt: skip
    proc = cli(*train[:1], "--from", f"{name}:1", *train[1:])
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["name"] == name and result["version"] == 2 and result["status"] == "finished"
    status, record, _ = models(store, "show", f"{name}:2")
    assert status == 0
    meta = record["metadata"]
    assert meta["parent"] == f"{name}:1" and len(meta["history"]) == 1 and meta["dataset"]["n_train"] == 128
    if name in ("residual", "mobilenetv2"):  # ... and on from there: the history grows.
        proc = cli(*train[:1], "--from", f"{name}:2", *train[1:])
        assert proc.returncode == 0, proc.stderr
        assert len(models(store, "show", f"{name}:3")[1]["metadata"]["history"]) == 2


def test_a_model_of_other_classes_is_refused_for_training(tmp_path: Path, cifar10_dir: Path) -> None:
    path = tmp_path / "five.keras"
    keras.Sequential([keras.Input((32, 32, 3)), layers.Flatten(), layers.Dense(5)]).save(path)
    proc = cli("train", "--from", path, "--epochs", "1", "--data", cifar10_dir)
    assert_one_line_error(proc, 2, "--from", "it has 5 outputs, and CIFAR-10 has 10 classes")


@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_is_rebuilt_in_another_precision_with_its_weights(name: str) -> None:
    """What a model trained further goes through where its run's precision is not its own (the Trainer's
    rebuild): the same weights, bfloat16 inside, the last layer in float32, the same classes out."""
    model = everyday_model(name)
    mixed = nets.with_precision(model, "mixed_bfloat16")
    assert nets.compute_policy(model) == "float32" and nets.compute_policy(mixed) == "mixed_bfloat16"
    assert mixed.layers[-1].compute_dtype == "float32"
    for a, b in zip(model.get_weights(), mixed.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)  # mixed precision keeps float32 variables
    images = np.random.default_rng(0).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    plain = keras.ops.convert_to_numpy(model(images, training=False))
    inside = keras.ops.convert_to_numpy(mixed(images, training=False))
    assert inside.dtype == np.float32
    # bfloat16 keeps 3 significant digits: 6e-3 apart at most here (their untrained classes can tie, so
    # comparing the top class would say little)
    np.testing.assert_allclose(inside, plain, rtol=0.05, atol=0.02)
    back = nets.with_precision(mixed, "float32")
    assert nets.compute_policy(back) == "float32"
    np.testing.assert_allclose(keras.ops.convert_to_numpy(back(images, training=False)), plain, rtol=1e-5,
                               atol=1e-6)  # fmt: skip
    assert nets.with_precision(back, "float32") is back  # nothing to rebuild
    # A model trained in float16 on a GPU is saved as float32, whatever its network (not only a preset's).
    half = nets.with_precision(model, "mixed_float16")
    saved = nets.as_float32(half)
    assert nets.compute_policy(saved) == "float32" and nets.as_float32(mixed) is mixed


class Subclassed(keras.Model):
    def __init__(self) -> None:
        super().__init__()
        self.dense = layers.Dense(10)

    def call(self, x):
        return self.dense(keras.ops.mean(x, axis=(1, 2)))


def test_a_model_that_cannot_be_rebuilt_trains_in_its_own_precision(cifar10, caplog) -> None:
    """A subclassed model (no layer graph to rebuild) is refused by the rebuild, and the Trainer leaves it
    to train in the precision it has, saying so."""
    model = Subclassed()
    model(np.zeros((1, 32, 32, 3), np.float32))
    with pytest.raises(ValueError, match=r"cannot be rebuilt in mixed_bfloat16"):
        nets.with_precision(model, "mixed_bfloat16")
    trainer = Trainer(cifar10.subset(256, 64), TrainConfig(preset="tutorial", precision="mixed_bfloat16"))
    trainer.policy = "mixed_bfloat16"  # as the run resolved it
    assert trainer._in_policy(model) is model
    assert trainer.policy == "float32"  # what it trains in, said in its start event; not what was asked
    assert "trains in the precision it has, float32" in caplog.text
