"""Bringing in the seed project's models: an ``.h5`` file's bytes inside a MongoDB document.

The seed saved its model with ``model.save("x.h5")``, read the file back and ``insert_one``-ed the bytes
into a binary field, with no name or version. This finds such documents (any binary field that starts
with the HDF5 signature, in one collection or all of them) and stores each as a version of one model,
noting where it came from. The ``.h5`` is loaded in safe mode on the way in, like every import.

The seed trained the TensorFlow tutorial's way: pixels divided by 255 *before* ``fit``, so its network
expects 0..1 while everything here (the app, ``classify``, ``evaluate``, the presets) hands a model raw
0..255 pixels. A model without a ``Rescaling`` layer therefore comes in with ``Rescaling(1/255)`` put in
front of it (noted in the version's metadata; ``rescale=False`` / ``--no-rescale`` keeps it as it was).
Without that it would be scored on inputs 255 times too large and give meaningless answers.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import JupyterCifarError, ModelFileError, StoreUnavailable
from .base import ModelStore
from .records import ModelRecord

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


@dataclass
class SeedImport:
    imported: list[ModelRecord] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)  # {"document", "error"}


def find_h5_fields(doc: Any, prefix: str = "") -> Iterator[tuple[str, bytes]]:
    """(dotted field path, bytes) of every binary value holding an HDF5 file, nested ones included."""
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from find_h5_fields(value, f"{prefix}{key}.")
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            yield from find_h5_fields(value, f"{prefix}{i}.")
    elif isinstance(doc, bytes) and doc.startswith(HDF5_SIGNATURE):
        yield prefix.rstrip("."), bytes(doc)


def import_seed_documents(
    source_uri: str,
    store: ModelStore,
    name: str = "seed",
    *,
    collection: str | None = None,
    rescale: bool = True,
    progress: Callable[[str], None] | None = None,
) -> SeedImport:
    """Store every seed-style model found in the database of ``source_uri`` as a version of ``name``."""
    import pymongo
    from pymongo.errors import ConnectionFailure, OperationFailure

    from .records import check_name

    check_name(name)
    say = progress or (lambda message: None)
    report = SeedImport()
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        source_uri, serverSelectionTimeoutMS=5000
    )
    try:
        db = client.get_default_database(default="test")
        names = [collection] if collection else sorted(db.list_collection_names())
        for coll in names:
            if coll.startswith("system."):
                continue
            for doc in db[coll].find({}, sort=[("_id", 1)]):
                for path, data in find_h5_fields(doc):
                    where = f"{db.name}.{coll} _id={doc.get('_id')} field {path}"
                    say(f"found an .h5 model in {where} ({len(data)} bytes)")
                    try:
                        report.imported.append(_import_one(store, name, data, where, rescale))
                    except (ModelFileError, JupyterCifarError) as e:
                        report.skipped.append({"document": where, "error": str(e)})
    except (ConnectionFailure, OperationFailure) as e:
        raise StoreUnavailable(f"the seed's MongoDB cannot be read: {str(e).split(',')[0]}") from None
    finally:
        client.close()
    return report


def _import_one(store: ModelStore, name: str, data: bytes, where: str, rescale: bool) -> ModelRecord:
    from ..engine.modelfiles import load_model
    from ..engine.scaling import scales_its_input, with_input_scaling

    with tempfile.TemporaryDirectory(prefix="jupyter-cifar-seed-") as tmp:
        path = Path(tmp) / "seed.h5"
        path.write_bytes(data)
        model = load_model(path)  # checked, then safe mode: the bytes are data
    metadata: dict[str, Any] = {"imported_from": f"mongodb document {where}", "imported_format": "h5"}
    if rescale and not scales_its_input(model):
        model = with_input_scaling(model, 1 / 255)
        metadata["input_scaling"] = "Rescaling(1/255) added in front: the seed divided pixels by 255 itself"
    return store.save(
        model,
        name,
        metadata=metadata,
        tags={"source": "seed"},
        notes=f"Imported from the seed project's MongoDB document ({where}).",
    )
