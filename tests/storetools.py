"""Helpers for the store tests: small model files, and looking at what a backend really holds."""

from __future__ import annotations

import os
from pathlib import Path

from jupyter_cifar.store import ModelRecord, ModelStore, open_store


def tiny_model(units: int = 10, name: str = "tiny"):
    """A small valid CIFAR-shaped Keras model (saves in milliseconds)."""
    import keras

    inputs = keras.Input((32, 32, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
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
