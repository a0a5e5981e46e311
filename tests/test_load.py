"""The load campaigns of tools/load_campaign.py, shortened for CI: 0 errors and 0 duplicate versions.

Eight processes saving, listing and reading back (one of them loading with Keras) on the embedded store
and on MongoDB, and fifty concurrent clients on the HTTP API of a real server, for a few seconds each.
The full minute is ``python tools/load_campaign.py`` (see its docstring); the README has its figures.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from storetools import tiny_model_file

from jupyter_cifar.store.local import LocalModelStore

TOOL = Path(__file__).resolve().parent.parent / "tools" / "load_campaign.py"
SECONDS = "8"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Made once here, so that no campaign spends its own seconds importing Keras to make one."""
    return tiny_model_file(tmp_path_factory.mktemp("model") / "tiny.keras")


def campaign(model: Path, *args: str) -> dict[str, Any]:
    """Run the campaign script as a user would; its figures, checked against its exit status."""
    done = subprocess.run(
        [sys.executable, str(TOOL), "--json", "--seconds", SECONDS, "--model", str(model), *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.stdout, done.stderr[-3000:]
    (figures,) = json.loads(done.stdout)["runs"]
    assert done.returncode == (1 if figures["errors"] or figures["duplicates"] else 0), done.stderr[-3000:]
    return figures


def assert_clean_store_run(figures: dict[str, Any]) -> None:
    assert figures["errors"] == 0, figures["messages"]
    assert figures["duplicates"] == 0
    assert figures["processes"] == 8
    assert figures["saves"] >= 8 and figures["lists"] >= 8 and figures["reads"] >= 7 and figures["loads"] >= 1


def test_eight_processes_on_the_embedded_store(model: Path) -> None:
    assert_clean_store_run(campaign(model, "--backend", "local", "--procs", "8"))


def test_eight_processes_on_mongodb(model: Path, mongo_uri: str) -> None:
    assert_clean_store_run(campaign(model, "--backend", "mongo", "--procs", "8", "--store", mongo_uri))


def test_fifty_clients_on_the_http_api(model: Path) -> None:
    figures = campaign(model, "--backend", "http", "--clients", "50")
    assert figures["errors"] == 0, figures["messages"]
    assert figures["duplicates"] == 0
    assert figures["clients"] == 50 and figures["requests"] >= 50
    assert all(figures[kind] > 0 for kind in ("list", "show", "upload", "download")), figures


def test_the_audit_finds_duplicates_and_gaps(model: Path, tmp_path: Path) -> None:
    """What the campaigns rely on to say '0 duplicates, versions 1..N' can say otherwise."""
    spec = importlib.util.spec_from_file_location("load_campaign", TOOL)
    assert spec is not None and spec.loader is not None
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    with LocalModelStore(tmp_path / "models") as store:
        for _ in range(3):
            store.save_file(model, "m")
        assert tool.audit(store, ["m"], [("m", 1), ("m", 2), ("m", 3)], model) == (0, [])
        duplicates, problems = tool.audit(store, ["m"], [("m", 1), ("m", 1), ("m", 2), ("m", 3)], model)
        assert duplicates == 1 and "3 versions for 4 saves" in problems[0]
        store.delete("m:2")
        _, problems = tool.audit(store, ["m"], [("m", 1), ("m", 2), ("m", 3)], model)
        assert problems == ["m: 2 versions for 3 saves; missing [2], unexpected []"]
