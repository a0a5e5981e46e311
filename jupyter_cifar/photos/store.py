"""Photo sets beside the models: one contract (:class:`PhotoStore`), a backend per kind of store.

The rules live here, written once on a few primitives each backend makes atomic: keep a photo (one photo
per set and content: adding the same bytes again relabels it, the way a second correction overrides the
first), read records and bytes, delete, count per set and label. Every photo is checked
(:func:`~.records.new_record`) before a backend sees it, and a batch is checked whole before anything is
kept, so a bad photo among good ones loses nothing and keeps nothing half-written.
"""

from __future__ import annotations

import builtins
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..engine.data import CLASS_NAMES
from ..errors import BadParameter, NotFound
from ..store.base import ModelStore
from ..store.records import MAX_INT
from .records import DEFAULT_SET, MAX_LIST, PhotoRecord, check_photo_id, check_set, new_record


class PhotoStore(ABC):
    """Named sets of labelled photos, in a model store's home."""

    display: str = "photos"

    # -- what a backend provides --------------------------------------------------------------------
    @abstractmethod
    def _keep(self, record: PhotoRecord, data: bytes) -> PhotoRecord:
        """Keep ``record`` with ``data``; if its set already holds those bytes, give that photo the new
        record's label, origin, version and time instead, and return it (its id stays)."""

    @abstractmethod
    def _get(self, photo_id: str) -> PhotoRecord | None: ...

    @abstractmethod
    def _list(self, set: str | None, limit: int, offset: int) -> tuple[builtins.list[PhotoRecord], int]:
        """A page of records, oldest first, and how many there are in all."""

    @abstractmethod
    def _read(self, photo_id: str) -> bytes | None: ...

    @abstractmethod
    def _delete(self, photo_id: str) -> bool: ...

    @abstractmethod
    def _counts(self) -> dict[str, dict[str, int]]:
        """{set: {label: number of photos}} for every set that has photos."""

    def close(self) -> None:  # noqa: B027 (optional: only backends holding connections need it)
        pass

    def __enter__(self) -> PhotoStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the contract --------------------------------------------------------------------------------
    def add(
        self,
        data: bytes,
        label: str,
        *,
        set: str = DEFAULT_SET,
        filename: str | None = None,
        origin: str = "import",
        wrong_version: str | None = None,
        predicted: str | None = None,
        class_names: Sequence[str] = CLASS_NAMES,
    ) -> PhotoRecord:
        """Keep one photo in ``set`` with its label (checked: a known label, an image this package reads,
        within :data:`~.records.MAX_PHOTO_BYTES`)."""
        record = new_record(
            data, label, set=set, filename=filename, origin=origin, wrong_version=wrong_version,
            predicted=predicted, class_names=class_names,
        )  # fmt: skip
        return self._keep(record, bytes(data))

    def add_many(
        self,
        items: Iterable[tuple[bytes, str, str]],
        *,
        set: str = DEFAULT_SET,
        origin: str = "import",
        class_names: Sequence[str] = CLASS_NAMES,
    ) -> builtins.list[PhotoRecord]:
        """Keep ``(data, label, filename)`` photos, all or none: every one is checked before the first is
        kept, and the first bad one is raised, naming its file."""
        checked = [
            (new_record(data, label, set=set, filename=name, origin=origin, class_names=class_names), data)
            for data, label, name in items
        ]
        return [self._keep(record, bytes(data)) for record, data in checked]

    def get(self, photo_id: str) -> PhotoRecord:
        record = self._get(check_photo_id(photo_id))
        if record is None:
            raise NotFound(f"no photo {photo_id} in {self.display}")
        return record

    def read(self, photo_id: str) -> bytes:
        """The photo's bytes, as they were added."""
        data = self._read(check_photo_id(photo_id))
        if data is None:
            raise NotFound(f"no photo {photo_id} in {self.display}")
        return data

    def list(
        self, set: str | None = DEFAULT_SET, *, limit: int = MAX_LIST, offset: int = 0
    ) -> tuple[builtins.list[PhotoRecord], int]:
        """Photos of ``set`` (every set's with None), oldest first: a page and the total."""
        if set is not None:
            check_set(set)
        if not 1 <= limit <= MAX_LIST:
            raise BadParameter("--limit", f"must be 1 to {MAX_LIST:,} (got {limit})")
        if not 0 <= offset <= MAX_INT:  # beyond, SQLite's and BSON's integers overflow
            raise BadParameter("--offset", f"must be from 0 to {MAX_INT} (got {str(offset)[:40]})")
        return self._list(set, limit, offset)

    def all(self, set: str = DEFAULT_SET) -> builtins.list[PhotoRecord]:
        """Every photo of ``set``, oldest first."""
        found: builtins.list[PhotoRecord] = []
        while True:
            page, total = self.list(set, offset=len(found))
            found += page
            if not page or len(found) >= total:
                return found

    def sets(self) -> builtins.list[dict[str, Any]]:
        """Each set with its number of photos and its counts per label: [{"name", "count", "counts"}]."""
        return [
            {"name": name, "count": sum(counts.values()), "counts": dict(sorted(counts.items()))}
            for name, counts in sorted(self._counts().items())
        ]

    def counts(self, set: str = DEFAULT_SET) -> dict[str, int]:
        """{label: number of photos} in ``set`` ({} for a set with none)."""
        return dict(sorted(self._counts().get(check_set(set), {}).items()))

    def remove(self, photo_ids: Iterable[str], *, set: str | None = None) -> builtins.list[PhotoRecord]:
        """Remove photos by id, all or none: an unknown id (or one of another set, when ``set`` is given)
        is NotFound, naming it, before anything is removed."""
        records = [self.get(i) for i in dict.fromkeys(photo_ids)]
        if set is not None:
            check_set(set)
            for record in records:
                if record.set != set:
                    raise NotFound(f"photo {record.id} is in the set {record.set!r}, not {set!r}")
        return [r for r in records if self._delete(r.id)]

    def export(self, directory: str | os.PathLike[str], set: str = DEFAULT_SET) -> int:
        """Write ``set`` as an image folder (``DIR/<label>/<id>.<ext>``, each file's own bytes), the
        layout ``--photos DIR`` and ``photos add --from-folders`` read; return how many were written."""
        root = Path(directory)
        records = self.all(set)
        if not records:
            raise NotFound(f"the set {set!r} has no photos in {self.display}")
        for record in records:
            folder = root / record.label
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / f"{record.id}.{record.extension}"
            partial = target.with_name(target.name + ".partial")
            partial.write_bytes(self.read(record.id))
            os.replace(partial, target)
        return len(records)


def open_photo_store(store: ModelStore) -> PhotoStore:
    """The photos kept beside a model store's models: in its folder, its MongoDB database, or by the
    Jupyter server it is."""
    from ..store.local import LocalModelStore
    from ..store.mongo import MongoModelStore
    from ..store.remote import RemoteModelStore

    if isinstance(store, LocalModelStore):
        from .local import LocalPhotoStore

        return LocalPhotoStore(store.root)
    if isinstance(store, MongoModelStore):
        from .mongo import MongoPhotoStore

        return MongoPhotoStore(store)
    if isinstance(store, RemoteModelStore):
        from .remote import RemotePhotoStore

        return RemotePhotoStore(store)
    raise BadParameter("--store", f"{store.display}: photos are kept in an embedded or a MongoDB store")
