"""Reading and writing model files: a model file is data, and loading one never runs code from it.

``.keras`` (a zip) is the format that leaves this package; the legacy ``.h5`` the seed wrote is read too.
Loading goes through Keras' ``safe_mode`` and without the compile config (a loaded model is recompiled
by whoever trains it), so a file cannot name a loss or metric function for us to import.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ModelFileError

if TYPE_CHECKING:
    import keras

_H5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


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


def load_model(path: str | os.PathLike[str]) -> keras.Model:
    """Load a ``.keras`` or ``.h5`` model for inference or further training, in safe mode."""
    path = Path(path)
    fmt = sniff_format(path)
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
