"""Exports (issue 15, point 3): every format run by its own runtime gives the model's answers, or nothing
is written. The runtimes are the real ones (onnxruntime, LiteRT's interpreter, TensorFlow); the answers
are compared on real CIFAR-10 test images."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from storetools import tiny_model
from test_cli import assert_one_line_error, cli
from test_layersizes import everyday_model

from jupyter_cifar.engine import export
from jupyter_cifar.engine.export import export_model
from jupyter_cifar.engine.nets import build_model, get_preset, outputs_probabilities
from jupyter_cifar.engine.predict import predict_proba
from jupyter_cifar.engine.tta import with_tta, without_tta
from jupyter_cifar.errors import BadParameter, ModelFileError
from jupyter_cifar.store import open_store

pytestmark = pytest.mark.slow

PATHS = {"keras": "m.keras", "onnx": "m.onnx", "litert": "m.tflite", "savedmodel": "m"}


def runtime_answers(path: Path, fmt: str, x: np.ndarray) -> np.ndarray:
    """The file's answers as its users get them, written here apart from the code under test."""
    x = x.astype(np.float32)
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        [given] = session.get_inputs()
        return np.asarray(session.run(None, {given.name: x})[0])
    if fmt == "litert":
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(path))
        given, taken = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
        interpreter.resize_tensor_input(given["index"], x.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(given["index"], x)
        interpreter.invoke()
        return np.asarray(interpreter.get_tensor(taken["index"]))
    if fmt == "savedmodel":
        import tensorflow as tf

        served = tf.saved_model.load(str(path))  # kept: its function uses the object's variables
        return np.asarray(served.serve(tf.constant(x)))
    return np.asarray(keras.saving.load_model(path).predict(x, verbose=0))


def as_probabilities(model: keras.Model, out: np.ndarray) -> np.ndarray:
    """As predict_proba reads a model's output: probabilities as they are, logits soft-maxed."""
    if outputs_probabilities(model):
        return out
    e = np.exp(out - out.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def images(cifar10) -> np.ndarray:
    return cifar10.x_test[:256]


@pytest.mark.parametrize("fmt", list(PATHS))
def test_every_format_answers_as_the_model_does(fmt: str, images: np.ndarray, tmp_path: Path) -> None:
    model = build_model("fast")
    path = tmp_path / PATHS[fmt]
    check = export_model(model, path, images=images)
    assert check.format == fmt and check.images == 256 and check.same_top1 == 256
    assert check.max_difference <= 1e-4 and check.note == ""
    got = as_probabilities(model, runtime_answers(path, fmt, images[:64]))
    expected = predict_proba(model, images[:64])
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # nothing else left behind


@pytest.mark.parametrize("fmt", ["onnx", "litert"])
def test_the_test_time_augmented_preset_exports_whole(fmt: str, images: np.ndarray, tmp_path: Path) -> None:
    preset = get_preset("accurate")
    keras.utils.set_random_seed(0)  # an untrained net: its six views differ by little, so by a fixed little
    model = with_tta(build_model("accurate"), preset.tta)
    path = tmp_path / PATHS[fmt]
    assert export_model(model, path, images=images).same_top1 == 256
    got = as_probabilities(model, runtime_answers(path, fmt, images[:32]))
    np.testing.assert_allclose(got, predict_proba(model, images[:32]), atol=1e-4)
    single_view = predict_proba(without_tta(model), images[:32])
    # The six views are in the file, not one: it is further from one view than the check allows.
    assert np.abs(got - single_view).max() > 2 * export.TOLERANCE


@pytest.mark.parametrize(
    ("name", "note"),
    [
        ("mobilenetv2", ""),
        ("resnet50", ""),
        ("efficientnetb0", "(Normalization) as the Rescaling it amounts to"),
        ("sequential-augmented", "left out: the identity in inference"),
        ("residual", ""),
        ("sequential-dropout", ""),
    ],
)
def test_everyday_models_export_to_every_format(
    name: str, note: str, images: np.ndarray, tmp_path: Path
) -> None:
    model = everyday_model(name)
    for fmt in ("onnx", "litert", "savedmodel"):
        check = export_model(model, tmp_path / f"{fmt}-{PATHS[fmt]}", images=images[:64])
        assert check.same_top1 == 64 and check.max_difference <= 1e-4, (fmt, check)
        assert note in check.note, (fmt, check.note)


def test_what_a_format_gets_wrong_is_never_written(images: np.ndarray, tmp_path: Path, monkeypatch) -> None:
    """With the augmentation layers kept, the converters trace their random ops: a SavedModel then
    answers differently (it augments while serving) and ONNX cannot carry them. Nothing is written."""
    model = everyday_model("sequential-augmented")
    monkeypatch.setattr(export, "AUGMENTATIONS", frozenset())  # the export as Keras alone makes it
    with pytest.raises(ModelFileError, match=r"the savedmodel export does not answer as the model does: "):
        export_model(model, tmp_path / "served", images=images[:64])
    with pytest.raises(ModelFileError, match=r"onnx (cannot carry this model|export does not run)"):
        export_model(model, tmp_path / "m.onnx", images=images[:64])
    assert list(tmp_path.iterdir()) == []


def test_a_mixed_precision_model_is_exported_in_float32(images: np.ndarray, tmp_path: Path) -> None:
    model = build_model("fast", precision="mixed_bfloat16")
    check = export_model(model, tmp_path / "m.onnx", images=images[:64])
    assert check.note == "a float32 copy of a mixed-precision model" and check.same_top1 == 64


@pytest.mark.parametrize(
    ("path", "fmt", "message"),
    [
        ("m.pt", None, r"the format cannot be told from '\.pt'"),
        ("m.onnx", "litert", r"a litert export is written to a path ending in \.tflite"),
        ("m.tflite", "savedmodel", r"a savedmodel export is written to a folder path"),
        ("m.onnx", "torchscript", r"'torchscript' is not a format"),
    ],
)
def test_a_wrong_path_or_format_is_refused(path: str, fmt: str | None, message: str, tmp_path: Path) -> None:
    with pytest.raises(BadParameter, match=message):
        export_model(tiny_model(), tmp_path / path, fmt)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(BadParameter, match=r"exists: a SavedModel is written to a new \(or empty\) folder"):
        export_model(tiny_model(), tmp_path / "full")
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"


def test_a_missing_runtime_says_which_extra_to_install(tmp_path: Path, monkeypatch) -> None:
    # Stands in for a machine without onnxruntime (this one has it: the other tests use it).
    real = export.importlib.util.find_spec
    monkeypatch.setattr(export.importlib.util, "find_spec", lambda n: None if n == "onnxruntime" else real(n))
    needs = r'onnx export needs onnxruntime: pip install "jupyter_cifar\[onnx\]"'
    with pytest.raises(BadParameter, match=needs):
        export_model(tiny_model(), tmp_path / "m.onnx")


def test_the_command_line_exports_a_stored_version(cifar10_dir: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    with open_store(store) as models:
        models.save(build_model("fast"), "net")
    out = tmp_path / "net.onnx"
    proc = cli("models", "export", "net:1", out, "--store", store, "--data", cifar10_dir, "--json")
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    assert result["format"] == "onnx" and result["path"] == str(out) and result["version"] == 1
    assert result["check"]["images"] == 256 and result["check"]["same_top1"] == 256
    proc = cli("models", "export", "net:1", tmp_path / "net", "--format", "litert", "--store", store)
    assert_one_line_error(proc, 2, "a litert export is written to a path ending in .tflite")
    proc = cli("models", "export", "net:1", tmp_path / "saved", "--store", store)
    assert proc.returncode == 0, proc.stderr
    assert "(savedmodel); checked on 256 images: the same top-1 class on all" in proc.stdout
    assert (tmp_path / "saved" / "saved_model.pb").exists()


def test_the_models_tab_downloads_a_checked_export(tmp_path: Path, monkeypatch) -> None:
    """The format menu: an ONNX file and a zipped SavedModel made in the kernel, checked, offered."""
    import base64
    import io
    import zipfile

    import onnxruntime

    from jupyter_cifar.widgets import App

    monkeypatch.delenv("JUPYTER_CIFAR_SERVER_URL", raising=False)
    app = App(store=str(tmp_path / "store"), tab="models")
    try:
        model = build_model("fast")
        record = app.session.store().save(model, "net")
        boxes = app.models.downloads
        app.models.select(record)
        boxes.format.value = "onnx"
        assert boxes.prepare.description == "Download net-v1.onnx" and boxes.prepare.layout.display is None
        boxes.fetch().join(120)
        value = boxes.download.value
        assert 'download="net-v1.onnx"' in value, (value[:200], app.models.errors.value)
        assert boxes.check.value.startswith("checked on 256 images by its own runtime: the same top-1")
        data = base64.b64decode(value.split("base64,")[1].split('"')[0])
        session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
        x = np.random.default_rng(1).integers(0, 256, (4, 32, 32, 3)).astype(np.float32)
        got = session.run(None, {session.get_inputs()[0].name: x})[0]
        np.testing.assert_allclose(got, model.predict(x, verbose=0), atol=1e-5)

        boxes.format.value = "savedmodel"
        boxes.fetch().join(120)
        value = boxes.download.value
        assert 'download="net-v1.zip"' in value
        zipped = base64.b64decode(value.split("base64,")[1].split('"')[0])
        assert "saved_model.pb" in zipfile.ZipFile(io.BytesIO(zipped)).namelist()
        boxes.format.value = "keras"  # back to the stored file
        assert "not served by the Jupyter server" in boxes.download.value
    finally:
        app.close()
