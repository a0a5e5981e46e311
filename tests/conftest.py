"""Shared fixtures: where the real data lives, and a cache folder of the test session's own."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))  # test helpers such as mongod.py
pytest_plugins = ["pytest_jupyter.jupyter_server"]

SHARED = Path(os.environ.get("JUPYTER_CIFAR_SHARED", REPO.parent / "shared"))


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        # Not a skip: without the real data these tests would prove nothing, so they fail loudly.
        raise FileNotFoundError(f"{what} not found at {path} (set JUPYTER_CIFAR_SHARED)")
    return path


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's: what `-n auto` means for this suite
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """A worker per usable core, at most 4. Each worker is a whole test session (its own mongod, its own
    decoded copy of CIFAR-10, TensorFlow, Chromium for the e2e files), and its tests train with every core
    TensorFlow sees; on two cores two workers keep both busy while a test waits on a process it started."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cores, 4))


_from_workers: list[str] = []


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's, in the controller, which collects no test itself
def pytest_testnodedown(node: Any, error: Any) -> None:
    _from_workers.extend(getattr(node, "workeroutput", {}).get("e2e_screenshots", []))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for folder in dict.fromkeys(map(Path, _from_workers)):  # with $JUPYTER_CIFAR_SCREENSHOTS, a shared one
        if names := sorted(p.name for p in folder.glob("*.png")):
            terminalreporter.write_line(f"e2e screenshots in {folder}: {', '.join(names)}")


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
    from jupyter_cifar.engine.data import load_cifar10

    return load_cifar10(cifar10_dir)


@pytest.fixture(scope="session")
def mongod(tmp_path_factory: pytest.TempPathFactory):
    """A real MongoDB 6 server on loopback for the whole session."""
    from mongod import Mongod

    server = Mongod(tmp_path_factory.mktemp("mongod")).start()
    yield server
    server.stop()


@pytest.fixture
def mongo_uri(mongod, request: pytest.FixtureRequest) -> str:
    """A fresh database on the session's server for each test."""
    import re

    db = "t_" + re.sub(r"[^A-Za-z0-9]", "_", request.node.name)[-50:]
    return f"{mongod.uri}/{db}"


@pytest.fixture(scope="session")
def jupyter_server(tmp_path_factory: pytest.TempPathFactory):
    """A real `jupyter server` process with the extension, on an embedded store, for the session."""
    from jupyterserver import JupyterServer

    root = tmp_path_factory.mktemp("jupyter")
    server = JupyterServer(root, store_uri=str(root / "models")).start()
    yield server
    server.stop()


@pytest.fixture
def jobs_server(tmp_path: Path, cifar10_dir: Path, cifar10):
    """A real `jupyter server` of its own that runs jobs (one at a time) on an embedded store, with the
    real data: each job is a process training."""
    from jupyterserver import JupyterServer

    server = JupyterServer(
        tmp_path / "server", store_uri=str(tmp_path / "models"), max_jobs=1,
        extra=(f"--CifarExtension.data_dir={cifar10_dir}",),
    ).start()  # fmt: skip
    yield server
    server.stop()


@pytest.fixture
def remote_uri(jupyter_server) -> str:
    """The session server's store, emptied for each test, as a RemoteModelStore URI."""
    from storetools import BACKING

    from jupyter_cifar.store.local import LocalModelStore

    backing = LocalModelStore(jupyter_server.store_uri)
    while page := backing.list(limit=1000).items:
        for record in page:
            backing.delete(record.ref)
    backing.collect_garbage(max_age=0)
    # A store remembers the numbers of deleted versions (never reused); a fresh store remembers none.
    with backing._tx(immediate=True) as db:
        db.execute("DELETE FROM deleted")
    backing.close()
    BACKING[jupyter_server.url] = jupyter_server.store_uri
    return jupyter_server.store_url
