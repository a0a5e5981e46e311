"""The official python version (cifar-10-batches-py): its pickles read by a restricted unpickler that
builds only numpy arrays and plain containers, never runs code from the file."""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path
from typing import IO, Any

import numpy as np

from ...errors import DataError
from .cache import CACHE_FORMAT, describe_error, through_cache
from .dataset import CLASS_NAMES, Arrays, Dataset, Progress

PICKLE_FOLDER = "cifar-10-batches-py"
_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
_TEST_BATCH = "test_batch"
_META = "batches.meta"


def find_pickle_folder(path: Path) -> Path | None:
    markers = (*_TRAIN_BATCHES, _TEST_BATCH)
    if path.name == PICKLE_FOLDER or any((path / m).is_file() for m in markers):
        return path
    if (path / PICKLE_FOLDER).is_dir():
        return path / PICKLE_FOLDER
    return None


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles of bytes use it, limited to that use."""
    if not isinstance(text, str) or encoding.replace("-", "").lower() != "latin1":
        raise pickle.UnpicklingError(f"_codecs.encode({type(text).__name__}, {encoding!r})")
    return text.encode("latin1")


def _numpy_globals() -> dict[str, Any]:
    """The globals a pickled ndarray or dtype needs, under both numpy 1 and numpy 2 names."""
    import importlib

    core = "numpy._core" if int(np.__version__.split(".")[0]) >= 2 else "numpy.core"
    multiarray = importlib.import_module(f"{core}.multiarray")
    numeric = importlib.import_module(f"{core}.numeric")
    allowed: dict[str, Any] = {
        "numpy.ndarray": np.ndarray,
        "numpy.dtype": np.dtype,
        "_codecs.encode": _latin1_encode,
    }
    for prefix in ("numpy.core", "numpy._core"):
        allowed[f"{prefix}.multiarray._reconstruct"] = multiarray._reconstruct
        allowed[f"{prefix}.multiarray.scalar"] = multiarray.scalar
        allowed[f"{prefix}.numeric._frombuffer"] = numeric._frombuffer
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    """Rebuilds dicts, lists, strings and numpy arrays only: loading never runs code."""

    _allowed: dict[str, Any] | None = None

    def __init__(self, file: IO[bytes], path: Path) -> None:
        super().__init__(file, encoding="bytes")
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        cls = type(self)
        if cls._allowed is None:
            cls._allowed = _numpy_globals()
        found = cls._allowed.get(f"{module}.{name}")
        if found is None:
            raise DataError(f"{self._path}: refuses to load: the pickle asks for {module}.{name}")
        return found


def _unpickle(path: Path) -> Any:
    try:
        with open(path, "rb") as f:
            return _RestrictedUnpickler(f, path).load()
    except DataError:
        raise
    except FileNotFoundError:
        raise DataError(f"{path}: missing (the {PICKLE_FOLDER} folder is incomplete)") from None
    except Exception as exc:
        raise DataError(f"{path}: not a readable pickle ({describe_error(exc)})") from None


def _field(batch: dict[Any, Any], key: str) -> Any:
    return batch[key.encode()] if key.encode() in batch else batch.get(key)


def _read_batch(path: Path, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    batch = _unpickle(path)
    if not isinstance(batch, dict):
        raise DataError(f"{path}: not a CIFAR-10 batch (a {type(batch).__name__}, not a dict)")
    data, labels = _field(batch, "data"), _field(batch, "labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise DataError(f"{path}: not a CIFAR-10 batch (no uint8 'data' rows)")
    if data.shape[1] != 3 * 32 * 32:
        raise DataError(f"{path}: rows of {data.shape[1]} bytes, not 3072 (3x32x32)")
    try:
        y = np.asarray(labels, dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise DataError(f"{path}: not a CIFAR-10 batch (no integer 'labels')") from None
    if len(y) != len(data):
        raise DataError(f"{path}: {len(y)} labels for {len(data)} images")
    if len(y) and (y.min() < 0 or y.max() >= n_classes):
        raise DataError(f"{path}: labels outside 0..{n_classes - 1}")
    # Rows are channel-first (1024 red, 1024 green, 1024 blue); images are stored channel-last.
    x = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return x, y.astype(np.uint8)


def _read_class_names(folder: Path) -> tuple[str, ...]:
    path = folder / _META
    if not path.exists():
        return CLASS_NAMES
    meta = _unpickle(path)
    names = _field(meta, "label_names") if isinstance(meta, dict) else None
    if not isinstance(names, list) or not names:
        raise DataError(f"{path}: no 'label_names' list in it")
    try:
        return tuple(n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names)
    except UnicodeDecodeError:
        raise DataError(f"{path}: label names are not text") from None


def _pickle_fingerprint(folder: Path) -> str:
    digest = hashlib.sha256(f"pickle {CACHE_FORMAT}\n".encode())
    for name in (*_TRAIN_BATCHES, _TEST_BATCH, _META):
        try:
            s = os.stat(folder / name)
            digest.update(f"{name}\0{s.st_size}\0{s.st_mtime_ns}\n".encode())
        except FileNotFoundError:
            digest.update(f"{name}\0missing\n".encode())
        except OSError as exc:
            raise DataError(f"{folder / name}: cannot read ({describe_error(exc)})") from None
    return digest.hexdigest()


def load_pickle_folder(folder: Path, cache_root: Path, say: Progress, warn: bool) -> Dataset:
    def build() -> Arrays:
        say(f"reading the CIFAR-10 python batches in {folder}")
        names = _read_class_names(folder)
        train = [_read_batch(folder / name, len(names)) for name in _TRAIN_BATCHES]
        x_test, y_test = _read_batch(folder / _TEST_BATCH, len(names))
        x_train = np.concatenate([x for x, _ in train])
        y_train = np.concatenate([y for _, y in train])
        return Arrays(x_train, y_train, x_test, y_test, names)

    fingerprint = _pickle_fingerprint(folder)
    return through_cache(folder, "pickle", fingerprint, cache_root, say, warn, build)
