"""Reading and writing model files: a model file is data, and loading one never runs code from it.

``.keras`` (a zip) is the format that leaves this package; the legacy ``.h5`` the seed wrote is read too.
Loading goes through Keras' ``safe_mode`` and without the compile config (a loaded model is recompiled
by whoever trains it), so a file cannot name a loss or metric function for us to import.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ModelFileError

if TYPE_CHECKING:
    import keras

_H5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
# What a model's config may name: Keras' own building blocks. Layers that wrap code or another
# runtime's model are refused even though Keras can build them (they have carried code execution).
_ALLOWED_MODULES = (
    "keras.layers",
    "keras.initializers",
    "keras.regularizers",
    "keras.constraints",
    "keras.activations",
    "keras.optimizers",
    "keras.losses",
    "keras.metrics",
)
_ALLOWED_EXACT = frozenset(
    {"keras", "keras.models", "keras.src.models.functional", "keras.src.models.sequential"}
)
_DENIED_CLASSES = frozenset(
    {"Lambda", "TFSMLayer", "TorchModuleWrapper", "JaxLayer", "FlaxLayer", "function"}
)
MAX_CONFIG_BYTES = 16 << 20


def sniff_format(path: Path) -> str:
    """'keras' or 'h5' from the file's first bytes (never from its name alone)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except IsADirectoryError:
        raise ModelFileError(f"{path}: is a folder, not a model file") from None
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such model file") from None
    except OSError as e:
        raise ModelFileError(f"{path}: cannot be read ({e.strerror or e})") from None
    if head.startswith(_H5_SIGNATURE):
        return "h5"
    if head.startswith(b"PK") and zipfile.is_zipfile(path):
        return "keras"
    raise ModelFileError(f"{path}: not a Keras model file (expected a .keras zip or an .h5 file)")


def read_config(path: Path, fmt: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model config, file metadata) read without Keras or TensorFlow, size-bounded."""
    try:
        if fmt == "keras":
            with zipfile.ZipFile(path) as z:
                names = set(z.namelist())
                if "config.json" not in names or "model.weights.h5" not in names:
                    raise ModelFileError(f"{path}: a .keras file needs config.json and model.weights.h5")
                with z.open("model.weights.h5") as weights:
                    if weights.read(8) != _H5_SIGNATURE:
                        raise ModelFileError(f"{path}: its model.weights.h5 is not an HDF5 file")
                if z.getinfo("config.json").file_size > MAX_CONFIG_BYTES:
                    raise ModelFileError(f"{path}: its config.json is implausibly large")
                config = json.loads(z.read("config.json"))
                meta = json.loads(z.read("metadata.json")) if "metadata.json" in names else {}
        else:
            import h5py

            with h5py.File(path, "r") as f:
                raw = f.attrs.get("model_config")
                if raw is None:
                    raise ModelFileError(f"{path}: an .h5 file without a model config (weights only?)")
                if len(raw) > MAX_CONFIG_BYTES:
                    raise ModelFileError(f"{path}: its model config is implausibly large")
                config = json.loads(raw)
                meta = {"keras_version": _text(f.attrs.get("keras_version"))}
    except ModelFileError:
        raise
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, UnicodeDecodeError) as e:
        raise ModelFileError(f"{path}: cannot be read as a model file ({e})") from None
    if not isinstance(config, dict) or not isinstance(meta, dict):
        raise ModelFileError(f"{path}: its config is not a model description")
    return config, meta


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return None if value is None else str(value)


def check_config(path: Path, config: Any) -> None:
    """Refuse a config that names anything but Keras' own layers, initializers, optimizers, ..."""
    stack = [config]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "class_name" in node:
                cls, module = node.get("class_name"), node.get("module")
                allowed = (
                    module is None
                    or module in _ALLOWED_EXACT
                    or (isinstance(module, str) and module.startswith(_ALLOWED_MODULES))
                )
                if not isinstance(cls, str) or cls in _DENIED_CLASSES or not allowed:
                    where = f"{module}.{cls}" if module else str(cls)
                    raise ModelFileError(
                        f"{path}: refused: the model asks for {where}, which can run code or is not a "
                        "Keras building block"
                    )
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def inspect_model_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Check a model file without running anything from it (no Keras import); return its facts."""
    path = Path(path)
    fmt = sniff_format(path)
    config, meta = read_config(path, fmt)
    check_config(path, config)
    inner = config.get("config")
    inner = inner if isinstance(inner, dict) else {}
    facts: dict[str, Any] = {"format": fmt, "architecture": inner.get("name") or config.get("class_name")}
    if meta.get("keras_version"):
        facts["saved_with_keras"] = meta["keras_version"]
    for layer in inner.get("layers") or []:
        layer_config = layer.get("config") if isinstance(layer, dict) else None
        if isinstance(layer_config, dict):
            shape = layer_config.get("batch_shape") or layer_config.get("batch_input_shape")
            if isinstance(shape, list):
                facts["input_shape"] = shape[1:]
                break
    return facts


def load_model(path: str | os.PathLike[str]) -> keras.Model:
    """Load a ``.keras`` or ``.h5`` model for inference or further training, in safe mode.

    The config is checked first (:func:`inspect_model_file`), so Keras only ever sees a model made of
    its own building blocks; ``safe_mode`` stays on as a second line.
    """
    path = Path(path)
    fmt = sniff_format(path)
    check_config(path, read_config(path, fmt)[0])
    import keras

    suffix = ".keras" if fmt == "keras" else ".h5"
    if path.suffix != suffix:
        # Keras routes by file name; give it the name that matches the bytes.
        raise ModelFileError(f"{path}: a {fmt} file must be named *{suffix} to be loaded")
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as e:  # Keras raises many types for bad files; all mean "not loadable"
        raise ModelFileError(f"{path}: cannot be loaded as a model: {_reason(e)}") from None
    if not isinstance(model, keras.Model):
        raise ModelFileError(f"{path}: holds no Keras model")
    return model


def save_model(model: keras.Model, path: str | os.PathLike[str]) -> Path:
    """Save as a standard ``.keras`` file, atomically (a reader never sees a half-written file)."""
    path = Path(path)
    if path.suffix != ".keras":
        raise ModelFileError(f"{path}: model files are saved as .keras")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.keras")
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _reason(error: Exception) -> str:
    text = " ".join(str(error).split())
    if "safe_mode" in text or "Lambda" in text:
        return "it asks to run code (e.g. a Lambda layer), which is refused"
    return text[:300] or type(error).__name__
