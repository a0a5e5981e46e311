"""Loading CIFAR-10: from an image folder, the official python pickles, our own cache, or Keras.

A dataset source is data, never code: pickles go through a restricted unpickler and cache files are
read with ``allow_pickle=False``. Decoding 60,000 JPEGs takes seconds, so the first load of a folder
is decoded in parallel and written to a cache that is served again only while the source's files are
unchanged (same names, sizes and modification times).

This package imports neither TensorFlow nor Keras; Keras is imported only for the official download.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ...errors import BadParameter, DataError
from .cache import ENV_CACHE, default_cache_dir, load_npz_source
from .dataset import CLASS_NAMES, Arrays, Dataset, Progress, as_dataset, checked
from .folder import load_image_folder
from .pickles import PICKLE_FOLDER, find_pickle_folder, load_pickle_folder

__all__ = [
    "CLASS_NAMES",
    "ENV_CACHE",
    "ENV_DATA",
    "Dataset",
    "default_cache_dir",
    "load_cifar10",
    "resolve_data_source",
]

ENV_DATA = "JUPYTER_CIFAR_DATA"
KERAS_SOURCE = "keras: official CIFAR-10 download"


def resolve_data_source(data: str | os.PathLike[str] | None) -> Path | None:
    """The dataset to load: the argument, else $JUPYTER_CIFAR_DATA, else None (the download)."""
    if data is not None and os.fspath(data) != "":
        return Path(data).expanduser()
    env = os.environ.get(ENV_DATA)
    if env:
        return Path(env).expanduser()
    return None


def load_cifar10(
    data: str | os.PathLike[str] | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    progress: Progress | None = None,
) -> Dataset:
    """Load CIFAR-10 from ``data`` (see the module docstring), decoding and caching as needed."""
    n_workers = _check_workers(workers)
    say: Progress = progress or (lambda _message: None)
    source = resolve_data_source(data)
    if source is None:
        return _load_keras(say)
    if not source.exists():
        # A relative path is read from the working folder, which for a kernel is its notebook's folder.
        where = "" if source.is_absolute() else f" (relative to {os.getcwd()})"
        raise DataError(f"{source}: no such folder or file{where}")
    shown = Path(os.path.abspath(source))
    if source.is_file():
        if not _is_zip(source):
            raise DataError(
                f"{shown}: not a dataset (expected a folder with train/ and test/, a "
                f"{PICKLE_FOLDER} folder, or a .npz cache file)"
            )
        return load_npz_source(shown)
    cache_root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if (shown / "train").is_dir() and (shown / "test").is_dir():
        return load_image_folder(shown, cache_root, n_workers, say, progress is None)
    pickle_dir = find_pickle_folder(shown)
    if pickle_dir is not None:
        return load_pickle_folder(pickle_dir, cache_root, say, progress is None)
    for split, other in (("train", "test"), ("test", "train")):
        if (shown / split).is_dir():
            raise DataError(f"{shown}: has a {split} folder but no {other} folder")
    raise DataError(
        f"{shown}: not a CIFAR-10 folder (expected train/<class>/ and test/<class>/ image "
        f"folders, or the official {PICKLE_FOLDER} files)"
    )


def _check_workers(workers: int | None) -> int:
    if workers is None:
        return os.cpu_count() or 1
    if isinstance(workers, bool) or not isinstance(workers, int):
        raise BadParameter("workers", f"must be a whole number or None, got {workers!r}")
    if workers < 1:
        raise BadParameter("workers", f"must be at least 1, got {workers}")
    return workers


def _is_zip(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"PK\x03\x04"
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _load_keras(say: Progress) -> Dataset:
    say("loading the official CIFAR-10 download through Keras")
    import keras  # lazy: importing Keras starts TensorFlow, which nothing else here needs

    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.cifar10.load_data()
    except Exception as exc:
        raise DataError(
            f"{KERAS_SOURCE}: failed ({type(exc).__name__}: {exc}); without internet access, "
            f"point --data or ${ENV_DATA} at a local copy"
        ) from exc
    x_train, x_test = (
        np.ascontiguousarray(np.asarray(x).transpose(0, 2, 3, 1))
        if np.ndim(x) == 4 and np.shape(x)[1:] == (3, 32, 32)  # channels_first Keras config
        else np.asarray(x)
        for x in (x_train, x_test)
    )
    arrays = Arrays(x_train, np.asarray(y_train), x_test, np.asarray(y_test), CLASS_NAMES)
    try:
        arrays = checked(arrays)
    except ValueError as exc:
        raise DataError(f"{KERAS_SOURCE}: unexpected arrays ({exc})") from None
    return as_dataset(arrays, KERAS_SOURCE, "keras")
