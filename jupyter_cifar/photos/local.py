"""Photos of the embedded store: ``photos.sqlite`` in its folder, each photo's bytes in its row.

A photo is at most a few MiB, so SQLite keeps it whole with its record: one transaction keeps both, and
a crash leaves either the photo or nothing (no file without a record to collect later).
"""

from __future__ import annotations

import builtins
import json
import os
import sqlite3
import threading
from contextlib import AbstractContextManager
from pathlib import Path

from ..errors import StoreUnavailable
from ..store.local import transaction
from .records import PhotoRecord
from .store import PhotoStore

_SCHEMA = """
CREATE TABLE IF NOT EXISTS photos (
    id TEXT PRIMARY KEY,
    photo_set TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    label TEXT NOT NULL,
    created TEXT NOT NULL,
    doc TEXT NOT NULL,
    data BLOB NOT NULL,
    UNIQUE (photo_set, sha256)
);
CREATE INDEX IF NOT EXISTS photos_set ON photos (photo_set, created);
"""


class LocalPhotoStore(PhotoStore):
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.display = f"the photos in {self.root}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.root / "photos.sqlite", timeout=60, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as e:
            raise StoreUnavailable(f"the photo store at {self.root} cannot be opened: {e}") from None
        self._lock = threading.RLock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _tx(self, immediate: bool = True) -> AbstractContextManager[sqlite3.Connection]:
        return transaction(self._db, self._lock, f"the photo store at {self.root}", immediate)

    def _keep(self, record: PhotoRecord, data: bytes) -> PhotoRecord:
        with self._tx() as db:
            row = db.execute(
                "SELECT doc FROM photos WHERE photo_set = ? AND sha256 = ?", (record.set, record.sha256)
            ).fetchone()
            if row is not None:
                old = PhotoRecord.from_json(json.loads(row[0]))
                record = PhotoRecord.from_json({**record.to_json(), "id": old.id})
                db.execute(
                    "UPDATE photos SET label = ?, created = ?, doc = ? WHERE id = ?",
                    (record.label, record.created, json.dumps(record.to_json()), old.id),
                )
                return record
            db.execute(
                "INSERT INTO photos (id, photo_set, sha256, label, created, doc, data) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (record.id, record.set, record.sha256, record.label, record.created,
                 json.dumps(record.to_json()), data),
            )  # fmt: skip
        return record

    def _get(self, photo_id: str) -> PhotoRecord | None:
        with self._tx(False) as db:
            row = db.execute("SELECT doc FROM photos WHERE id = ?", (photo_id,)).fetchone()
        return None if row is None else PhotoRecord.from_json(json.loads(row[0]))

    def _list(self, set: str | None, limit: int, offset: int) -> tuple[builtins.list[PhotoRecord], int]:
        where, params = ("WHERE photo_set = ?", (set,)) if set is not None else ("", ())
        with self._tx(False) as db:
            total = db.execute(f"SELECT COUNT(*) FROM photos {where}", params).fetchone()[0]
            rows = db.execute(
                f"SELECT doc FROM photos {where} ORDER BY created, id LIMIT ? OFFSET ?",
                (*params, limit, offset),
            ).fetchall()
        return [PhotoRecord.from_json(json.loads(doc)) for (doc,) in rows], int(total)

    def _read(self, photo_id: str) -> bytes | None:
        with self._tx(False) as db:
            row = db.execute("SELECT data FROM photos WHERE id = ?", (photo_id,)).fetchone()
        return None if row is None else bytes(row[0])

    def _delete(self, photo_id: str) -> bool:
        with self._tx() as db:
            return db.execute("DELETE FROM photos WHERE id = ?", (photo_id,)).rowcount > 0

    def _counts(self) -> dict[str, dict[str, int]]:
        with self._tx(False) as db:
            rows = db.execute(
                "SELECT photo_set, label, COUNT(*) FROM photos GROUP BY photo_set, label"
            ).fetchall()
        counts: dict[str, dict[str, int]] = {}
        for photo_set, label, n in rows:
            counts.setdefault(photo_set, {})[label] = int(n)
        return counts
