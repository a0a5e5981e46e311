"""Jobs of a MongoDB store: collections ``jobs`` and ``job_events``, checkpoints in GridFS
``job_checkpoints``, in the models' database (so every worker configured with that database sees them).

A change is one ``update_one`` whose filter holds what the caller expects of the record (a
compare-and-set); events are numbered by one ``find_one_and_update`` that advances the record's count
for its owner, then inserted under those numbers (unique on job and number).
"""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import gridfs
import pymongo
from gridfs.errors import NoFile

from ..store.mongo import MongoModelStore
from .records import JobRecord
from .store import Expect, JobStore

JOBS, EVENTS, CHECKPOINTS = "jobs", "job_events", "job_checkpoints"


class MongoJobStore(JobStore):
    def __init__(self, store: MongoModelStore) -> None:
        self.store = store
        self.display = f"jobs in {store.display}"
        self.jobs = store.db[JOBS]
        self.events_collection = store.db[EVENTS]
        self.bucket = gridfs.GridFSBucket(store.db, CHECKPOINTS)
        self._ready = False

    def _setup(self) -> None:
        if not self._ready:
            with self.store._translated():
                self.jobs.create_index([("state", 1), ("created", -1)], name="state_created")
                self.events_collection.create_index([("job", 1), ("seq", 1)], unique=True, name="job_seq")
            self._ready = True

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        self._setup()
        with self.store._translated():
            return fn(*args, **kwargs)

    def _insert(self, record: JobRecord) -> None:
        self._call(self.jobs.insert_one, {"_id": record.id, **record.to_doc()})

    def _get(self, job_id: str) -> JobRecord | None:
        doc = self._call(self.jobs.find_one, {"_id": job_id})
        return JobRecord.from_doc(doc) if doc else None

    def _list(self, states: Sequence[str], limit: int, offset: int) -> tuple[builtins.list[JobRecord], int]:
        where = {"state": {"$in": list(states)}} if states else {}

        def query() -> tuple[builtins.list[JobRecord], int]:
            cursor = self.jobs.find(where).sort([("created", -1), ("_id", 1)]).skip(offset).limit(limit)
            return [JobRecord.from_doc(d) for d in cursor], self.jobs.count_documents(where)

        result: tuple[builtins.list[JobRecord], int] = self._call(query)
        return result

    def _update(self, job_id: str, expect: Expect, changes: dict[str, Any]) -> bool:
        where = {"_id": job_id, **_filter(expect)}
        result = self._call(self.jobs.update_one, where, {"$set": changes})
        return bool(result.matched_count)

    def _append(self, job_id: str, owner: str, events: Sequence[dict[str, Any]]) -> int | None:
        doc = self._call(
            self.jobs.find_one_and_update,
            {"_id": job_id, "owner": owner, "state": {"$in": ["running", "stopping"]}},
            {"$inc": {"events": len(events)}},
            return_document=pymongo.ReturnDocument.AFTER,
        )
        if doc is None:
            return None
        last = int(doc["events"])
        first = last - len(events) + 1
        self._call(
            self.events_collection.insert_many,
            [{"job": job_id, "seq": first + i, "event": event} for i, event in enumerate(events)],
        )
        return last

    def _events(self, job_id: str, after: int, limit: int) -> builtins.list[tuple[int, dict[str, Any]]]:
        def query() -> builtins.list[tuple[int, dict[str, Any]]]:
            cursor = self.events_collection.find({"job": job_id, "seq": {"$gt": after}}).sort("seq", 1)
            return [(int(d["seq"]), d["event"]) for d in cursor.limit(limit)]

        found: builtins.list[tuple[int, dict[str, Any]]] = self._call(query)
        return found

    def _delete(self, job_id: str) -> bool:
        gone = self._call(self.jobs.delete_one, {"_id": job_id}).deleted_count > 0
        self._call(self.events_collection.delete_many, {"job": job_id})
        self._drop_checkpoints(job_id)
        return bool(gone)

    def _drop_checkpoints(self, job_id: str, keep: Any = None) -> None:
        for old in self._call(lambda: list(self.bucket.find({"filename": job_id}))):
            if old._id != keep:
                with contextlib.suppress(NoFile):  # another process removed it meanwhile
                    self._call(self.bucket.delete, old._id)

    def _put_checkpoint(self, job_id: str, path: Path, epochs: int) -> None:
        with open(path, "rb") as src:
            new_id = self._call(self.bucket.upload_from_stream, job_id, src, metadata={"epochs": epochs})
        self._drop_checkpoints(job_id, keep=new_id)  # the new one is whole before the old one goes

    def _open_checkpoint(self, job_id: str) -> tuple[IO[bytes], int] | None:
        def newest() -> tuple[IO[bytes], int] | None:
            try:
                stream = self.bucket.open_download_stream_by_name(job_id)  # the latest revision
            except NoFile:
                return None
            return stream, int((stream.metadata or {}).get("epochs", 0))

        found: tuple[IO[bytes], int] | None = self._call(newest)
        return found


def _filter(expect: Expect) -> dict[str, Any]:
    return {k: {"$in": list(v)} if isinstance(v, tuple) else v for k, v in expect.items()}
