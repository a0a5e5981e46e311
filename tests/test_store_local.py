"""The embedded store's own duties, beyond the contract: its catalog is data, not a list of paths to
trust (someone with write access to a shared store folder can change it)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from storetools import tiny_model_file

from jupyter_cifar.errors import IntegrityError
from jupyter_cifar.store.local import LocalModelStore


def point_catalog_at(store: LocalModelStore, ref_version: int, file: str) -> None:
    with sqlite3.connect(store.root / "catalog.sqlite") as db:
        db.execute("UPDATE versions SET file = ? WHERE name = 'm' AND version = ?", (file, ref_version))
    db.close()


def _relative(store: LocalModelStore, victim: Path) -> str:
    return "../../" + victim.name  # from ROOT/files/ to ROOT's parent, where the victim lies


def _absolute(store: LocalModelStore, victim: Path) -> str:
    return str(victim)


def _link(store: LocalModelStore, victim: Path) -> str:
    (store.files / "innocent.keras").symlink_to(victim)  # a plain name, a link leading out
    return "innocent.keras"


@pytest.mark.parametrize("escape", [_relative, _absolute, _link], ids=["dotdot", "absolute", "symlink"])
def test_a_catalog_row_naming_a_file_outside_the_store_is_never_read_or_removed(
    tmp_path: Path, escape: Callable[[LocalModelStore, Path], str]
) -> None:
    victim = tmp_path / "victim-outside-the-store.txt"
    victim.write_text("someone else's file")
    model = tiny_model_file(tmp_path / "tiny.keras")
    with LocalModelStore(tmp_path / "store") as store:
        for _ in range(3):
            store.save(model, "m")
        point_catalog_at(store, 2, escape(store, victim))

        with pytest.raises(IntegrityError, match=r"m:2.*not in .*files.*refused"):
            store.export("m:2", tmp_path / "out.keras")
        report = store.check(repair=True, grace=0)
        assert [(p.kind, p.version, p.repaired) for p in report.problems if p.version] == [
            ("missing", 2, True)
        ]
        assert victim.read_text() == "someone else's file"  # repair removed the record, not the file

        point_catalog_at(store, 3, escape(store, victim) if escape is not _link else "innocent.keras")
        store.delete("m:3")
        assert victim.read_text() == "someone else's file"  # delete removed the record, not the file
        assert [r.ref for r in store.list().items] == ["m:1"]
        store.export("m:1", tmp_path / "whole.keras")  # the rest of the store works as before
        assert store.save(model, "m").version == 4
