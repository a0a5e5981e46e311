"""Models out: a model as ``.keras``, ONNX, LiteRT or a TensorFlow SavedModel, checked before it is written.

Each export is run, before it is put where it was asked, by the runtime its users will run it with
(Keras through this package's safe loader, onnxruntime, LiteRT's interpreter, TensorFlow), on the check
images, and must give the same top-1 class as the Keras model on every one and probabilities within
:data:`TOLERANCE`; otherwise nothing is written and the error says how they differ. A format that cannot
carry the model is an error naming what it could not carry, never a file that answers differently.

What is exported is the model as it answers in inference: in float32 (a model trained in bfloat16 or
float16 is exported as a float32 copy, which the check compares), its augmentation layers (identity in
inference, but traced with their random ops by the converters: ONNX cannot carry them, and a SavedModel
applied them when serving) left out, and a ``Normalization`` of the channels as the ``Rescaling`` it
amounts to (tf2onnx made its mean and variance inputs the ONNX graph required). The test-time-augmented
preset exports whole. Formats: ``keras`` (``.keras``), ``onnx`` (``.onnx``; ``pip install
"jupyter_cifar[onnx]"``: tf2onnx, onnx, onnxruntime), ``litert`` (``.tflite``; ``pip install
"jupyter_cifar[litert]"``: ai-edge-litert for the check; TensorFlow writes it) and ``savedmodel`` (a
folder), through Keras' own ``model.export``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import BadParameter, ModelFileError

if TYPE_CHECKING:
    import keras

FORMATS = ("keras", "onnx", "litert", "savedmodel")
SUFFIXES = {"keras": ".keras", "onnx": ".onnx", "litert": ".tflite", "savedmodel": ""}
NEEDS = {"onnx": ("tf2onnx", "onnx", "onnxruntime"), "litert": ("ai_edge_litert",)}
CHECK_IMAGES = 256
TOLERANCE = 1e-4
BATCH = 64
# Layers that are the identity in inference but that the converters trace with their random ops.
AUGMENTATIONS = frozenset(
    {"RandomFlip", "RandomTranslation", "RandomRotation", "RandomZoom", "RandomContrast", "RandomBrightness"}
)


@dataclass(frozen=True)
class ExportCheck:
    """What the written export was checked against: the model's own answers on ``images`` images."""

    format: str
    images: int
    same_top1: int  # images whose top-1 class agrees (all of them, or nothing was written)
    max_difference: float  # the largest difference of a probability
    note: str  # what was changed for the export ("" when nothing)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def export_format(path: Path, format: str | None = None) -> str:
    """The format a path asks for (``.keras``, ``.onnx``, ``.tflite``, else a folder: a SavedModel), and
    a given ``format`` checked against it."""
    inferred = next((name for name, suffix in SUFFIXES.items() if suffix and path.suffix == suffix), None)
    if inferred is None and path.suffix == "":
        inferred = "savedmodel"
    if format is None:
        if inferred is None:
            raise BadParameter(
                "PATH",
                f"{path}: the format cannot be told from {path.suffix!r}: end the path in .keras, .onnx or "
                ".tflite, name a folder for a SavedModel, or give --format",
            )
        return inferred
    if format not in FORMATS:
        raise BadParameter("--format", f"{format!r} is not a format ({', '.join(FORMATS)})")
    if inferred != format:
        want = f"a path ending in {SUFFIXES[format]}" if SUFFIXES[format] else "a folder path (no suffix)"
        raise BadParameter("PATH", f"{path}: a {format} export is written to {want}")
    return format


def export_model(
    model: keras.Model, path: str | os.PathLike[str], format: str | None = None, *, images: Any = None
) -> ExportCheck:
    """Write ``model`` to ``path`` in ``format`` (see the module's doc) once the export, run by its own
    runtime, answers as the model does on ``images`` (uint8, n x 32 x 32 x 3; default: 256 fixed
    pseudo-random images). Atomic: an error leaves nothing at ``path``."""
    import keras

    path = Path(path)
    fmt = export_format(path, format)
    missing = [module for module in NEEDS.get(fmt, ()) if importlib.util.find_spec(module) is None]
    if missing:
        raise BadParameter(
            "--format", f'{fmt} export needs {", ".join(missing)}: pip install "jupyter_cifar[{fmt}]"'
        )
    if fmt != "keras" and keras.backend.backend() != "tensorflow":
        raise BadParameter("--format", f"{fmt} export needs Keras' TensorFlow backend (KERAS_BACKEND)")
    if fmt == "savedmodel" and path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise BadParameter("PATH", f"{path} exists: a SavedModel is written to a new (or empty) folder")
    if path.is_dir() and fmt != "savedmodel":
        raise BadParameter("PATH", f"{path} is a folder; give a file path ending in {SUFFIXES[fmt]}")
    exported, note = for_export(model)
    x = _inputs(exported, _check_images(images))
    expected = _probabilities(exported, _keras_outputs(exported, x))
    work = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent if path.parent.exists() else None))
    try:
        written = work / (path.name if fmt != "savedmodel" else "model")
        try:
            _write(exported, written, fmt)
        except (BadParameter, ModelFileError):
            raise
        except Exception as e:
            raise ModelFileError(f"{path}: {fmt} cannot carry this model: {_first_line(e)}") from None
        try:
            got = _probabilities(exported, _run(written, fmt, x))
        except Exception as e:
            raise ModelFileError(f"{path}: the {fmt} export does not run: {_first_line(e)}") from None
        check = _compare(path, fmt, expected, got, note)
        if fmt == "savedmodel" and path.exists():
            path.rmdir()  # empty (checked above)
        os.replace(written, path)
        return check
    finally:
        shutil.rmtree(work, ignore_errors=True)


def for_export(model: keras.Model) -> tuple[keras.Model, str]:
    """The model as it answers in inference, as a format can carry it (see the module's doc), and a note
    of what changed ("" when it is the model itself)."""
    import keras

    changes = []
    if any(_mixed(layer) for layer in _all_layers(model)):
        model = _as_float32(model)
        changes.append("a float32 copy of a mixed-precision model")

    def convert(layer: keras.layers.Layer) -> keras.layers.Layer:
        name = type(layer).__name__
        if name in AUGMENTATIONS:
            changes.append(f"{layer.name} ({name}) left out: the identity in inference")
            return keras.layers.Identity(name=layer.name)
        if name == "Normalization" and (folded := _as_rescaling(layer)) is not None:
            changes.append(f"{layer.name} (Normalization) as the Rescaling it amounts to")
            return folded
        if isinstance(layer, keras.Model) and _rewritten(layer):
            return keras.models.clone_model(layer, clone_function=convert)
        return layer

    if _rewritten(model):
        model = keras.models.clone_model(model, clone_function=convert)
    return model, "; ".join(changes)


def _rewritten(model: Any) -> bool:
    """Whether the export has layers of this model to rewrite (its nested models' included)."""
    return any(type(layer).__name__ in AUGMENTATIONS | {"Normalization"} for layer in _all_layers(model))


def _as_rescaling(layer: Any) -> Any:
    """A Normalization of the channels (the last axis) as the Rescaling it amounts to, or None.

    Its mean and variance are tensors the layer captures, which tf2onnx turned into inputs the ONNX
    graph required; a Rescaling's scale and offset are numbers in its config, constants in any graph.
    Keras computes ``(x - mean) / max(sqrt(variance), epsilon)``.
    """
    import keras

    config = layer.get_config()
    if config.get("invert") or layer.mean is None:
        return None
    mean = np.ravel(keras.ops.convert_to_numpy(layer.mean)).astype(np.float64)
    variance = np.ravel(keras.ops.convert_to_numpy(layer.variance)).astype(np.float64)
    channels = layer.input.shape[-1]
    if mean.size != channels or np.shape(keras.ops.convert_to_numpy(layer.mean))[-1] != channels:
        return None
    scale = 1.0 / np.maximum(np.sqrt(variance), keras.backend.epsilon())
    return keras.layers.Rescaling(
        scale=[float(v) for v in scale], offset=[float(v) for v in -mean * scale], name=layer.name
    )


def _all_layers(model: Any) -> list[Any]:
    found, stack = [], list(getattr(model, "layers", []))
    while stack:
        layer = stack.pop()
        found.append(layer)
        stack += list(getattr(layer, "layers", []))
    return found


def _mixed(layer: Any) -> bool:
    policy = getattr(layer, "dtype_policy", None)
    return policy is not None and policy.compute_dtype not in ("float32", None) and policy.name != "float32"


def _as_float32(model: keras.Model) -> keras.Model:
    """The same model with every layer in float32 and the same weights."""
    import json

    import keras

    def float32(node: Any) -> Any:
        if isinstance(node, dict):
            if node.get("class_name") in ("DTypePolicy", "FloatDTypePolicy"):
                return {**node, "config": {**node.get("config", {}), "name": "float32"}}
            return {key: float32(value) for key, value in node.items()}
        if isinstance(node, list):
            return [float32(item) for item in node]
        return node

    config = float32(json.loads(json.dumps(keras.saving.serialize_keras_object(model))))
    copy = keras.saving.deserialize_keras_object(config, safe_mode=True)
    copy.set_weights(model.get_weights())
    return copy


def _check_images(images: Any) -> np.ndarray:
    if images is None:
        return np.random.default_rng(0).integers(0, 256, (CHECK_IMAGES, 32, 32, 3), dtype=np.uint8)
    x = np.asarray(images)
    if x.ndim != 4 or x.shape[-1] != 3 or not len(x):
        raise BadParameter("images", f"must be images (n, height, width, 3), not {x.shape}")
    return x[:CHECK_IMAGES]


def _inputs(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """The check images as the model takes them: float32, at its input size."""
    size = tuple(model.input_shape[1:3])
    x = x.astype(np.float32)
    if None not in size and size != x.shape[1:3]:
        import tensorflow as tf

        x = tf.image.resize(x, size).numpy()
    return x


def _keras_outputs(model: keras.Model, x: np.ndarray) -> np.ndarray:
    import keras

    return np.concatenate(
        [keras.ops.convert_to_numpy(model(x[i : i + BATCH], training=False)) for i in range(0, len(x), BATCH)]
    ).astype(np.float32)


def _probabilities(model: keras.Model, out: np.ndarray) -> np.ndarray:
    from .nets import outputs_probabilities

    out = np.asarray(out, dtype=np.float64)
    if not outputs_probabilities(model):
        out = np.exp(out - out.max(axis=1, keepdims=True))
        out /= out.sum(axis=1, keepdims=True)
    return out


def _write(model: keras.Model, path: Path, fmt: str) -> None:
    import keras

    if fmt == "keras":
        from .modelfiles import save_model

        save_model(model, path)
    elif fmt == "onnx":
        spec = keras.InputSpec(shape=(None, *model.input_shape[1:]), dtype="float32")
        model.export(str(path), format="onnx", verbose=False, input_signature=[spec])
    elif fmt == "litert":
        model.export(str(path), format="litert", verbose=False)
    else:
        model.export(str(path), format="tf_saved_model", verbose=False)


def _run(path: Path, fmt: str, x: np.ndarray) -> np.ndarray:
    """The export's answers on ``x``, from the runtime its users run it with."""
    batches = [x[i : i + BATCH] for i in range(0, len(x), BATCH)]
    if fmt == "keras":
        from .modelfiles import load_model

        return _keras_outputs(load_model(path), x)
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        inputs = session.get_inputs()
        if len(inputs) != 1:
            names = ", ".join(i.name for i in inputs[1:])
            raise ModelFileError(f"{path.name}: the ONNX graph asks for inputs besides the image ({names})")
        return np.concatenate([session.run(None, {inputs[0].name: batch})[0] for batch in batches])
    if fmt == "litert":
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(path))
        given, taken = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
        outs = []
        for batch in batches:
            interpreter.resize_tensor_input(given["index"], batch.shape)
            interpreter.allocate_tensors()
            interpreter.set_tensor(given["index"], batch)
            interpreter.invoke()
            outs.append(interpreter.get_tensor(taken["index"]).copy())
        return np.concatenate(outs)
    import tensorflow as tf

    served = tf.saved_model.load(str(path))
    return np.concatenate([served.serve(tf.constant(batch)).numpy() for batch in batches])


def _compare(path: Path, fmt: str, expected: np.ndarray, got: np.ndarray, note: str) -> ExportCheck:
    if got.shape != expected.shape:
        raise ModelFileError(f"{path}: the {fmt} export answers {got.shape}, the model {expected.shape}")
    same = int((got.argmax(axis=1) == expected.argmax(axis=1)).sum())
    difference = float(np.abs(got - expected).max())
    if same != len(expected) or not difference <= TOLERANCE:
        raise ModelFileError(
            f"{path}: the {fmt} export does not answer as the model does: the top-1 class differs on "
            f"{len(expected) - same} of {len(expected)} images and a probability by up to {difference:.2g} "
            f"(the limit is {TOLERANCE:g}); nothing was written"
        )
    return ExportCheck(fmt, len(expected), same, difference, note)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:300] if text else ''}"
