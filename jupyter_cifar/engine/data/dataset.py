"""A dataset in memory: CIFAR-10-shaped arrays, where they came from, and class-balanced subsets."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import BadParameter

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


@dataclass
class Arrays:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]


def checked(arrays: Arrays) -> Arrays:
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
    return Arrays(x_train, y_train, x_test, y_test, tuple(arrays.class_names))


def as_dataset(arrays: Arrays, source: str, layout: str, *, from_cache: bool = False) -> Dataset:
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
