"""Jobs of the embedded store: ``jobs.sqlite`` and ``checkpoints/<id>.<epochs>.keras`` in its folder.

Each change is one ``BEGIN IMMEDIATE`` transaction that reads the record, checks what the caller
expects of it and writes it back, so processes on one machine change a job one at a time (SQLite's
write lock), and events are numbered in the same transaction that keeps them.
"""

from __future__ import annotations

import builtins
import json
import os
import shutil
import sqlite3
import threading
import uuid
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import IO, Any

from ..errors import StoreUnavailable
from ..store.local import transaction
from .records import JobRecord
from .store import Expect, JobStore

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    created TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, created);
CREATE TABLE IF NOT EXISTS job_events (
    job TEXT NOT NULL,
    seq INTEGER NOT NULL,
    event TEXT NOT NULL,
    PRIMARY KEY (job, seq)
);
"""


class LocalJobStore(JobStore):
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.display = f"jobs in {self.root}"
        self.checkpoints = self.root / "checkpoints"
        try:
            self.checkpoints.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.root / "jobs.sqlite", timeout=60, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as e:
            raise StoreUnavailable(f"the job store at {self.root} cannot be opened: {e}") from None
        self._lock = threading.RLock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        return transaction(self._db, self._lock, f"the job store at {self.root}")

    def _insert(self, record: JobRecord) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO jobs (id, state, created, doc) VALUES (?, ?, ?, ?)",
                (record.id, record.state, record.created, json.dumps(record.to_doc())),
            )

    def _get(self, job_id: str) -> JobRecord | None:
        with self._lock:
            row = self._db.execute("SELECT doc FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return JobRecord.from_doc(json.loads(row[0])) if row else None

    def _list(self, states: Sequence[str], limit: int, offset: int) -> tuple[builtins.list[JobRecord], int]:
        where, params = "", tuple(states)
        if states:
            where = f"WHERE state IN ({','.join('?' * len(states))})"
        with self._lock:
            rows = self._db.execute(
                f"SELECT doc FROM jobs {where} ORDER BY created DESC, id LIMIT ? OFFSET ?",
                (*params, limit, offset),
            ).fetchall()
            (total,) = self._db.execute(f"SELECT COUNT(*) FROM jobs {where}", params).fetchone()
        return [JobRecord.from_doc(json.loads(r[0])) for r in rows], int(total)

    def _update(self, job_id: str, expect: Expect, changes: dict[str, Any]) -> bool:
        with self._tx() as db:
            row = db.execute("SELECT doc FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return False
            doc = json.loads(row[0])
            if not _matches(doc, expect):
                return False
            doc.update(changes)
            db.execute(
                "UPDATE jobs SET state = ?, doc = ? WHERE id = ?", (doc["state"], json.dumps(doc), job_id)
            )
            return True

    def _append(self, job_id: str, owner: str, events: Sequence[dict[str, Any]]) -> int | None:
        with self._tx() as db:
            row = db.execute("SELECT doc FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return None
            doc = json.loads(row[0])
            if doc.get("owner") != owner or doc.get("state") not in ("running", "stopping"):
                return None
            first = int(doc.get("events", 0)) + 1
            db.executemany(
                "INSERT INTO job_events (job, seq, event) VALUES (?, ?, ?)",
                [(job_id, first + i, json.dumps(event)) for i, event in enumerate(events)],
            )
            doc["events"] = first + len(events) - 1
            db.execute("UPDATE jobs SET doc = ? WHERE id = ?", (json.dumps(doc), job_id))
            return int(doc["events"])

    def _events(self, job_id: str, after: int, limit: int) -> builtins.list[tuple[int, dict[str, Any]]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, event FROM job_events WHERE job = ? AND seq > ? ORDER BY seq LIMIT ?",
                (job_id, after, limit),
            ).fetchall()
        return [(int(seq), json.loads(event)) for seq, event in rows]

    def _delete(self, job_id: str) -> bool:
        with self._tx() as db:
            gone = db.execute("DELETE FROM jobs WHERE id = ?", (job_id,)).rowcount > 0
            db.execute("DELETE FROM job_events WHERE job = ?", (job_id,))
        for path in self._checkpoint_files(job_id):
            path.unlink(missing_ok=True)
        return gone

    def _put_checkpoint(self, job_id: str, path: Path, epochs: int) -> None:
        # ``<id>.<epochs>.keras``: the file says what it holds, so no second write can disagree with it
        final = self.checkpoints / f"{job_id}.{epochs}.keras"
        part = self.checkpoints / f"{job_id}.{uuid.uuid4().hex}.part"
        try:
            with open(path, "rb") as src, open(part, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
                dst.flush()
                os.fsync(dst.fileno())
            os.replace(part, final)
        finally:
            part.unlink(missing_ok=True)
        for old in self._checkpoint_files(job_id):
            if old != final:
                old.unlink(missing_ok=True)

    def _checkpoint_files(self, job_id: str) -> builtins.list[Path]:
        """The job's checkpoint files, the newest (most epochs) last."""
        found = []
        for path in self.checkpoints.glob(f"{job_id}.*.keras"):
            epochs = path.name.split(".")[1]
            if epochs.isdigit():
                found.append((int(epochs), path))
        return [path for _, path in sorted(found)]

    def _open_checkpoint(self, job_id: str) -> tuple[IO[bytes], int] | None:
        for path in reversed(self._checkpoint_files(job_id)):
            try:
                return open(path, "rb"), int(path.name.split(".")[1])
            except FileNotFoundError:
                continue  # replaced meanwhile: the next newest
        return None


def _matches(doc: dict[str, Any], expect: Expect) -> bool:
    for key, wanted in expect.items():
        value = doc.get(key)
        if isinstance(wanted, tuple):
            if value not in wanted:
                return False
        elif value != wanted:
            return False
    return True
