"""The MongoDB store: model files in GridFS, their records in a collection beside them.

Layout, in the database the URI names (``jupyter_cifar`` when it names none)::

    model_versions       one document per version: name, version, created, sha256, size, file_id, tags,
                         notes, test_accuracy, metadata; unique on (name, version) and on file_id
    model_aliases        {name, alias, version}; unique on (name, alias)
    model_counters       {_id: name, issued, last}: the highest version ever given out and the highest
                         ever deleted, so no number is given twice
    model_files.files    GridFS: one document per stored file ...
    model_files.chunks   ... and its bytes, in 1 MiB chunks

A save streams the file into GridFS (chunks first, the files document last), claims the next version
number from the name's counter in one atomic ``find_one_and_update`` (deletes only ever raise it), then
inserts the record under that number, so concurrent writers in any number of processes get distinct
versions and a deleted version's number is never given to another model, however saves and deletes
interleave. Only the record makes a version visible: a
killed save leaves a GridFS file (or chunks without a files document) that no record names, which
:meth:`~jupyter_cifar.store.base.ModelStore.check` and :meth:`MongoModelStore.collect_garbage` remove
once old enough to belong to no running save (MongoDB cannot tell a dead writer from a slow one: a
file's age is all there is). A delete remembers the number, removes the aliases, then the record, then
the bytes.

Writes use ``w="majority"`` and retryable writes. When a write fails in a way that leaves its outcome
unknown (a failover, a lost connection), the record is looked up by its ``file_id`` before the insert is
tried again; the unique index on ``file_id`` makes a doubled insert impossible, and a file is deleted
only when its record certainly was not written (otherwise garbage collection decides later).

Every driver error is translated in one place (:func:`.mongo_errors.translate`): an unreachable
server, failed authentication or an unresolvable ``mongodb+srv`` name is :class:`StoreUnavailable`,
raised within the store's ``timeout`` and naming the host(s), never the password. Tag filters and
updates use ``$getField`` / ``$setField`` (tag keys may hold dots), so the server must be MongoDB 5.0 or
later.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO, Any, TypeVar, cast

import gridfs
import pymongo
from bson import ObjectId
from bson.errors import InvalidDocument
from gridfs.errors import CorruptGridFile, NoFile
from pymongo.errors import (
    DuplicateKeyError,
    OperationFailure,
    PyMongoError,
)

from ..errors import BadParameter, IntegrityError, NotFound, StoreError
from .base import ModelStore
from .mongo_errors import UNAUTHORIZED, may_have_been_applied, short, transient, translate, unreachable
from .records import CHUNK, GARBAGE_AGE_SECONDS, CheckReport, Leftover, ModelRecord, Page, Query
from .uri import MongoUri

log = logging.getLogger(__name__)

VERSIONS = "model_versions"
ALIASES = "model_aliases"
COUNTERS = "model_counters"
BUCKET = "model_files"
CHUNK_BYTES = CHUNK  # GridFS chunk size (1 MiB, not the 255 KiB default): the block readers ask for
DEFAULT_DATABASE = "jupyter_cifar"
# One driver call may move up to 48 MB (a batch of chunks); a hung server is given this long.
SOCKET_TIMEOUT_S = 60.0

F = TypeVar("F", bound=Callable[..., Any])


def _operation(method: F) -> F:
    """A primitive that talks to MongoDB: sets the database up once, translates driver errors."""

    @functools.wraps(method)
    def wrapper(self: MongoModelStore, *args: Any, **kwargs: Any) -> Any:
        with self._translated():
            self._setup()
            return method(self, *args, **kwargs)

    return cast(F, wrapper)


class MongoModelStore(ModelStore):
    """Models in a MongoDB database; safe for any number of processes and machines."""

    def __init__(self, uri: str, *, timeout: float = 5.0) -> None:
        super().__init__()
        self.uri_parts = MongoUri.parse(uri)
        self.display = self.uri_parts.redacted
        self.hosts = self.uri_parts.hosts
        self.timeout = timeout
        options: dict[str, Any] = {
            "serverSelectionTimeoutMS": int(timeout * 1000),
            "connectTimeoutMS": int(timeout * 1000),  # also bounds the SRV lookup of mongodb+srv
            "socketTimeoutMS": int(max(SOCKET_TIMEOUT_S, timeout) * 1000),
            "appname": "jupyter_cifar",
            "w": "majority",
            "retryWrites": True,
        }
        # What the URI says wins over these defaults (pymongo would let keywords win).
        options = {k: v for k, v in options.items() if k.lower() not in self.uri_parts.options}
        try:
            # connect=False: nothing (not even the SRV lookup) happens until the first operation.
            # pymongo warns of options it does not know, quoting them: part of a password written
            # unescaped may be among them, so its warnings are passed on scrubbed.
            with warnings.catch_warnings(record=True) as said:
                warnings.simplefilter("always")
                self.client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
                    uri, tz_aware=True, connect=False, **options
                )
            for warning in said:
                log.warning("%s: %s", self.display, self.uri_parts.scrub(str(warning.message)))
            self.db = self.client.get_default_database(default=DEFAULT_DATABASE)
        except (PyMongoError, ValueError, TypeError) as e:  # a URI pymongo cannot use
            hint, cause = "", self.uri_parts.scrub(short(e))
            if self.uri_parts.unescaped and "escaped" not in cause:
                hint = (
                    " (the user name and password must be percent-escaped: '?', '/', '#', '@' and ':' "
                    "in them end the part they belong to; urllib.parse.quote_plus writes them so)"
                )
            raise BadParameter("--store", f"{self.display}: {cause}{hint}") from None
        self.bucket_name = BUCKET
        self.bucket = gridfs.GridFSBucket(self.db, BUCKET, chunk_size_bytes=CHUNK_BYTES)
        self.versions = self.db[VERSIONS]
        self.aliases = self.db[ALIASES]
        self.counters = self.db[COUNTERS]
        self._files = self.db[f"{BUCKET}.files"]
        self._chunks = self.db[f"{BUCKET}.chunks"]
        self._ready = False  # indexes made and garbage collected: once per store object, on first use
        self._setup_lock = threading.Lock()

    def __enter__(self) -> MongoModelStore:
        return self

    def close(self) -> None:
        self.client.close()

    # -- errors ----------------------------------------------------------------------------------
    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except PyMongoError as e:
            raise self._error(e) from None

    def _error(self, e: PyMongoError) -> StoreError:
        """The store's error for a driver error (one translation, in ``mongo_errors``)."""
        return translate(e, self.uri_parts)

    # -- set-up ----------------------------------------------------------------------------------
    def _setup(self) -> None:
        if self._ready:
            return
        with self._setup_lock:
            if self._ready:
                return
            try:
                self._create_indexes()
                ModelStore.collect_garbage(self, GARBAGE_AGE_SECONDS)  # its primitives need no set-up
            except OperationFailure as e:
                if e.code != UNAUTHORIZED:
                    raise
                # A read-only user can still list and load; whoever may write sets the database up.
                log.info("%s: read-only access, indexes and garbage left as they are", self.display)
            self._ready = True  # only once it all worked: after an outage, the next call tries again

    def _create_indexes(self) -> None:
        from pymongo import ASCENDING as UP
        from pymongo import DESCENDING as DOWN
        from pymongo import IndexModel

        self.versions.create_indexes(
            [
                IndexModel([("name", UP), ("version", UP)], unique=True, name="name_version"),
                IndexModel([("file_id", UP)], unique=True, name="file_id"),
                # the list's default order (-created) and the leaderboard's (-test_accuracy), exactly
                IndexModel([("created", DOWN), ("name", UP), ("version", DOWN)], name="created"),
                IndexModel(
                    [("has_accuracy", DOWN), ("test_accuracy", DOWN), ("name", UP), ("version", DOWN)],
                    name="test_accuracy",
                ),
            ]
        )
        self.aliases.create_indexes(
            [
                IndexModel([("name", UP), ("alias", UP)], unique=True, name="name_alias"),
                IndexModel([("name", UP), ("version", UP)], name="name_version"),
            ]
        )
        # The indexes the GridFS spec asks for (drivers create them lazily; here they always exist).
        self._files.create_index([("filename", UP), ("uploadDate", UP)])
        self._chunks.create_index([("files_id", UP), ("n", UP)], unique=True)

    # -- primitives ------------------------------------------------------------------------------
    @_operation
    def _insert_version(
        self, name: str, path: Path, sha256: str, size: int, fields: dict[str, Any]
    ) -> ModelRecord:
        file_id = self._upload(name, path, sha256)
        doc = {
            "name": name,
            "created": fields["created"],
            "sha256": sha256,
            "size": size,
            "file_id": file_id,
            "tags": fields["tags"],
            "notes": fields["notes"],
            "test_accuracy": fields["test_accuracy"],
            "has_accuracy": fields["test_accuracy"] is not None,  # sorts records without one last
            "metadata": fields["metadata"],
        }
        try:
            stored = self._claim_version(doc)
        except (InvalidDocument, OverflowError) as e:
            self._discard(file_id)
            raise BadParameter("metadata", f"cannot be stored in MongoDB: {e}") from None
        except BaseException as e:
            if not may_have_been_applied(e):
                self._discard(file_id)
            # else the record may exist after all: collect_garbage removes the file if it does not
            raise
        return self._record(stored, [])

    def _upload(self, name: str, path: Path, sha256: str) -> ObjectId:
        """Stream the file into GridFS; a transient failure is retried once with a fresh file."""
        for attempt in (1, 2):
            file_id = ObjectId()
            try:
                with open(path, "rb") as src:
                    self.bucket.upload_from_stream_with_id(
                        file_id, f"{name}.keras", src, metadata={"name": name, "sha256": sha256}
                    )
                return file_id
            except BaseException as e:
                if unreachable(e):
                    raise  # what it wrote, if anything, is garbage for later
                self._discard(file_id)  # no record names it yet: always safe to remove
                if attempt == 2 or not transient(e):
                    raise
                log.info("%s: upload interrupted (%s); trying again", self.display, short(e))
        raise AssertionError("unreachable")

    def _claim_version(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Insert the record under a version number claimed for it; returns the stored document.

        The number comes from one atomic step on the name's counter document (:meth:`_next_version`), so
        no two saves are ever given the same number, whatever deletes run meanwhile: a delete only ever
        raises the counter. A save that fails after its claim leaves a gap, as a delete does.
        """
        version = self._next_version(doc["name"])
        retried = False
        while True:
            attempt = {**doc, "version": version}
            try:
                self.versions.insert_one(attempt)
                return attempt
            except DuplicateKeyError as e:
                if "file_id" in ((e.details or {}).get("keyPattern") or {}):
                    landed = self.versions.find_one({"file_id": doc["file_id"]})
                    if landed is not None:  # an earlier attempt of ours was written after all
                        return landed
                # Only a record written without the counter (by a version of this package before it
                # kept one) can hold a claimed number: the claim above now counts it; claim again.
                version = self._next_version(doc["name"])
            except PyMongoError as e:
                if retried or not transient(e) or unreachable(e):
                    raise
                retried = True
                log.info("%s: saving %r interrupted (%s); checking", self.display, doc["name"], short(e))
                landed = self.versions.find_one({"file_id": doc["file_id"]})
                if landed is not None:
                    return landed
                # not written: the number is still ours, try the same insert again

    def _next_version(self, name: str) -> int:
        """Claim the next version number of ``name`` in one atomic step.

        The counter document ``{_id: name, issued, last}`` holds the highest number ever given out
        (``issued``) and the highest ever deleted (``last``). The claim is one ``find_one_and_update``
        that sets ``issued`` to one more than the greatest of the two and of the highest stored version,
        read just before: a store written before the counter kept ``issued`` starts from its records,
        and a stale read only ever lowers that floor, which the counter itself already covers.
        """
        by_version = [("version", pymongo.DESCENDING)]
        latest = self.versions.find_one({"name": name}, {"version": 1}, sort=by_version)
        floor = int(latest["version"]) if latest else 0
        highest: dict[str, Any] = {"$max": [{"$ifNull": ["$issued", 0]}, {"$ifNull": ["$last", 0]}, floor]}
        claimed = self.counters.find_one_and_update(
            {"_id": name},
            [{"$set": {"issued": {"$add": [highest, 1]}}}],
            upsert=True,
            return_document=pymongo.ReturnDocument.AFTER,
        )
        assert claimed is not None  # an upsert returning the document AFTER it always has one
        return int(claimed["issued"])

    def _discard(self, file_id: ObjectId) -> None:
        """Remove a stored file if possible; what cannot be removed now is garbage for later."""
        try:
            self.bucket.delete(file_id)  # the files document, then every chunk
        except NoFile:
            pass  # chunks without a files document were removed all the same
        except PyMongoError as e:
            log.info("%s: file %s left for garbage collection (%s)", self.display, file_id, short(e))

    def _record(self, doc: dict[str, Any], aliases: list[str]) -> ModelRecord:
        return ModelRecord.from_json({**doc, "aliases": sorted(aliases)})  # a document is the record's JSON

    def _records(self, docs: list[dict[str, Any]]) -> list[ModelRecord]:
        """Records with their aliases, joined in one query."""
        if not docs:
            return []
        keys = {(d["name"], d["version"]) for d in docs}
        aliases: dict[tuple[str, int], list[str]] = {}
        for a in self.aliases.find({"name": {"$in": sorted({k[0] for k in keys})}}):
            if (a["name"], a["version"]) in keys:
                aliases.setdefault((a["name"], a["version"]), []).append(a["alias"])
        return [self._record(d, aliases.get((d["name"], d["version"]), [])) for d in docs]

    @_operation
    def _get(self, name: str, version: int | None) -> ModelRecord | None:
        if version is None:
            doc = self.versions.find_one({"name": name}, sort=[("version", pymongo.DESCENDING)])
        else:
            doc = self.versions.find_one({"name": name, "version": version})
        records = self._records([doc] if doc else [])
        return records[0] if records else None

    @_operation
    def _version_of_alias(self, name: str, alias: str) -> int | None:
        doc = self.aliases.find_one({"name": name, "alias": alias})
        return int(doc["version"]) if doc else None

    @_operation
    def _list(self, query: Query) -> Page:
        where: dict[str, Any] = {}
        if query.name is not None:
            where["name"] = query.name
        if query.search:
            pattern = {"$regex": re.escape(query.search), "$options": "i"}
            where["$or"] = [{"name": pattern}, {"notes": pattern}]
        if query.tags:
            where["$and"] = [
                {"$expr": {"$eq": [{"$getField": {"field": key, "input": "$tags"}}, {"$literal": value}]}}
                for key, value in query.tags.items()
            ]
        direction = pymongo.DESCENDING if query.descending else pymongo.ASCENDING
        order = [(query.sort_field, direction), ("name", pymongo.ASCENDING), ("version", direction)]
        if query.sort_field == "test_accuracy":  # records without an accuracy go last either way
            order.insert(0, ("has_accuracy", pymongo.DESCENDING))
        spec: list[tuple[str, int]] = []
        for field_, way in order:  # each field once, where it first appears
            if all(field_ != f for f, _ in spec):
                spec.append((field_, way))
        docs = list(self.versions.find(where).sort(spec).skip(query.offset).limit(query.limit))
        total = self.versions.count_documents(where)
        return Page(self._records(docs), total, query.offset, query.limit)

    @_operation
    def _open_file(self, record: ModelRecord) -> IO[bytes]:
        doc = self.versions.find_one({"name": record.name, "version": record.version}, {"file_id": 1})
        if doc is None:
            raise NotFound(f"model {record.ref} was deleted meanwhile")
        try:
            stream = self.bucket.open_download_stream(doc["file_id"])
        except NoFile:
            raise IntegrityError(f"model {record.ref}: its stored file is missing") from None
        return cast(IO[bytes], _GridReader(self, stream, record))

    @_operation
    def _set_alias(self, name: str, alias: str, version: int) -> None:
        self.aliases.update_one({"name": name, "alias": alias}, {"$set": {"version": version}}, upsert=True)
        # No foreign key here: a delete that ran meanwhile (it removes the aliases, then the record)
        # may have missed this alias. Its version is gone for good (numbers are never reused).
        if not self.versions.count_documents({"name": name, "version": version}, limit=1):
            self.aliases.delete_one({"name": name, "alias": alias, "version": version})
            raise NotFound(f"model {name}:{version} was deleted meanwhile")

    @_operation
    def _remove_alias(self, name: str, alias: str) -> bool:
        return self.aliases.delete_one({"name": name, "alias": alias}).deleted_count > 0

    @_operation
    def _update(self, name: str, version: int, tags: dict[str, str | None] | None, notes: str | None) -> None:
        changes: dict[str, Any] = {}
        if tags:
            merged: Any = {"$ifNull": ["$tags", {"$literal": {}}]}
            for key, value in tags.items():  # $setField: tag keys may hold dots
                if value is None:
                    merged = {"$unsetField": {"field": key, "input": merged}}
                else:
                    merged = {"$setField": {"field": key, "input": merged, "value": {"$literal": value}}}
            changes["tags"] = merged
        if notes is not None:
            changes["notes"] = {"$literal": notes}
        if changes:
            self.versions.update_one({"name": name, "version": version}, [{"$set": changes}])

    @_operation
    def _delete_version(self, name: str, version: int) -> bool:
        doc = self.versions.find_one({"name": name, "version": version}, {"file_id": 1})
        if doc is None:
            return False
        # Remember the number first, so that it is never given to another model, even if this delete
        # is cut short; then the aliases, so that none can point at a version that is gone.
        self.counters.update_one({"_id": name}, {"$max": {"last": version}}, upsert=True)
        self.aliases.delete_many({"name": name, "version": version})
        if self.versions.delete_one({"_id": doc["_id"]}).deleted_count == 0:
            return False  # another process deleted it meanwhile (and deletes the file)
        self._discard(doc["file_id"])
        return True

    @_operation
    def collect_garbage(self, max_age: float = GARBAGE_AGE_SECONDS) -> int:
        return super().collect_garbage(max_age)

    @_operation
    def check(self, repair: bool = False, grace: float = GARBAGE_AGE_SECONDS) -> CheckReport:
        return super().check(repair, grace)

    # -- primitives for check() and collect_garbage(): called inside one of the two above ----------
    def _catalogue(self) -> list[tuple[str, int]]:
        docs = self.versions.find({}, {"name": 1, "version": 1, "_id": 0}).sort([("name", 1), ("version", 1)])
        return [(d["name"], int(d["version"])) for d in docs]

    def _alias_targets(self) -> list[tuple[str, str, int]]:
        docs = self.aliases.find({}, {"name": 1, "alias": 1, "version": 1, "_id": 0})
        return [(d["name"], d["alias"], int(d["version"])) for d in docs]

    def _drop_alias(self, name: str, alias: str, version: int) -> bool:
        # A version that is gone never comes back (its number is retired), so this check stays true.
        if self.versions.count_documents({"name": name, "version": version}, limit=1):
            return False
        return self.aliases.delete_one({"name": name, "alias": alias, "version": version}).deleted_count > 0

    def _counters(self) -> dict[str, int]:
        docs = self.counters.find({}, {"issued": 1, "last": 1})
        return {d["_id"]: max(int(d.get("issued", 0)), int(d.get("last", 0))) for d in docs}

    def _advance_counter(self, name: str, version: int) -> None:
        self.counters.update_one({"_id": name}, {"$max": {"last": version}}, upsert=True)

    @contextmanager
    def _leftovers(self, grace: float, exact: bool) -> Iterator[list[Leftover]]:
        """GridFS files no record names, and chunks no files document owns.

        MongoDB cannot tell a dead writer from a slow one, ``exact`` or not: age decides. The files are
        listed before the records are read, so a save that wrote its record meanwhile is
        not taken for a leftover. GridFS writes chunks first and the files document last (its
        ``uploadDate`` is when the upload ended); every chunk's ``_id`` is made when it is written, so a
        save in progress has a young chunk.
        """
        cutoff = datetime.now(timezone.utc) - timedelta(seconds=grace)
        files = list(self._files.find({}, {"_id": 1, "uploadDate": 1, "length": 1, "filename": 1}))
        named = {d["file_id"] for d in self.versions.find({}, {"file_id": 1, "_id": 0})}
        items = []
        for f in files:
            if f["_id"] not in named:
                detail = (
                    f"GridFS file {f['_id']} ({f.get('filename')}, {f.get('length')} bytes, uploaded "
                    f"{f['uploadDate']:%Y-%m-%d %H:%M:%S} UTC) that no record names"
                )
                items.append(Leftover("orphan", f["_id"], detail, young=f["uploadDate"] > cutoff))
        owners = [d["_id"] for d in self._chunks.aggregate(_DISTINCT_OWNERS)]
        with_files = {d["_id"] for d in self._files.find({"_id": {"$in": owners}}, {"_id": 1})}
        for owner in owners:
            if owner in with_files or owner in named:
                continue  # a whole file, or one a record names (a missing files document is its problem)
            newest = self._chunks.find_one({"files_id": owner}, {"_id": 1}, sort=[("n", pymongo.DESCENDING)])
            young = _younger(owner, cutoff) or (newest is not None and _younger(newest["_id"], cutoff))
            count = self._chunks.count_documents({"files_id": owner})
            detail = f"{count} GridFS chunk(s) of file {owner} without a files document (an upload cut short)"
            items.append(Leftover("partial", owner, detail, young=young))
        yield items

    def _remove_leftover(self, item: Leftover) -> bool:
        if self.versions.count_documents({"file_id": item.key}, limit=1):
            return False
        if item.kind == "orphan":
            with contextlib.suppress(NoFile):  # the files document, then every chunk
                self.bucket.delete(item.key)
        elif self._files.count_documents({"_id": item.key}, limit=1):
            return False  # the upload finished meanwhile
        else:
            self._chunks.delete_many({"files_id": item.key})
        return True

    # -- for checks and tests ----------------------------------------------------------------------
    @_operation
    def file_id(self, record: ModelRecord) -> ObjectId:
        """The GridFS file id that holds a version's bytes."""
        doc = self.versions.find_one({"name": record.name, "version": record.version}, {"file_id": 1})
        if doc is None:
            raise NotFound(f"model {record.ref} not found")
        return cast(ObjectId, doc["file_id"])

    def corrupt_for_tests(self, record: ModelRecord) -> None:
        """Flip one byte in the middle chunk of a version's file, behind the store's back."""
        file_id = self.file_id(record)
        count = self._chunks.count_documents({"files_id": file_id})
        chunk = self._chunks.find_one({"files_id": file_id, "n": count // 2})
        assert chunk is not None
        data = bytearray(chunk["data"])
        data[len(data) // 2] ^= 0xFF
        self._chunks.update_one({"_id": chunk["_id"]}, {"$set": {"data": bytes(data)}})


# Distinct chunk owners through the (files_id, n) index, as a cursor (no 16 MB result limit).
_DISTINCT_OWNERS: list[dict[str, Any]] = [{"$sort": {"files_id": 1}}, {"$group": {"_id": "$files_id"}}]


class _GridReader:
    """A GridFS download stream whose errors are the store's: a damaged file names its version."""

    def __init__(self, store: MongoModelStore, stream: gridfs.GridOut, record: ModelRecord) -> None:
        self._store = store
        self._stream = stream
        self._record = record

    def read(self, n: int = -1) -> bytes:
        try:
            if n >= self._stream.chunk_size:
                # a whole chunk as the server sent it, not copied through a read buffer (a short
                # read is allowed; readers of CHUNK bytes get exactly one 1 MiB chunk)
                return self._stream.readchunk()
            return self._stream.read(n)
        except CorruptGridFile as e:
            raise IntegrityError(f"model {self._record.ref}: the stored file is damaged ({e})") from None
        except PyMongoError as e:
            raise self._store._error(e) from None

    def close(self) -> None:
        self._stream.close()


def _younger(oid: Any, cutoff: datetime) -> bool:
    """Whether an ObjectId was made after ``cutoff`` (ObjectIds hold their creation second)."""
    return isinstance(oid, ObjectId) and oid.generation_time > cutoff
