"""Crash consistency on each backend: writers SIGKILLed at random moments lose no acknowledged version.

Runs ``tools/crash_campaign.py`` (see its docstring) with 100 kills per backend and kill delays of up to
400 ms, about a minute for both on two cores; the README's figures come from full runs of the tool.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from jupyter_cifar.store import open_store

TOOL = Path(__file__).resolve().parent.parent / "tools" / "crash_campaign.py"
KILLS = 100


def _load_tool():
    spec = importlib.util.spec_from_file_location("crash_campaign", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["crash_campaign"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


crash = _load_tool()


@pytest.fixture(scope="module")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return crash.model_files(tmp_path_factory.mktemp("models"))


@pytest.mark.parametrize("backend", ["local", "mongo"])
def test_writers_killed_at_random_moments_lose_nothing_acknowledged(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, model_files: list[Path]
) -> None:
    uri = str(tmp_path / "store") if backend == "local" else request.getfixturevalue("mongo_uri")
    figures = crash.campaign(backend, uri, model_files, KILLS, seed=7, max_delay_ms=400, workdir=tmp_path)
    print("\n" + crash.figures_table([figures]))
    assert figures.violations == []
    assert figures.kills == KILLS and figures.worker_errors == 0
    assert figures.versions_lost == 0 and figures.other_problems == 0
    assert figures.leftovers_repaired == figures.leftovers_found
    # the kills landed among real work: saves and deletes were acknowledged, and saves were cut short
    assert figures.saves_acknowledged > 0 and figures.deletes_acknowledged > 0
    assert figures.kills_leaving_leftovers > 0
    with open_store(uri) as store:
        assert store.check(grace=0).problems == []


def test_the_campaign_notices_a_lost_version_a_resurrection_and_a_reused_number(
    tmp_path: Path, model_files: list[Path]
) -> None:
    """The ledger is what proves "nothing lost": it must fail when something is."""
    import hashlib

    sha = hashlib.sha256(model_files[0].read_bytes()).hexdigest()
    journal = tmp_path / "journal.log"
    with open_store(tmp_path / "store") as store:
        for _ in range(3):
            store.save_file(model_files[0], "crash-a")
        ledger = crash.Ledger(crash.Figures("local"), {sha})
        saves = "".join(f"S crash-a {v} {sha}\n" for v in (1, 2, 3))
        journal.write_text(f"L 1\n{saves}d crash-a 3\nD crash-a 3\n")
        ledger.replay(journal)
        ledger.reconcile(store, None)
        assert ledger.figures.violations == ["kill 0: crash-a:3 was deleted and came back"]

        store.delete("crash-a:3")
        store.delete("crash-a:1")  # behind the journal's back: an acknowledged version lost
        with journal.open("a") as f:
            f.write(f"S crash-a 2 {sha}\n")  # a number given twice
        ledger.replay(journal)
        ledger.reconcile(store, None)
        assert ledger.figures.violations[1:] == [
            "kill 0: save acknowledged as crash-a:2, not above 3",
            "kill 0: crash-a:1 was acknowledged and is gone",
        ]
        assert ledger.figures.versions_lost == 1
