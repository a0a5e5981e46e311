"""Shared fixtures: where the real data lives, and a cache folder of the test session's own."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("JUPYTER_CIFAR_SHARED", REPO.parent / "shared"))


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        # Not a skip: without the real data these tests would prove nothing, so they fail loudly.
        raise FileNotFoundError(f"{what} not found at {path} (set JUPYTER_CIFAR_SHARED)")
    return path


@pytest.fixture(scope="session")
def cifar10_dir() -> Path:
    """The full JPEG copy of CIFAR-10 (train/<class>/*.jpg, test/<class>/*.jpg)."""
    return _require(SHARED / "cifar10", "the CIFAR-10 JPEG copy")


@pytest.fixture(scope="session")
def lossless_npz() -> Path:
    """Original pixels of a CIFAR-10 subset, with every label (see its README)."""
    return _require(SHARED / "cifar10-lossless-subset" / "cifar10_lossless_subset.npz", "the lossless subset")


@pytest.fixture(scope="session")
def batches_meta() -> Path:
    return _require(SHARED / "cifar10-lossless-subset" / "batches.meta", "batches.meta")


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Each test session decodes into a cache of its own, so the first load is really a first load."""
    os.environ["JUPYTER_CIFAR_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    os.environ.pop("JUPYTER_CIFAR_DATA", None)


@pytest.fixture(scope="session")
def cifar10(cifar10_dir: Path):
    """The whole dataset, decoded once per test session (in parallel) and cached."""
    from jupyter_cifar.data import load_cifar10

    return load_cifar10(cifar10_dir)
