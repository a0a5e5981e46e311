"""The model store contract: immutable, versioned model files with aliases, tags, notes and metadata.

A backend implements a handful of primitives (``_insert_version``, ``_get``, ``_list``, ``_open_file``,
...); everything a user calls (save a Keras model or a file, load with a cache, resolve ``name:3`` or
``name@alias``, export, verify) is written once here, so every backend behaves the same and one contract
test suite holds them all to it.

Guarantees every backend keeps:

- saving under an existing name makes the next version, unique per name even with concurrent writers;
- a version becomes visible only once its file is whole (a killed save leaves nothing visible, and what it
  half-wrote is collected later by :meth:`ModelStore.collect_garbage`, which runs on open);
- every file carries its sha256, checked on every read: a corrupted file is an :class:`IntegrityError`
  naming the version, never a wrong model;
- deleting removes the file bytes, not just the record;
- :meth:`ModelStore.check` finds where the catalogue and the stored bytes disagree (a killed save or
  delete, a damaged disk, a person editing the database) and repairs what can be repaired safely.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import shutil
import tempfile
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ..errors import BadParameter, Conflict, NotFound
from . import fsck
from .integrity import VerifyingReader, file_digest
from .records import (
    CHUNK,
    GARBAGE_AGE_SECONDS,
    CheckReport,
    Leftover,
    ModelRecord,
    Page,
    Query,
    Ref,
    check_alias,
    check_metadata,
    check_name,
    check_notes,
    check_tags,
    now_iso,
    who,
)

if TYPE_CHECKING:
    import keras

    from ..engine.export import ExportCheck


class ModelStore(ABC):
    """Versioned model files and their records. Build one with :func:`jupyter_cifar.store.open_store`."""

    #: How the store presents itself in messages: never a password.
    display: str = ""

    def __init__(self) -> None:
        self._models: OrderedDict[str, keras.Model] = OrderedDict()
        self._models_lock = threading.Lock()
        self.model_cache_size = 4

    # -- primitives a backend implements ---------------------------------------------------------
    @abstractmethod
    def _insert_version(
        self, name: str, path: Path, sha256: str, size: int, fields: dict[str, Any]
    ) -> ModelRecord:
        """Store the file at ``path`` as the next version of ``name``; visible only once whole."""

    @abstractmethod
    def _get(self, name: str, version: int | None) -> ModelRecord | None:
        """The version, or the latest one when ``version`` is None; None if there is none."""

    @abstractmethod
    def _version_of_alias(self, name: str, alias: str) -> int | None: ...

    @abstractmethod
    def _list(self, query: Query) -> Page: ...

    @abstractmethod
    def _open_file(self, record: ModelRecord) -> IO[bytes]:
        """A binary stream of the version's stored bytes (not yet verified)."""

    @abstractmethod
    def _set_alias(self, name: str, alias: str, version: int) -> None:
        """Point ``alias`` at ``version``, moving it from any other version of ``name``; NotFound
        (and no alias) if that version is gone (deleted meanwhile)."""

    @abstractmethod
    def _remove_alias(self, name: str, alias: str) -> bool: ...

    @abstractmethod
    def _update(self, name: str, version: int, tags: dict[str, str | None] | None, notes: str | None) -> None:
        """Merge ``tags`` (None values remove keys) and replace ``notes`` when given."""

    @abstractmethod
    def _delete_version(self, name: str, version: int) -> bool:
        """Remove the record (and its aliases), then the file bytes; False if there was none."""

    # -- primitives for check() and collect_garbage() -------------------------------------------
    # Backends that hold their bytes themselves implement these; the remote store does not (its server
    # checks its own store). In the MongoDB store they run inside an already translated operation.
    def _catalogue(self) -> builtins.list[tuple[str, int]]:
        """Every stored version as (name, version), sorted."""
        raise NotImplementedError

    def _alias_targets(self) -> builtins.list[tuple[str, str, int]]:
        """Every alias as (name, alias, version), whether or not that version exists."""
        raise NotImplementedError

    def _drop_alias(self, name: str, alias: str, version: int) -> bool:
        """Remove the alias only if it still names ``version`` and that version does not exist."""
        raise NotImplementedError

    def _counters(self) -> dict[str, int]:
        """Per name, the highest deleted version number the store remembers (never to be given again)."""
        raise NotImplementedError

    def _advance_counter(self, name: str, version: int) -> None:
        """Remember that ``version`` of ``name`` was used, so that it is never given again."""
        raise NotImplementedError

    def _leftovers(
        self, grace: float, exact: bool
    ) -> contextlib.AbstractContextManager[builtins.list[Leftover]]:
        """Stored bytes no record names. One that may belong to a save still running is marked
        ``young`` and never removed: with ``exact``, a backend that can tell which saves are running
        asks (it may wait for them to reach their records); otherwise, or when it cannot, whatever is
        younger than ``grace`` seconds is young. :meth:`_remove_leftover` runs inside the context."""
        raise NotImplementedError

    def _remove_leftover(self, item: Leftover) -> bool:
        """Remove a leftover; False if it turned out to be in use after all (and was kept)."""
        raise NotImplementedError

    def close(self) -> None:  # noqa: B027 (optional: only backends holding connections need it)
        """Release connections; the store object is not used afterwards."""

    def __enter__(self) -> ModelStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.display}>"

    # -- reading ---------------------------------------------------------------------------------
    def resolve(self, ref: str | Ref) -> ModelRecord:
        """The record a REF names: ``name`` (latest), ``name:3`` or ``name@alias``; else NotFound."""
        ref = Ref.parse(ref)
        if ref.alias is not None:
            version = self._version_of_alias(ref.name, ref.alias)
            if version is None:
                self._require_model(ref.name)
                raise NotFound(f"model {ref.name!r} has no alias {ref.alias!r}")
            record = self._get(ref.name, version)
        else:
            record = self._get(ref.name, ref.version)
        if record is None:
            latest = self._require_model(ref.name)
            raise NotFound(f"model {ref.name!r} has no version {ref.version} (latest: {latest.version})")
        return record

    get = resolve

    def _require_model(self, name: str) -> ModelRecord:
        latest = self._get(name, None)
        if latest is None:
            raise NotFound(f"no model named {name!r} in {self.display}")
        return latest

    def list(
        self,
        *,
        name: str | None = None,
        search: str | None = None,
        tags: Mapping[str, str] | None = None,
        sort: str = "-created",
        limit: int = 50,
        offset: int = 0,
    ) -> Page:
        """Versions matching every given filter, in ``sort`` order, one page at a time."""
        return self._list(Query(name, search, dict(tags or {}), sort, limit, offset).checked())

    def reader(self, record: ModelRecord) -> VerifyingReader:
        """A resolved version's file as a stream; reading it to the end verifies size and sha256."""
        return VerifyingReader(self._open_file(record), record)

    @contextlib.contextmanager
    def open(self, ref: str | Ref) -> Iterator[VerifyingReader]:
        """The version's file as a stream; reading it to the end verifies size and sha256."""
        with self.reader(self.resolve(ref)) as reader:
            yield reader

    def export(
        self, ref: str | Ref, path: str | os.PathLike[str], format: str | None = None, *, images: Any = None
    ) -> ModelRecord:
        """Write the version to ``path``, atomically: as the stored ``.keras`` file (verified), or in
        another format (``onnx``, ``litert``, ``savedmodel``; told from the path when not given) once
        that export answers as the version does (see :meth:`export_checked`)."""
        return self.export_checked(ref, path, format, images=images)[0]

    def export_checked(
        self, ref: str | Ref, path: str | os.PathLike[str], format: str | None = None, *, images: Any = None
    ) -> tuple[ModelRecord, ExportCheck | None]:
        """:meth:`export`, and how the written export was checked
        (:func:`jupyter_cifar.engine.export.export_model` on ``images``; None for ``.keras``, which is the
        stored file itself, its sha256 verified)."""
        from ..engine.export import export_format, export_model

        path = Path(path)
        fmt = export_format(path, format)
        if fmt == "keras" and path.is_dir():
            raise BadParameter("PATH", f"{path} is a folder; give a file path ending in .keras")
        record = self.resolve(ref)
        if fmt == "keras":
            self._write_verified(record, path)
            return record, None
        return record, export_model(self.load(record.ref), path, fmt, images=images)

    def _write_verified(self, record: ModelRecord, path: Path) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
        try:
            with self.reader(record) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, CHUNK)
                src.read()  # reach the end, so the check has run even for an empty file
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def load(self, ref: str | Ref) -> keras.Model:
        """A Keras model (safe mode); loaded models are cached by sha256 and shared: clone to change."""
        record = self.resolve(ref)
        with self._models_lock:
            if record.sha256 in self._models:
                self._models.move_to_end(record.sha256)
                return self._models[record.sha256]
        from ..engine.modelfiles import load_model

        with tempfile.TemporaryDirectory(prefix="jupyter-cifar-") as tmp:
            path = Path(tmp) / f"{record.name}-{record.version}.keras"
            self._write_verified(record, path)
            model = load_model(path)
        with self._models_lock:
            self._models[record.sha256] = model
            while len(self._models) > self.model_cache_size:
                self._models.popitem(last=False)
        return model

    # -- writing ---------------------------------------------------------------------------------
    def save(
        self,
        model: keras.Model | str | os.PathLike[str],
        name: str,
        *,
        metadata: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
        notes: str = "",
        aliases: Sequence[str] = (),
    ) -> ModelRecord:
        """Save a Keras model, or import a ``.keras`` / legacy ``.h5`` file, as the next version of ``name``.

        A legacy ``.h5`` is loaded (safe mode) and stored as ``.keras``. ``metadata`` is what a training
        run knows (:meth:`TrainResult.metadata`); the store adds the model's facts and who saved it.
        """
        self._check_save_arguments(name, tags, notes, aliases, metadata)
        from ..engine.modelfiles import load_model, save_model, sniff_format

        if isinstance(model, str | os.PathLike):
            source = Path(model)
            fmt = sniff_format(source)
            metadata = {"imported_from": source.name, "imported_format": fmt, **dict(metadata or {})}
            if fmt == "keras":
                return self.save_file(
                    source, name, metadata=metadata, tags=tags, notes=notes, aliases=aliases
                )
            model = load_model(source)  # legacy .h5 comes in as a standard .keras file
        with tempfile.TemporaryDirectory(prefix="jupyter-cifar-") as tmp:
            path = save_model(model, Path(tmp) / "model.keras")
            return self.save_file(
                path,
                name,
                metadata={**_model_facts(model), **dict(metadata or {})},
                tags=tags,
                notes=notes,
                aliases=aliases,
            )

    def save_file(
        self,
        path: str | os.PathLike[str],
        name: str,
        *,
        metadata: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
        notes: str = "",
        aliases: Sequence[str] = (),
    ) -> ModelRecord:
        """Store a ``.keras`` file as it is, after checking it without running anything from it.

        Needs neither Keras nor TensorFlow (the server extension stores uploads with it): the file's
        config is read and held to Keras' own building blocks (:func:`inspect_model_file`).
        """
        from ..engine.modelfiles import inspect_model_file

        self._check_save_arguments(name, tags, notes, aliases, metadata)
        path = Path(path)
        facts = inspect_model_file(path)
        if facts["format"] != "keras":
            from ..errors import ModelFileError

            raise ModelFileError(f"{path}: only .keras files are stored as they are; import .h5 with save()")
        meta = {**facts, **dict(metadata or {})}
        meta.setdefault("saved_by", who())
        meta = check_metadata(meta)
        sha256, size = file_digest(path)
        fields = {
            "created": now_iso(),
            "tags": {k: v for k, v in check_tags(tags or {}).items() if v is not None},
            "notes": notes,
            "test_accuracy": _accuracy(meta.get("test_accuracy")),
            "metadata": meta,
        }
        record = self._insert_version(name, path, sha256, size, fields)
        if not aliases:
            return record
        try:
            for alias in aliases:
                self._set_alias(name, alias, record.version)
            return self.resolve(record.ref)
        except NotFound:
            raise Conflict(
                f"model {record.ref} was saved, and deleted by another request while its aliases "
                f"({', '.join(aliases)}) were being set"
            ) from None

    @staticmethod
    def _check_save_arguments(
        name: str,
        tags: Mapping[str, str] | None,
        notes: str,
        aliases: Sequence[str],
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        check_name(name)
        check_tags(tags or {})
        check_notes(notes)
        check_metadata(metadata or {})
        for alias in aliases:
            check_alias(alias)

    def set_alias(self, ref: str | Ref, alias: str) -> ModelRecord:
        """Point ``alias`` at the version ``ref`` names (moving it off any other version)."""
        alias = check_alias(alias)
        record = self.resolve(ref)
        self._set_alias(record.name, alias, record.version)
        return self.resolve(record.ref)

    def remove_alias(self, name: str, alias: str) -> None:
        check_name(name)
        if not self._remove_alias(name, check_name(alias, "alias")):
            self._require_model(name)
            raise NotFound(f"model {name!r} has no alias {alias!r}")

    def set_tags(self, ref: str | Ref, tags: Mapping[str, str | None]) -> ModelRecord:
        """Merge tags into the version's; a ``None`` value removes that tag."""
        checked = check_tags(tags)
        record = self.resolve(ref)
        self._update(record.name, record.version, checked, None)
        return self.resolve(record.ref)

    def set_notes(self, ref: str | Ref, notes: str) -> ModelRecord:
        notes = check_notes(notes)
        record = self.resolve(ref)
        self._update(record.name, record.version, None, notes)
        return self.resolve(record.ref)

    def delete(self, ref: str | Ref) -> ModelRecord:
        """Delete one version (``name:3``, ``name@alias``, or ``name`` for its latest), bytes included."""
        record = self.resolve(ref)
        if not self._delete_version(record.name, record.version):
            raise NotFound(f"model {record.ref} was deleted meanwhile")
        self._forget(record.sha256)
        return record

    def delete_model(self, name: str) -> builtins.list[ModelRecord]:
        """Delete every version of ``name``, bytes included; returns what was deleted."""
        check_name(name)
        self._require_model(name)
        deleted = []
        while (latest := self._get(name, None)) is not None:
            if self._delete_version(name, latest.version):
                self._forget(latest.sha256)
                deleted.append(latest)
        return deleted

    def _forget(self, sha256: str) -> None:
        with self._models_lock:
            self._models.pop(sha256, None)

    # -- checking and repairing ------------------------------------------------------------------
    def check(self, repair: bool = False, grace: float = GARBAGE_AGE_SECONDS) -> CheckReport:
        """Find where the catalogue and the stored bytes disagree, like ``git fsck``; see PROBLEM_KINDS.

        Every version's bytes are read and verified. With ``repair``, what can be fixed safely is fixed:
        leftovers of killed saves go, dangling aliases go, counters advance; a version whose bytes are
        missing or corrupt has lost its model, and its record is removed (its number stays retired).
        A version that reads back whole is never touched. Bytes that may belong to a save still running
        are left alone and counted in ``in_progress``: the embedded store knows which saves run (a
        lock), the MongoDB store cannot and leaves leftovers younger than ``grace`` seconds. Safe to
        run while other processes save and delete.
        """
        return fsck.check(self, repair, grace)

    def collect_garbage(self, max_age: float = GARBAGE_AGE_SECONDS) -> int:
        """Remove what interrupted saves and deletes left behind; returns how many items went.

        The cheap part of :meth:`check` with ``repair`` (no file is read), run when a store opens. It
        never waits for running saves and goes by age alone: leftovers younger than ``max_age`` seconds
        stay (for :meth:`check` to report, or for a later collection).
        """
        return fsck.collect_garbage(self, max_age)


def _accuracy(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _model_facts(model: keras.Model) -> dict[str, Any]:
    """What can be read off any Keras model, whoever trained it."""
    import keras

    facts: dict[str, Any] = {
        "architecture": model.name,
        "saved_by": who(),
        "parameters": int(model.count_params()),
        "keras_version": keras.__version__,
        "backend": keras.backend.backend(),
    }
    with contextlib.suppress(AttributeError, ValueError, TypeError):
        facts["input_shape"] = list(model.input_shape[1:])
        facts["output_classes"] = int(model.output_shape[-1])
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        facts["tensorflow_version"] = tf.__version__
    return facts
