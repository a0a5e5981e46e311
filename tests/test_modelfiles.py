"""Model files are data: standard .keras out, .keras and legacy .h5 in, never code run on load."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from jupyter_cifar.errors import ModelFileError
from jupyter_cifar.modelfiles import load_model, save_model
from jupyter_cifar.nets import build_model
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
    with pytest.raises(ModelFileError, match=r"hostile\.keras.*run code"):
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
