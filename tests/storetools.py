"""Helpers for the store tests: small model files, and looking at what a backend really holds."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from jupyter_cifar.errors import NotFound
from jupyter_cifar.store import ModelRecord, ModelStore, open_store


def tiny_model(units: int = 10, name: str = "tiny"):
    """A small valid CIFAR-shaped Keras model (saves in milliseconds)."""
    import keras

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.GlobalMaxPooling2D()(inputs)  # a layer the app builds (modelfiles.APP_LAYERS)
    outputs = keras.layers.Dense(units, activation="softmax")(x)
    return keras.Model(inputs, outputs, name=name)


def big_model(megabytes: int = 18):
    """A model whose file is over MongoDB's 16 MB document limit."""
    import keras

    units = megabytes * (1 << 20) // (4 * 3 * 32 * 32)
    return keras.Sequential(
        [keras.Input((32, 32, 3)), keras.layers.Flatten(), keras.layers.Dense(units)], name="big"
    )


def tiny_model_file(path: Path, units: int = 10) -> Path:
    tiny_model(units).save(path)
    return path


#: A Jupyter server's URL -> the folder of the embedded store behind it (set by the remote fixtures).
BACKING: dict[str, str] = {}


def backing_store(store: ModelStore) -> ModelStore:
    """For a RemoteModelStore, the store its server keeps; any other store is its own backing."""
    from jupyter_cifar.store.remote import RemoteModelStore

    if isinstance(store, RemoteModelStore):
        return open_store(BACKING[store.base])
    return store


def stored_items(store: ModelStore) -> int:
    """How many stored files (and, for GridFS, chunks' owners) the backend holds, whoever names them."""
    from jupyter_cifar.store.local import LocalModelStore

    store = backing_store(store)
    if isinstance(store, LocalModelStore):
        return len(store.stored_files()) + len(list(store.staging.iterdir()))
    db = store.db  # type: ignore[attr-defined]
    files = db[f"{store.bucket_name}.files"].count_documents({})  # type: ignore[attr-defined]
    owners = len(db[f"{store.bucket_name}.chunks"].distinct("files_id"))  # type: ignore[attr-defined]
    return max(files, owners)


def corrupt(store: ModelStore, record: ModelRecord) -> None:
    """Change one byte of a stored file behind the store's back (a disk or a person did it)."""
    from jupyter_cifar.store.local import LocalModelStore

    store = backing_store(store)
    if isinstance(store, LocalModelStore):
        path = store.file_path(record)
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
        return
    store.corrupt_for_tests(record)  # type: ignore[attr-defined]


def save_many(uri: str, name: str, model_file: str, count: int) -> list[int]:
    """Runs in a child process: ``count`` saves under one name; the versions it got."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with open_store(uri) as store:
        return [store.save(model_file, name).version for _ in range(count)]


def delete_latest_until(uri: str, name: str, stop: Any) -> int:
    """Runs in a child process: deletes the latest version of ``name`` until ``stop`` (an Event) is set;
    how many it deleted."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    deleted = 0
    with open_store(uri) as store:
        while not stop.is_set():
            try:
                store.delete(name)
                deleted += 1
            except NotFound:
                time.sleep(0.005)  # nothing saved yet, or another deleter was first
    return deleted


def save_forever(uri: str, name: str, model_file: str) -> None:
    """Runs in a child process until it is killed: saves, and deletes every third version."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with open_store(uri) as store:
        i = 0
        while True:
            record = store.save(model_file, name)
            i += 1
            if i % 3 == 0:
                store.delete(record.ref)


# -- damage, done by hand behind the store's back (a disk, a person, a killed process) ----------------


def lose_file(store: ModelStore, record: ModelRecord) -> None:
    """Remove a version's stored bytes, leaving its record."""
    from jupyter_cifar.store.local import LocalModelStore

    if isinstance(store, LocalModelStore):
        store.file_path(record).unlink()
        return
    store.bucket.delete(store.file_id(record))  # type: ignore[attr-defined]


def add_orphan(store: ModelStore, source: Path) -> None:
    """Stored bytes that no record names: what a save killed just before its record leaves."""
    import shutil
    import uuid

    from jupyter_cifar.store.local import LocalModelStore

    if isinstance(store, LocalModelStore):
        shutil.copyfile(source, store.files / f"{uuid.uuid4().hex}.keras")
        return
    with open(source, "rb") as f:
        store.bucket.upload_from_stream("killed.keras", f)  # type: ignore[attr-defined]


def add_partial(store: ModelStore) -> None:
    """What a save killed while writing its bytes leaves: a staging file, or chunks without a files doc."""
    from bson import ObjectId

    from jupyter_cifar.store.local import LocalModelStore

    if isinstance(store, LocalModelStore):
        (store.staging / "0123456789abcdef.part").write_bytes(b"PK\x03\x04 half a file")
        return
    chunks = store.db[f"{store.bucket_name}.chunks"]  # type: ignore[attr-defined]
    owner = ObjectId()
    chunks.insert_many([{"files_id": owner, "n": n, "data": b"x" * 100} for n in range(2)])


def dangle_alias(store: ModelStore, name: str, alias: str, version: int) -> None:
    """An alias naming a version that does not exist (the embedded store's own foreign key forbids it:
    the sqlite3 command line, like Python's module, does not enforce foreign keys unless asked)."""
    import sqlite3

    from jupyter_cifar.store.local import LocalModelStore

    if isinstance(store, LocalModelStore):
        with sqlite3.connect(store.root / "catalog.sqlite") as db:
            db.execute("INSERT INTO aliases (name, alias, version) VALUES (?, ?, ?)", (name, alias, version))
        db.close()
        return
    store.aliases.insert_one({"name": name, "alias": alias, "version": version})  # type: ignore[attr-defined]


@contextmanager
def throwaway_store(backend: str, folder: Path, database: str) -> Iterator[str]:
    """A fresh store's URI for the campaigns in tools/: a folder under ``folder`` (backend "local") or a
    database on a throwaway mongod whose files live there (backend "mongo"), stopped afterwards."""
    if backend == "local":
        yield str(folder / "models")
        return
    from mongod import Mongod

    server = Mongod(folder / "mongod").start()
    try:
        yield f"{server.uri}/{database}"
    finally:
        server.stop()
