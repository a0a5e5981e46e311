"""Photos of a MongoDB store: collection ``photos`` in the models' database, one document per photo with
its bytes (a photo stays under MongoDB's 16 MiB document: :data:`~.records.MAX_PHOTO_BYTES`).

One set holds given bytes once (a unique index on set and sha256): adding them again is one
``find_one_and_update`` that relabels the photo already there, so two processes adding the same photo keep
one.
"""

from __future__ import annotations

import builtins
from typing import Any

import pymongo
from bson.binary import Binary

from ..store.mongo import MongoModelStore
from .records import PhotoRecord
from .store import PhotoStore

PHOTOS = "photos"
_FIELDS = tuple(PhotoRecord.__dataclass_fields__)
_PROJECTION = {"_id": 0, **{name: 1 for name in _FIELDS}}


class MongoPhotoStore(PhotoStore):
    def __init__(self, store: MongoModelStore) -> None:
        self.store = store
        self.display = f"the photos in {store.display}"
        self.photos = store.db[PHOTOS]
        self._ready = False

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        with self.store._translated():
            if not self._ready:
                self.photos.create_index([("set", 1), ("sha256", 1)], unique=True, name="set_sha256")
                self.photos.create_index([("set", 1), ("created", 1), ("id", 1)], name="set_created")
                self._ready = True
            return fn(*args, **kwargs)

    def _keep(self, record: PhotoRecord, data: bytes) -> PhotoRecord:
        fields = record.to_json()
        kept = {k: fields[k] for k in ("label", "origin", "who", "created", "wrong_version", "predicted")}
        doc = self._call(
            self.photos.find_one_and_update,
            {"set": record.set, "sha256": record.sha256},
            {"$set": kept, "$setOnInsert": {**{k: v for k, v in fields.items() if k not in kept},
                                             "data": Binary(data)}},
            upsert=True,
            projection=_PROJECTION,
            return_document=pymongo.ReturnDocument.AFTER,
        )  # fmt: skip
        return PhotoRecord.from_json(doc)

    def _get(self, photo_id: str) -> PhotoRecord | None:
        doc = self._call(self.photos.find_one, {"id": photo_id}, _PROJECTION)
        return None if doc is None else PhotoRecord.from_json(doc)

    def _list(self, set: str | None, limit: int, offset: int) -> tuple[builtins.list[PhotoRecord], int]:
        query = {} if set is None else {"set": set}
        total = self._call(self.photos.count_documents, query)
        cursor = self._call(
            lambda: builtins.list(
                self.photos.find(query, _PROJECTION)
                .sort([("created", 1), ("id", 1)])
                .skip(offset)
                .limit(limit)
            )
        )
        return [PhotoRecord.from_json(doc) for doc in cursor], int(total)

    def _read(self, photo_id: str) -> bytes | None:
        doc = self._call(self.photos.find_one, {"id": photo_id}, {"data": 1})
        return None if doc is None else bytes(doc["data"])

    def _delete(self, photo_id: str) -> bool:
        return bool(self._call(self.photos.delete_one, {"id": photo_id}).deleted_count)

    def _counts(self) -> dict[str, dict[str, int]]:
        rows = self._call(
            lambda: builtins.list(
                self.photos.aggregate(
                    [{"$group": {"_id": {"set": "$set", "label": "$label"}, "n": {"$sum": 1}}}]
                )
            )
        )
        counts: dict[str, dict[str, int]] = {}
        for row in rows:
            counts.setdefault(row["_id"]["set"], {})[row["_id"]["label"]] = int(row["n"])
        return counts
