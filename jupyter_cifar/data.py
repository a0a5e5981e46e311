"""Loading CIFAR-10: from an image folder, the official python pickles, our own cache, or Keras.

A dataset source is data, never code: pickles go through a restricted unpickler and cache files are
read with ``allow_pickle=False``. Decoding 60,000 JPEGs takes seconds, so the first load of a folder
is decoded in parallel and written to a cache that is served again only while the source's files are
unchanged (same names, sizes and modification times).

This module imports neither TensorFlow nor Keras; Keras is imported only for the official download.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import hashlib
import multiprocessing
import os
import pickle
import sys
import tempfile
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from .errors import BadParameter, DataError

__all__ = [
    "CLASS_NAMES",
    "ENV_CACHE",
    "ENV_DATA",
    "Dataset",
    "default_cache_dir",
    "load_cifar10",
    "resolve_data_source",
]

CLASS_NAMES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
ENV_DATA = "JUPYTER_CIFAR_DATA"
ENV_CACHE = "JUPYTER_CIFAR_CACHE"

KERAS_SOURCE = "keras: official CIFAR-10 download"
PICKLE_FOLDER = "cifar-10-batches-py"
_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
_TEST_BATCH = "test_batch"
_META = "batches.meta"

# Bump when the cache's contents or meaning change, so that old caches are decoded again.
_CACHE_FORMAT = 1
# Files per decoding task: big enough to keep inter-process overhead small, small enough to
# balance the work between processes and to report progress.
_CHUNK_SIZE = 1000
# Bad images named in a DataError; the rest are counted.
_MAX_REPORTED = 5
# Files in a class folder that are not images: hidden files and the usual desktop litter.
_IGNORED_FILES = frozenset({"Thumbs.db", "desktop.ini"})

Progress = Callable[[str], None]


@dataclass(frozen=True, eq=False)
class Dataset:
    """CIFAR-10-shaped arrays plus where they came from (eq=False: arrays have no truth value)."""

    x_train: np.ndarray  # (N, 32, 32, 3) uint8
    y_train: np.ndarray  # (N,) uint8
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    source: str
    layout: str  # "image-folder" | "pickle" | "cache" | "keras"
    # True when the arrays were served from this package's decoding cache instead of the source.
    from_cache: bool = False

    def subset(
        self, train_limit: int | None = None, test_limit: int | None = None, *, seed: int = 0
    ) -> Dataset:
        """A class-balanced sample, so that a quick run on few images still sees every class."""
        train = _stratified_indices(self.y_train, _check_limit("train_limit", train_limit), seed)
        test = _stratified_indices(self.y_test, _check_limit("test_limit", test_limit), seed + 1)
        if train is None and test is None:
            return self
        return dataclasses.replace(
            self,
            x_train=self.x_train if train is None else self.x_train[train],
            y_train=self.y_train if train is None else self.y_train[train],
            x_test=self.x_test if test is None else self.x_test[test],
            y_test=self.y_test if test is None else self.y_test[test],
        )

    def describe(self) -> dict[str, Any]:
        """What a result file or panel records about the data (JSON-ready)."""
        return {
            "source": self.source,
            "layout": self.layout,
            "n_train": len(self.x_train),
            "n_test": len(self.x_test),
            "class_names": list(self.class_names),
        }


def _check_limit(param: str, limit: int | None) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool):
        raise BadParameter(param, f"must be a whole number or None, got {limit!r}")
    try:
        value = int(limit.__index__())
    except (AttributeError, TypeError):
        raise BadParameter(param, f"must be a whole number or None, got {limit!r}") from None
    if value < 1:
        raise BadParameter(param, f"must be at least 1, got {value}")
    return value


def _stratified_indices(labels: np.ndarray, limit: int | None, seed: int) -> np.ndarray | None:
    """Indices of ``limit`` samples spread evenly over the classes; None means "keep all"."""
    if limit is None or limit >= len(labels):
        return None
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    take = np.zeros(len(classes), dtype=np.int64)
    remaining = limit
    # Water-filling: equal shares, and what a small class cannot use goes to the others.
    while remaining > 0:
        open_ = np.flatnonzero(take < counts)
        share = remaining // len(open_)
        if share == 0:
            take[rng.permutation(open_)[:remaining]] += 1
            break
        add = np.minimum(counts[open_] - take[open_], share)
        take[open_] += add
        remaining -= int(add.sum())
    chosen = [
        rng.choice(np.flatnonzero(labels == c), size=int(n), replace=False)
        for c, n in zip(classes, take, strict=True)
        if n
    ]
    # Source order (not class-grouped random order) keeps the sample easy to compare across runs.
    return np.sort(np.concatenate(chosen))


def default_cache_dir() -> Path:
    """Where decoded datasets are cached: $JUPYTER_CIFAR_CACHE, else the XDG cache folder."""
    explicit = os.environ.get(ENV_CACHE)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "jupyter_cifar"


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
        return _load_npz_source(shown)
    cache_root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if (shown / "train").is_dir() and (shown / "test").is_dir():
        return _load_image_folder(shown, cache_root, n_workers, say, progress is None)
    pickle_dir = _find_pickle_folder(shown)
    if pickle_dir is not None:
        return _load_pickle_folder(pickle_dir, cache_root, say, progress is None)
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


# --------------------------------------------------------------------------------------------
# Arrays and their checks


@dataclass
class _Arrays:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]


def _checked(arrays: _Arrays) -> _Arrays:
    """Raise ValueError unless the arrays are CIFAR-shaped; labels become flat uint8."""
    n_classes = len(arrays.class_names)
    if not 1 <= n_classes <= 256:
        raise ValueError(f"{n_classes} class names")
    out = []
    for split, x, y in (
        ("train", arrays.x_train, arrays.y_train),
        ("test", arrays.x_test, arrays.y_test),
    ):
        if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (32, 32, 3):
            raise ValueError(f"x_{split} is {x.dtype}{list(x.shape)}, not uint8[N, 32, 32, 3]")
        y = y.reshape(-1) if y.ndim == 2 and y.shape[1:] == (1,) else y
        if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"y_{split} is {y.dtype}{list(y.shape)} for {len(x)} images")
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= n_classes):
            raise ValueError(f"y_{split} has labels outside 0..{n_classes - 1}")
        out.append((x, y.astype(np.uint8, copy=False)))
    (x_train, y_train), (x_test, y_test) = out
    return _Arrays(x_train, y_train, x_test, y_test, tuple(arrays.class_names))


def _dataset(arrays: _Arrays, source: str, layout: str, *, from_cache: bool = False) -> Dataset:
    return Dataset(
        x_train=arrays.x_train,
        y_train=arrays.y_train,
        x_test=arrays.x_test,
        y_test=arrays.y_test,
        class_names=arrays.class_names,
        source=source,
        layout=layout,
        from_cache=from_cache,
    )


# --------------------------------------------------------------------------------------------
# Official download


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
    arrays = _Arrays(x_train, np.asarray(y_train), x_test, np.asarray(y_test), CLASS_NAMES)
    try:
        arrays = _checked(arrays)
    except ValueError as exc:
        raise DataError(f"{KERAS_SOURCE}: unexpected arrays ({exc})") from None
    return _dataset(arrays, KERAS_SOURCE, "keras")


# --------------------------------------------------------------------------------------------
# This package's .npz cache, and .npz files given as a source


def _read_npz(path: Path) -> tuple[_Arrays, dict[str, str]]:
    """Arrays and string metadata of an .npz; raises on anything unreadable or malformed."""
    with np.load(path, allow_pickle=False) as z:
        missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in z.files]
        if missing:
            raise ValueError(f"no {', '.join(missing)} in it")
        names = (
            tuple(str(n) for n in z["class_names"].reshape(-1)) if "class_names" in z.files else CLASS_NAMES
        )
        meta = {
            k: str(z[k].reshape(-1)[0])
            for k in ("format", "fingerprint", "source", "layout")
            if k in z.files and z[k].size == 1
        }
        arrays = _Arrays(z["x_train"], z["y_train"], z["x_test"], z["y_test"], names)
    return _checked(arrays), meta


def _load_npz_source(path: Path) -> Dataset:
    try:
        arrays, _meta = _read_npz(path)
    except Exception as exc:
        raise DataError(f"{path}: not a readable dataset .npz ({_problem(exc)})") from None
    return _dataset(arrays, str(path), "cache")


def _cache_path(cache_root: Path, source: Path) -> Path:
    key = str(source.resolve()).encode("utf-8", "surrogateescape")
    return cache_root / f"cifar10-{hashlib.sha256(key).hexdigest()[:24]}.npz"


def _read_cache(path: Path, fingerprint: str, say: Progress) -> _Arrays | None:
    """The cached arrays if the cache is readable and matches ``fingerprint``; never raises."""
    try:
        arrays, meta = _read_npz(path)
    except FileNotFoundError:
        return None
    except Exception as exc:
        say(f"ignoring unreadable cache {path} ({_problem(exc)})")
        return None
    if meta.get("format") != str(_CACHE_FORMAT) or meta.get("fingerprint") != fingerprint:
        say(f"source changed since it was cached; decoding again (cache {path})")
        return None
    return arrays


def _write_cache(path: Path, arrays: _Arrays, meta: dict[str, str], say: Progress, warn: bool) -> None:
    """Write atomically (temp file + rename) so that a reader never sees half a cache."""
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
        contents: dict[str, Any] = {
            "x_train": arrays.x_train,
            "y_train": arrays.y_train,
            "x_test": arrays.x_test,
            "y_test": arrays.y_test,
            "class_names": np.array(arrays.class_names, dtype=str),
            "format": np.array(str(_CACHE_FORMAT)),
            **{k: np.array(v) for k, v in meta.items()},
        }
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **contents)  # uncompressed: pixels hardly compress, and reading is faster
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        message = f"could not write the cache {path} ({_problem(exc)}); loaded without caching"
        say(message)
        if warn:
            warnings.warn(message, RuntimeWarning, stacklevel=5)
        return
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    say(f"cached to {path}")


def _through_cache(
    source: Path,
    layout: str,
    fingerprint: str,
    cache_root: Path,
    say: Progress,
    warn: bool,
    build: Callable[[], _Arrays],
) -> Dataset:
    """Serve the cache when it matches the source's fingerprint, else build and cache."""
    path = _cache_path(cache_root, source)
    cached = _read_cache(path, fingerprint, say)
    if cached is not None:
        say(f"loaded from cache {path}")
        return _dataset(cached, str(source), layout, from_cache=True)
    arrays = build()
    meta = {"fingerprint": fingerprint, "source": str(source), "layout": layout}
    _write_cache(path, arrays, meta, say, warn)
    return _dataset(arrays, str(source), layout)


def _problem(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# --------------------------------------------------------------------------------------------
# Image folders: train/<class>/* and test/<class>/*


@dataclass
class _FolderScan:
    class_names: tuple[str, ...]
    files: list[str]  # train files first, then test files
    labels: np.ndarray
    n_train: int
    fingerprint: str


def _entries(path: Path) -> list[os.DirEntry[str]]:
    with os.scandir(path) as it:
        return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)


def _scan_image_folder(root: Path) -> _FolderScan:
    """List the images and fingerprint them (name, size, mtime) in one pass of os.scandir."""
    splits: dict[str, dict[str, Path]] = {}
    for split in ("train", "test"):
        try:
            splits[split] = {e.name: Path(e.path) for e in _entries(root / split) if e.is_dir()}
        except OSError as exc:
            raise DataError(f"{root / split}: cannot read ({_problem(exc)})") from None
        if not splits[split]:
            raise DataError(f"{root / split}: no class folders in it")
    for split, other in (("train", "test"), ("test", "train")):
        for name in sorted(splits[split].keys() - splits[other].keys()):
            raise DataError(
                f"{root / other / name}: class folder missing ({split}/{name} exists; "
                "train and test need the same class folders)"
            )
    names = sorted(splits["train"])
    class_names = CLASS_NAMES if set(names) <= set(CLASS_NAMES) else tuple(names)
    if len(class_names) > 256:
        raise DataError(f"{root / 'train'}: {len(class_names)} class folders (at most 256)")
    index = {name: i for i, name in enumerate(class_names)}

    files: list[str] = []
    labels: list[np.ndarray] = []
    digest = hashlib.sha256(f"image-folder {_CACHE_FORMAT}\n".encode())
    n_train = 0
    for split in ("train", "test"):
        for name in sorted(splits[split], key=index.__getitem__):
            folder = splits[split][name]
            try:
                entries = [e for e in _entries(folder) if e.name not in _IGNORED_FILES and e.is_file()]
                stats = [e.stat() for e in entries]
            except OSError as exc:
                raise DataError(f"{folder}: cannot read ({_problem(exc)})") from None
            if not entries:
                raise DataError(f"{folder}: class folder is empty")
            rel = f"{split}/{name}/"
            digest.update(
                "".join(
                    f"{rel}{e.name}\0{s.st_size}\0{s.st_mtime_ns}\n"
                    for e, s in zip(entries, stats, strict=True)
                ).encode("utf-8", "surrogateescape")
            )
            files.extend(e.path for e in entries)
            labels.append(np.full(len(entries), index[name], dtype=np.uint8))
        if split == "train":
            n_train = len(files)
    return _FolderScan(
        class_names=class_names,
        files=files,
        labels=np.concatenate(labels),
        n_train=n_train,
        fingerprint=digest.hexdigest(),
    )


def _load_image_folder(root: Path, cache_root: Path, workers: int, say: Progress, warn: bool) -> Dataset:
    scan = _scan_image_folder(root)

    def build() -> _Arrays:
        x = _decode_files(scan.files, workers, say, str(root))
        n = scan.n_train
        return _Arrays(x[:n], scan.labels[:n], x[n:], scan.labels[n:], scan.class_names)

    return _through_cache(root, "image-folder", scan.fingerprint, cache_root, say, warn, build)


def _decode_files(files: Sequence[str], workers: int, say: Progress, where: str) -> np.ndarray:
    """Decode every file to uint8[N, 32, 32, 3], in ``workers`` processes when that pays off."""
    chunks = [files[i : i + _CHUNK_SIZE] for i in range(0, len(files), _CHUNK_SIZE)]
    processes = min(workers, len(chunks))
    how = f"with {processes} processes" if processes > 1 else "in this process"
    say(f"decoding {len(files)} images from {where} {how}")
    out = np.empty((len(files), 32, 32, 3), dtype=np.uint8)
    errors: list[tuple[str, str]] = []
    n_bad = 0
    done = 0
    next_report = len(files) // 4

    def collect(start: int, result: tuple[np.ndarray, list[tuple[str, str]], int]) -> None:
        nonlocal n_bad, done, next_report
        pixels, bad, count = result
        out[start : start + len(pixels)] = pixels
        errors.extend(bad)
        n_bad += count
        done += len(pixels)
        if len(chunks) >= 4 and next_report <= done < len(files):
            say(f"decoded {done}/{len(files)} images")
            next_report += len(files) // 4

    starts = list(range(0, len(files), _CHUNK_SIZE))
    pending = set(starts)
    if processes > 1:
        if getattr(multiprocessing.current_process(), "_inheriting", False):
            # A worker re-running the caller's script: stop it before it runs any further.
            raise RuntimeError(_NEEDS_MAIN_GUARD)
        # spawn, not fork: the caller may have TensorFlow (or other) threads running.
        context = multiprocessing.get_context("spawn")
        pool = concurrent.futures.ProcessPoolExecutor(processes, mp_context=context)
        try:
            futures = {
                pool.submit(_decode_chunk, list(chunk)): start
                for start, chunk in zip(starts, chunks, strict=True)
            }
            for future in concurrent.futures.as_completed(futures):
                collect(futures[future], future.result())
                pending.discard(futures[future])
        except concurrent.futures.process.BrokenProcessPool as exc:
            say(f"worker processes failed ({exc}); decoding the rest in this process")
            if _main_is_unguarded():
                say(_NEEDS_MAIN_GUARD)
        finally:
            # On an interrupt, do not sit out the queued chunks.
            pool.shutdown(wait=True, cancel_futures=True)
    for start in sorted(pending):
        collect(start, _decode_chunk(list(files[start : start + _CHUNK_SIZE])))
    if n_bad:
        errors.sort()
        shown = "; ".join(f"{path}: {problem}" for path, problem in errors[:_MAX_REPORTED])
        more = f" (and {n_bad - _MAX_REPORTED} more bad images)" if n_bad > _MAX_REPORTED else ""
        raise DataError(f"{shown}{more}")
    return out


_NEEDS_MAIN_GUARD = (
    "decoding in several processes re-imports the main script in each one: put the script's "
    'code under `if __name__ == "__main__":`, or pass workers=1'
)


def _main_is_unguarded() -> bool:
    """Whether worker processes will re-run the caller's script (a script, not a module or REPL)."""
    main = sys.modules.get("__main__")
    return getattr(getattr(main, "__spec__", None), "name", None) is None and bool(
        getattr(main, "__file__", None)
    )


def _decode_chunk(paths: list[str]) -> tuple[np.ndarray, list[tuple[str, str]], int]:
    """Worker: decode ``paths``; bad files are reported as (path, problem), not raised."""
    out = np.zeros((len(paths), 32, 32, 3), dtype=np.uint8)
    errors: list[tuple[str, str]] = []
    n_bad = 0
    for i, path in enumerate(paths):
        try:
            out[i] = _decode_one(path)
        except Exception as exc:
            n_bad += 1
            if len(errors) < _MAX_REPORTED:
                errors.append((path, _image_problem(exc)))
    return out, errors, n_bad


def _decode_one(path: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    # Fast path for the common case (CIFAR-10 as 32x32 RGB JPEGs): plain Pillow, no resizing.
    try:
        with Image.open(path, formats=("JPEG",)) as im:
            # (EXIF may rotate the picture: the general decoder applies it.)
            if im.mode == "RGB" and im.size == (32, 32) and "exif" not in im.info:
                im.load()
                return np.asarray(im)
    except (UnidentifiedImageError, OSError, ValueError):
        pass  # not a plain JPEG, or a broken one: the general decoder says what is wrong
    # Anything else (PNG, greyscale, other sizes) goes through the package's general decoder.
    from .images import load_image

    pixels = np.asarray(load_image(path, name=path))
    if pixels.dtype != np.uint8 or pixels.shape != (32, 32, 3):
        raise ValueError(f"decoded to {pixels.dtype}{list(pixels.shape)}, not uint8[32, 32, 3]")
    return pixels


def _image_problem(exc: Exception) -> str:
    problem = getattr(exc, "problem", None)  # ImageError carries the decoder's problem
    if isinstance(problem, str) and problem:
        return problem
    if isinstance(exc, OSError) and not exc.strerror:
        return f"cannot decode ({exc})"
    return _problem(exc)


# --------------------------------------------------------------------------------------------
# The official python pickles: cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}


def _find_pickle_folder(path: Path) -> Path | None:
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
        raise DataError(f"{path}: not a readable pickle ({_problem(exc)})") from None


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
    digest = hashlib.sha256(f"pickle {_CACHE_FORMAT}\n".encode())
    for name in (*_TRAIN_BATCHES, _TEST_BATCH, _META):
        try:
            s = os.stat(folder / name)
            digest.update(f"{name}\0{s.st_size}\0{s.st_mtime_ns}\n".encode())
        except FileNotFoundError:
            digest.update(f"{name}\0missing\n".encode())
        except OSError as exc:
            raise DataError(f"{folder / name}: cannot read ({_problem(exc)})") from None
    return digest.hexdigest()


def _load_pickle_folder(folder: Path, cache_root: Path, say: Progress, warn: bool) -> Dataset:
    def build() -> _Arrays:
        say(f"reading the CIFAR-10 python batches in {folder}")
        names = _read_class_names(folder)
        train = [_read_batch(folder / name, len(names)) for name in _TRAIN_BATCHES]
        x_test, y_test = _read_batch(folder / _TEST_BATCH, len(names))
        x_train = np.concatenate([x for x, _ in train])
        y_train = np.concatenate([y for _, y in train])
        return _Arrays(x_train, y_train, x_test, y_test, names)

    fingerprint = _pickle_fingerprint(folder)
    return _through_cache(folder, "pickle", fingerprint, cache_root, say, warn, build)
