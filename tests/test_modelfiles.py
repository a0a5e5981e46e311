"""Model files are data: standard .keras out, .keras and legacy .h5 in, never code run on load.

The hostile corpus (one file per published technique) is in test_hostile_models.py; here: round trips,
plain files that are not models, and the allow-list of layers with its opt-in.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hostile import BY_NAME as HOSTILE

from jupyter_cifar.errors import BadParameter, ModelFileError
from jupyter_cifar.modelfiles import (
    APP_LAYERS,
    EXTRA_LAYERS_ENV,
    MODEL_CLASSES,
    inspect_model_file,
    load_model,
    save_model,
)
from jupyter_cifar.nets import PRESETS, build_model, compile_for_training, with_flip_tta
from jupyter_cifar.predict import predict_proba


@pytest.fixture(scope="module")
def model():
    import keras

    keras.utils.set_random_seed(0)
    return build_model("fast")


@pytest.fixture(scope="module")
def images(cifar10):
    return cifar10.x_test[:64]


def test_keras_round_trip_gives_the_same_predictions(model, images, tmp_path: Path) -> None:
    path = save_model(model, tmp_path / "sub" / "m.keras")
    assert path.exists() and not list(path.parent.glob(".*tmp*"))
    again = load_model(path)
    np.testing.assert_allclose(predict_proba(again, images), predict_proba(model, images), atol=1e-6)


def test_a_saved_file_opens_with_plain_keras(model, images, tmp_path: Path) -> None:
    import keras

    path = save_model(model, tmp_path / "m.keras")
    plain = keras.saving.load_model(path)  # no project code involved, compile config included
    np.testing.assert_allclose(plain.predict(images, verbose=0), predict_proba(model, images), atol=1e-5)


def test_legacy_h5_loads(images, tmp_path: Path) -> None:
    seed_model = build_model("tutorial")  # the seed saved this network as .h5
    path = tmp_path / "seed.h5"
    seed_model.save(path)
    loaded = load_model(path)
    np.testing.assert_allclose(predict_proba(loaded, images), predict_proba(seed_model, images), atol=1e-6)


def test_a_lambda_layer_is_refused_and_never_runs(tmp_path: Path) -> None:
    import keras

    marker = tmp_path / "ran.txt"

    def touch(x):
        marker.write_text("code from the model file ran")
        return x

    inputs = keras.Input((32, 32, 3))
    hostile = keras.Model(inputs, keras.layers.Lambda(touch)(inputs))
    path = tmp_path / "hostile.keras"
    hostile.save(path)
    marker.unlink()  # building the model ran it once, here, on purpose
    with pytest.raises(ModelFileError, match=r"hostile\.keras: refused: .*Lambda', which runs code"):
        load_model(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("notes.keras", b"just some text", "not a Keras model file"),
        ("empty.keras", b"", "not a Keras model file"),
        ("fake.h5", b"\x89HDF\r\n\x1a\n" + b"\0" * 100, "cannot be read as a model file"),
    ],
)
def test_files_that_are_not_models(tmp_path: Path, name: str, content: bytes, problem: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match=problem) as err:
        load_model(path)
    assert str(path) in str(err.value)


def test_a_zip_that_is_not_a_model(tmp_path: Path) -> None:
    path = tmp_path / "archive.keras"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("hello.txt", "hi")
    with pytest.raises(ModelFileError, match=r"archive\.keras"):
        load_model(path)


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="no such model file"):
        load_model(tmp_path / "missing.keras")
    with pytest.raises(ModelFileError, match="is a folder"):
        load_model(tmp_path)


def test_contents_decide_the_format_not_the_name(model, tmp_path: Path) -> None:
    path = save_model(model, tmp_path / "m.keras")
    renamed = path.rename(tmp_path / "m.h5")
    with pytest.raises(ModelFileError, match="must be named"):
        load_model(renamed)


def test_save_refuses_other_suffixes(model, tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match=r"\.keras"):
        save_model(model, tmp_path / "m.h5")


# -- the layers the app builds, and the opt-in for others ----------------------------------------------


@pytest.fixture(autouse=True)
def _no_opt_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(EXTRA_LAYERS_ENV, raising=False)


def layer_classes(config: object) -> set[str]:
    """The class names of every layer in a saved config (nested models' layers included)."""
    found: set[str] = set()
    stack = [config]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("module") == "keras.layers":
                found.add(node["class_name"])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def test_every_preset_passes_and_the_allow_list_is_what_the_presets_build(tmp_path: Path) -> None:
    """APP_LAYERS cannot drift from nets.py: it is exactly the layers of the presets' saved models.

    Each is saved as training saves it (compiled with its recipe; test-time mirroring where the preset
    has it), so the optimizer, schedule, loss and metrics in the file pass the check too.
    """
    used: set[str] = set()
    for preset in PRESETS.values():
        model = build_model(preset.name)
        if preset.tta:
            model = with_flip_tta(model)
        compile_for_training(model, preset, preset.learning_rate, total_steps=100)
        path = save_model(model, tmp_path / f"{preset.name}.keras")
        facts = inspect_model_file(path)  # no opt-in
        assert facts["architecture"] == preset.name and facts["input_shape"] == [32, 32, 3]
        used |= layer_classes(json.loads(zipfile.ZipFile(path).read("config.json")))
    assert used == APP_LAYERS
    assert not used & MODEL_CLASSES


@pytest.fixture(scope="module")
def dropout_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A model with a plain Keras layer the app does not build (Dropout), as .keras and legacy .h5."""
    import keras

    folder = tmp_path_factory.mktemp("dropout")
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    x = keras.layers.Dropout(0.5)(x)
    outputs = keras.layers.Dense(10)(keras.layers.GlobalMaxPooling2D()(x))
    model = keras.Model(inputs, outputs)
    files = {"keras": folder / "dropout.keras", "h5": folder / "dropout.h5"}
    for path in files.values():
        model.save(path)
    return files


@pytest.mark.parametrize("fmt", ["keras", "h5"])
def test_a_keras_layer_the_app_does_not_build_needs_an_opt_in(
    fmt: str, dropout_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = dropout_files[fmt]
    with pytest.raises(ModelFileError) as refusal:
        load_model(path)
    message = str(refusal.value)
    assert message.startswith(f"{path}: refused: the model uses the layer Dropout")
    assert f"{EXTRA_LAYERS_ENV}=Dropout" in message and "extra_layers=['Dropout']" in message
    with pytest.raises(ModelFileError, match="Dropout"):
        inspect_model_file(path, extra_layers=["BatchNormalization"])  # another layer does not help

    model = load_model(path, extra_layers=["Dropout"])
    assert "Dropout" in {type(layer).__name__ for layer in model.layers}
    assert inspect_model_file(path, extra_layers="Dropout, Flatten")["format"] == fmt
    monkeypatch.setenv(EXTRA_LAYERS_ENV, "Dropout")
    assert inspect_model_file(path)["format"] == fmt
    monkeypatch.setenv(EXTRA_LAYERS_ENV, "keras")  # every built-in Keras layer
    assert inspect_model_file(path)["format"] == fmt


@pytest.mark.parametrize("name", ["lambda.keras", "lambda.h5", "torch_wrapper.keras", "tfsm_layer.keras"])
def test_code_running_layers_stay_refused_when_every_keras_layer_is_allowed(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, marker = tmp_path / name, tmp_path / "ran"
    HOSTILE[name].build(path, marker)
    monkeypatch.setenv(EXTRA_LAYERS_ENV, "keras")
    for entry in (inspect_model_file, load_model):
        with pytest.raises(ModelFileError, match=r"which runs code from the file \(never allowed\)"):
            entry(path, extra_layers=["keras"])
    assert not marker.exists()


@pytest.mark.parametrize("layer", ["Lambda", "TFSMLayer", "TorchModuleWrapper", "JaxLayer", "FlaxLayer"])
def test_a_code_running_layer_cannot_be_opted_in(
    layer: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "any.keras"
    path.write_bytes(b"never opened")
    with pytest.raises(BadParameter, match=f"^extra_layers: {layer} runs code from the model file"):
        inspect_model_file(path, extra_layers=[layer])
    monkeypatch.setenv(EXTRA_LAYERS_ENV, f"Dropout,{layer}")
    with pytest.raises(BadParameter, match=f"^{EXTRA_LAYERS_ENV}: {layer} runs code"):
        load_model(path)


def test_an_opt_in_that_is_no_class_name_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(EXTRA_LAYERS_ENV, "Dropout; Flatten")
    with pytest.raises(BadParameter, match=f"^{EXTRA_LAYERS_ENV}: 'Dropout; Flatten' is not a Keras layer"):
        inspect_model_file(tmp_path / "missing.keras")
