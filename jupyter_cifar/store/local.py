"""The embedded store: model files in a folder, their records in an SQLite catalogue beside them.

The default when no MongoDB is configured (under Jupyter's data dir). Layout::

    ROOT/catalog.sqlite       versions and aliases (WAL mode: readers never wait for a writer)
    ROOT/files/<token>.keras  one file per version, named by a random token
    ROOT/staging/<token>.part what a save is still writing
    ROOT/saves.lock           held (shared) by every save from its first write to its record

The catalog's ``file`` column is trusted only as a plain name inside ``files/``: a row naming anything
else (``..``, an absolute path, a link leading out) is never read or removed.

A save writes and fsyncs the file in ``staging``, renames it into ``files``, and only then inserts the
record in one ``BEGIN IMMEDIATE`` transaction that also picks the next version number, so concurrent
writers in several processes get distinct versions (never one a deleted version had) and a killed save
leaves no visible version. A delete removes the record first, then the file.

What an interrupted save or delete leaves (a staging file, a file no record names) is removed on open
by :meth:`collect_garbage` once old enough to belong to no running save. :meth:`check` tells it from a
save still running whatever its age: it takes ``saves.lock`` exclusively, and while it holds it no save
is between its first write and its record, so every file without a record is dead. The kernel releases
a killed process's lock, so a killed save never blocks it. Where there is no ``flock`` (Windows), age
decides there too.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from ..errors import IntegrityError, NotFound, StoreUnavailable
from .base import ModelStore
from .records import CHUNK, Leftover, ModelRecord, Page, Query

try:
    import fcntl
except ImportError:  # Windows: leftovers are told from running saves by their age alone
    fcntl = None  # type: ignore[assignment]

# check() waits this long for running saves to reach their record; then it goes by age instead.
LOCK_WAIT_SECONDS = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    created TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    file TEXT NOT NULL UNIQUE,
    tags TEXT NOT NULL DEFAULT '{}',
    notes TEXT NOT NULL DEFAULT '',
    test_accuracy REAL,
    metadata TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (name, version)
);
CREATE INDEX IF NOT EXISTS versions_created ON versions (created);
CREATE INDEX IF NOT EXISTS versions_accuracy ON versions (test_accuracy);
CREATE TABLE IF NOT EXISTS aliases (
    name TEXT NOT NULL,
    alias TEXT NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (name, alias),
    FOREIGN KEY (name, version) REFERENCES versions (name, version) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS aliases_version ON aliases (name, version);
CREATE TABLE IF NOT EXISTS deleted (
    name TEXT PRIMARY KEY,
    last INTEGER NOT NULL  -- the highest version ever deleted: never given to another model
);
"""

_COLUMNS = "name, version, created, sha256, size, file, tags, notes, test_accuracy, metadata"


class LocalModelStore(ModelStore):
    """Models in a local folder; safe for several processes on one machine."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        super().__init__()
        if not os.fspath(root).strip():
            from ..errors import BadParameter

            raise BadParameter("--store", "an empty path names no folder")
        self.root = Path(root).expanduser().absolute()
        self.display = str(self.root)
        self.files = self.root / "files"
        self.staging = self.root / "staging"
        self.lock_path = self.root / "saves.lock"
        try:
            self.files.mkdir(parents=True, exist_ok=True)
            self.staging.mkdir(exist_ok=True)
            self.lock_path.touch()
            self._db = sqlite3.connect(
                self.root / "catalog.sqlite", timeout=60, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as e:
            raise StoreUnavailable(f"the model store at {self.root} cannot be opened: {e}") from None
        self._lock = threading.RLock()  # one connection, shared by this process's threads
        self.collect_garbage()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _tx(self, immediate: bool = False) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        return transaction(self._db, self._lock, f"the model store at {self.root}", immediate)

    @contextmanager
    def _save_lock(self) -> Iterator[None]:
        """Held (shared, so saves never wait for each other) from a save's first write to its record."""
        if fcntl is None:
            yield
            return
        with open(self.lock_path, "rb") as lock:  # each save its own open file: its own lock
            fcntl.flock(lock, fcntl.LOCK_SH)
            yield

    @contextmanager
    def _no_save_running(self) -> Iterator[bool]:
        """The save lock, exclusively: yields True once no save is between its first write and its
        record (and none starts until the context ends); False if that could not be had in time."""
        if fcntl is None:
            yield False
            return
        with open(self.lock_path, "rb") as lock:
            deadline = time.monotonic() + LOCK_WAIT_SECONDS
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        yield False
                        return
                    time.sleep(0.01)
            yield True

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.OperationalError as e:
                raise StoreUnavailable(f"the model store at {self.root}: {e}") from None

    # -- primitives ------------------------------------------------------------------------------
    def _insert_version(
        self, name: str, path: Path, sha256: str, size: int, fields: dict[str, Any]
    ) -> ModelRecord:
        with self._save_lock():
            return self._write_version(name, path, sha256, size, fields)

    def _write_version(
        self, name: str, path: Path, sha256: str, size: int, fields: dict[str, Any]
    ) -> ModelRecord:
        token = uuid.uuid4().hex
        part = self.staging / f"{token}.part"
        final = self.files / f"{token}.keras"
        try:
            with open(path, "rb") as src, open(part, "wb") as dst:
                shutil.copyfileobj(src, dst, CHUNK)
                dst.flush()
                os.fsync(dst.fileno())
            os.replace(part, final)
        finally:
            part.unlink(missing_ok=True)
        _fsync_dir(self.files)
        try:
            with self._tx(immediate=True) as db:
                (version,) = db.execute(
                    "SELECT MAX(COALESCE((SELECT MAX(version) FROM versions WHERE name = ?), 0), "
                    "COALESCE((SELECT last FROM deleted WHERE name = ?), 0)) + 1",
                    (name, name),
                ).fetchone()
                db.execute(
                    f"INSERT INTO versions ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        name,
                        version,
                        fields["created"],
                        sha256,
                        size,
                        final.name,
                        json.dumps(fields["tags"]),
                        fields["notes"],
                        fields["test_accuracy"],
                        json.dumps(fields["metadata"]),
                    ),
                )
        except BaseException:
            final.unlink(missing_ok=True)
            raise
        return ModelRecord(name=name, version=version, sha256=sha256, size=size, **fields)

    def _records(self, rows: list[tuple[Any, ...]]) -> list[ModelRecord]:
        if not rows:
            return []
        keys = {(r[0], r[1]) for r in rows}
        aliases: dict[tuple[str, int], list[str]] = {}
        names = sorted({k[0] for k in keys})
        marks = ",".join("?" * len(names))
        for name, alias, version in self._query(
            f"SELECT name, alias, version FROM aliases WHERE name IN ({marks})", tuple(names)
        ):
            if (name, version) in keys:
                aliases.setdefault((name, version), []).append(alias)
        return [
            ModelRecord(
                name=r[0],
                version=r[1],
                created=r[2],
                sha256=r[3],
                size=r[4],
                aliases=sorted(aliases.get((r[0], r[1]), [])),
                tags=json.loads(r[6]),
                notes=r[7],
                test_accuracy=r[8],
                metadata=json.loads(r[9]),
            )
            for r in rows
        ]

    def _get(self, name: str, version: int | None) -> ModelRecord | None:
        if version is None:
            sql = f"SELECT {_COLUMNS} FROM versions WHERE name = ? ORDER BY version DESC LIMIT 1"
            rows = self._query(sql, (name,))
        else:
            rows = self._query(
                f"SELECT {_COLUMNS} FROM versions WHERE name = ? AND version = ?", (name, version)
            )
        records = self._records(rows)
        return records[0] if records else None

    def _version_of_alias(self, name: str, alias: str) -> int | None:
        rows = self._query("SELECT version FROM aliases WHERE name = ? AND alias = ?", (name, alias))
        return rows[0][0] if rows else None

    def _list(self, query: Query) -> Page:
        where, params = [], []
        if query.name is not None:
            where.append("name = ?")
            params.append(query.name)
        if query.search:
            pattern = "%" + query.search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            where.append("(name LIKE ? ESCAPE '\\' OR notes LIKE ? ESCAPE '\\')")
            params += [pattern, pattern]
        for key, value in query.tags.items():
            where.append(f"json_extract(tags, '$.\"{key}\"') = ?")  # keys are checked plain names
            params.append(value)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        direction = "DESC" if query.descending else "ASC"
        order = f"{query.sort_field} {direction}"
        if query.sort_field == "test_accuracy":  # records without an accuracy go last either way
            order = f"test_accuracy IS NULL, {order}"
        rows = self._query(
            f"SELECT {_COLUMNS} FROM versions {clause} ORDER BY {order}, name, version {direction} "
            "LIMIT ? OFFSET ?",
            (*params, query.limit, query.offset),
        )
        (total,) = self._query(f"SELECT COUNT(*) FROM versions {clause}", tuple(params))[0]
        return Page(self._records(rows), total, query.offset, query.limit)

    def _open_file(self, record: ModelRecord) -> IO[bytes]:
        rows = self._query(
            "SELECT file FROM versions WHERE name = ? AND version = ?", (record.name, record.version)
        )
        if not rows:
            raise NotFound(f"model {record.ref} was deleted meanwhile")
        path = self._stored_file(rows[0][0])
        if path is None:
            raise IntegrityError(
                f"model {record.ref}: the catalog names {rows[0][0][:200]!r} as its file, which is not in "
                f"{self.files}: refused (the catalog was changed by hand)"
            )
        try:
            return open(path, "rb")
        except FileNotFoundError:
            raise IntegrityError(f"model {record.ref}: its stored file is missing") from None

    def _set_alias(self, name: str, alias: str, version: int) -> None:
        try:
            with self._tx(immediate=True) as db:
                db.execute(
                    "INSERT INTO aliases (name, alias, version) VALUES (?, ?, ?) "
                    "ON CONFLICT (name, alias) DO UPDATE SET version = excluded.version",
                    (name, alias, version),
                )
        except sqlite3.IntegrityError:  # the foreign key: the version was deleted meanwhile
            raise NotFound(f"model {name}:{version} was deleted meanwhile") from None

    def _remove_alias(self, name: str, alias: str) -> bool:
        with self._tx(immediate=True) as db:
            return db.execute("DELETE FROM aliases WHERE name = ? AND alias = ?", (name, alias)).rowcount > 0

    def _update(self, name: str, version: int, tags: dict[str, str | None] | None, notes: str | None) -> None:
        with self._tx(immediate=True) as db:
            if tags is not None:
                (current,) = db.execute(
                    "SELECT tags FROM versions WHERE name = ? AND version = ?", (name, version)
                ).fetchone()
                merged = {**json.loads(current), **tags}
                merged = {k: v for k, v in merged.items() if v is not None}
                db.execute(
                    "UPDATE versions SET tags = ? WHERE name = ? AND version = ?",
                    (json.dumps(merged), name, version),
                )
            if notes is not None:
                db.execute(
                    "UPDATE versions SET notes = ? WHERE name = ? AND version = ?", (notes, name, version)
                )

    def _delete_version(self, name: str, version: int) -> bool:
        with self._tx(immediate=True) as db:
            row = db.execute(
                "SELECT file FROM versions WHERE name = ? AND version = ?", (name, version)
            ).fetchone()
            if row is None:
                return False
            _retire(db, name, version)
            db.execute("DELETE FROM versions WHERE name = ? AND version = ?", (name, version))
        path = self._stored_file(row[0])
        if path is not None:  # a file named outside the store is never removed
            path.unlink(missing_ok=True)
        return True

    def _stored_file(self, file: str) -> Path | None:
        """The path of a file the catalog names, or None where it is not a plain file name in
        ``files/`` (``..``, an absolute path, a link leading out): someone with write access to the
        store's folder must not make a download read, or a delete remove, anything else."""
        path = self.files / file
        if file in ("", ".", "..") or Path(file).name != file:
            return None
        try:
            if path.resolve().parent != self.files.resolve():
                return None
        except (OSError, RuntimeError):  # a loop of links
            return None
        return path

    # -- primitives for check() and collect_garbage() -------------------------------------------
    def _catalogue(self) -> list[tuple[str, int]]:
        rows = self._query("SELECT name, version FROM versions ORDER BY name, version")
        return [(r[0], r[1]) for r in rows]

    def _alias_targets(self) -> list[tuple[str, str, int]]:
        return [(r[0], r[1], r[2]) for r in self._query("SELECT name, alias, version FROM aliases")]

    def _drop_alias(self, name: str, alias: str, version: int) -> bool:
        with self._tx(immediate=True) as db:
            return (
                db.execute(
                    "DELETE FROM aliases WHERE name = ? AND alias = ? AND version = ? AND NOT EXISTS "
                    "(SELECT 1 FROM versions WHERE name = ? AND version = ?)",
                    (name, alias, version, name, version),
                ).rowcount
                > 0
            )

    def _counters(self) -> dict[str, int]:
        return {r[0]: r[1] for r in self._query("SELECT name, last FROM deleted")}

    def _advance_counter(self, name: str, version: int) -> None:
        with self._tx(immediate=True) as db:
            _retire(db, name, version)

    @contextmanager
    def _leftovers(self, grace: float, exact: bool) -> Iterator[list[Leftover]]:
        with self._no_save_running() if exact else contextlib.nullcontext(False) as quiet:
            cutoff = time.time() - grace

            def young(stat: os.stat_result) -> bool:
                return not quiet and stat.st_mtime > cutoff

            items = []
            for part in sorted(self.staging.glob("*.part")):
                if stat := _stat(part):
                    detail = f"staging file {part.name} ({stat.st_size} bytes) of a save that never finished"
                    items.append(Leftover("partial", part, detail, young=young(stat)))
            known = {row[0] for row in self._query("SELECT file FROM versions")}
            for path in sorted(self.files.glob("*.keras")):
                if path.name not in known and (stat := _stat(path)):
                    detail = f"file {path.name} ({stat.st_size} bytes) that no record names"
                    items.append(Leftover("orphan", path, detail, young=young(stat)))
            yield items

    def _remove_leftover(self, item: Leftover) -> bool:
        path: Path = item.key
        if item.kind == "orphan" and self._query("SELECT 1 FROM versions WHERE file = ?", (path.name,)):
            return False
        path.unlink(missing_ok=True)
        return True

    def stored_files(self) -> set[str]:
        """The names of the files in the store's folder (for checks and tests)."""
        return {p.name for p in self.files.iterdir()}

    def file_path(self, record: ModelRecord) -> Path:
        """Where a version's bytes lie (for checks and tests)."""
        rows = self._query(
            "SELECT file FROM versions WHERE name = ? AND version = ?", (record.name, record.version)
        )
        path = self._stored_file(rows[0][0])
        if path is None:
            raise IntegrityError(f"model {record.ref}: its catalog entry names a file outside {self.files}")
        return path


@contextmanager
def transaction(
    db: sqlite3.Connection, lock: threading.RLock, what: str, immediate: bool = True
) -> Iterator[sqlite3.Connection]:
    """One transaction on a connection this process's threads share (``BEGIN IMMEDIATE``: the write
    lock from the start, so a read-check-write inside it is atomic across processes); rolled back on
    any error; SQLite's own errors (a locked or unreadable database) are StoreUnavailable naming ``what``."""
    with lock:
        try:
            db.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.OperationalError as e:
            raise StoreUnavailable(f"{what}: {e}") from None


def _retire(db: sqlite3.Connection, name: str, version: int) -> None:
    """Remember that ``version`` of ``name`` was used: no later save gets that number or a lower one."""
    db.execute(
        "INSERT INTO deleted (name, last) VALUES (?, ?) "
        "ON CONFLICT (name) DO UPDATE SET last = MAX(last, excluded.last)",
        (name, version),
    )


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except FileNotFoundError:
        return None  # removed meanwhile


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
