"""Image folders, train/<class>/* and test/<class>/*: scanned, then decoded in parallel processes."""

from __future__ import annotations

import concurrent.futures
import hashlib
import multiprocessing
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import DataError
from .cache import CACHE_FORMAT, describe_error, through_cache
from .dataset import CLASS_NAMES, Arrays, Dataset, Progress

# Files per decoding task: big enough to keep inter-process overhead small, small enough to
# balance the work between processes and to report progress.
_CHUNK_SIZE = 1000
# Bad images named in a DataError; the rest are counted.
_MAX_REPORTED = 5
# Files in a class folder that are not images: hidden files and the usual desktop litter.
_IGNORED_FILES = frozenset({"Thumbs.db", "desktop.ini"})


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
            raise DataError(f"{root / split}: cannot read ({describe_error(exc)})") from None
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
    digest = hashlib.sha256(f"image-folder {CACHE_FORMAT}\n".encode())
    n_train = 0
    for split in ("train", "test"):
        for name in sorted(splits[split], key=index.__getitem__):
            folder = splits[split][name]
            try:
                entries = [e for e in _entries(folder) if e.name not in _IGNORED_FILES and e.is_file()]
                stats = [e.stat() for e in entries]
            except OSError as exc:
                raise DataError(f"{folder}: cannot read ({describe_error(exc)})") from None
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


def load_image_folder(root: Path, cache_root: Path, workers: int, say: Progress, warn: bool) -> Dataset:
    scan = _scan_image_folder(root)

    def build() -> Arrays:
        x = _decode_files(scan.files, workers, say, str(root))
        n = scan.n_train
        return Arrays(x[:n], scan.labels[:n], x[n:], scan.labels[n:], scan.class_names)

    return through_cache(root, "image-folder", scan.fingerprint, cache_root, say, warn, build)


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
    from ..images import load_image

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
    return describe_error(exc)
