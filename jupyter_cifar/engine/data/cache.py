"""This package's decoding cache (an .npz per source, served while the source is unchanged), and .npz
files given as a source. Both are read with ``allow_pickle=False``: a dataset file is data, never code."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import DataError
from .dataset import CLASS_NAMES, Arrays, Dataset, Progress, as_dataset, checked

ENV_CACHE = "JUPYTER_CIFAR_CACHE"
# Bump when the cache's contents or meaning change, so that old caches are decoded again.
CACHE_FORMAT = 1


def default_cache_dir() -> Path:
    """Where decoded datasets are cached: $JUPYTER_CIFAR_CACHE, else the XDG cache folder."""
    explicit = os.environ.get(ENV_CACHE)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "jupyter_cifar"


def read_npz(path: Path) -> tuple[Arrays, dict[str, str]]:
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
        arrays = Arrays(z["x_train"], z["y_train"], z["x_test"], z["y_test"], names)
    return checked(arrays), meta


def load_npz_source(path: Path) -> Dataset:
    try:
        arrays, _meta = read_npz(path)
    except Exception as exc:
        raise DataError(f"{path}: not a readable dataset .npz ({describe_error(exc)})") from None
    return as_dataset(arrays, str(path), "cache")


def cache_path(cache_root: Path, source: Path) -> Path:
    key = str(source.resolve()).encode("utf-8", "surrogateescape")
    return cache_root / f"cifar10-{hashlib.sha256(key).hexdigest()[:24]}.npz"


def read_cache(path: Path, fingerprint: str, say: Progress) -> Arrays | None:
    """The cached arrays if the cache is readable and matches ``fingerprint``; never raises."""
    try:
        arrays, meta = read_npz(path)
    except FileNotFoundError:
        return None
    except Exception as exc:
        say(f"ignoring unreadable cache {path} ({describe_error(exc)})")
        return None
    if meta.get("format") != str(CACHE_FORMAT) or meta.get("fingerprint") != fingerprint:
        say(f"source changed since it was cached; decoding again (cache {path})")
        return None
    return arrays


def write_cache(path: Path, arrays: Arrays, meta: dict[str, str], say: Progress, warn: bool) -> None:
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
            "format": np.array(str(CACHE_FORMAT)),
            **{k: np.array(v) for k, v in meta.items()},
        }
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **contents)  # uncompressed: pixels hardly compress, and reading is faster
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        message = f"could not write the cache {path} ({describe_error(exc)}); loaded without caching"
        say(message)
        if warn:
            warnings.warn(message, RuntimeWarning, stacklevel=5)
        return
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    say(f"cached to {path}")


def through_cache(
    source: Path,
    layout: str,
    fingerprint: str,
    cache_root: Path,
    say: Progress,
    warn: bool,
    build: Callable[[], Arrays],
) -> Dataset:
    """Serve the cache when it matches the source's fingerprint, else build and cache."""
    path = cache_path(cache_root, source)
    cached = read_cache(path, fingerprint, say)
    if cached is not None:
        say(f"loaded from cache {path}")
        return as_dataset(cached, str(source), layout, from_cache=True)
    arrays = build()
    meta = {"fingerprint": fingerprint, "source": str(source), "layout": layout}
    write_cache(path, arrays, meta, say, warn)
    return as_dataset(arrays, str(source), layout)


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
