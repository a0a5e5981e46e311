"""The model store's records and the validation of what users give it: names, refs, aliases, tags, notes,
metadata, queries, and what a check of the store reports (:mod:`jupyter_cifar.store.base` is the contract
that keeps them).

Everything here is plain data, checked where it enters: a name or tag that is not plain text, metadata
nested too deep or not JSON, a query past its limits is a :class:`~jupyter_cifar.errors.BadParameter`
naming the field, before any backend sees it.
"""

from __future__ import annotations

import getpass
import json
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ..errors import BadParameter

CHUNK = 1 << 20
# Names, aliases and tag keys travel in URLs, file names and command lines: keep them plain.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_TAG_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
MAX_TAG_VALUE = 1000
MAX_NOTES = 100_000
RESERVED_ALIASES = frozenset({"latest"})
MAX_SEARCH = 1000
MAX_METADATA_DEPTH = 32
MAX_INT = 2**53 - 1  # versions and offsets stay exact in JSON and fit every backend's integers
SORT_FIELDS = ("created", "name", "version", "test_accuracy", "size")
# A half-written file younger than this may belong to a save still running in another process.
GARBAGE_AGE_SECONDS = 15 * 60


def check_name(name: object, what: str = "name") -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name in (".", ".."):
        shown = repr(name) if len(repr(name)) <= 60 else f"{repr(name)[:50]}... ({len(str(name))} characters)"
        raise BadParameter(
            what,
            f"{shown} is not a valid {what}: use 1-100 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit",
        )
    return name


def _storable(text: str) -> bool:
    """Whether text can be kept as UTF-8: a lone surrogate (what Python makes of undecodable bytes, e.g.
    on a command line) cannot, and every backend would fail on it in its own way."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_alias(alias: object) -> str:
    check_name(alias, "alias")
    assert isinstance(alias, str)
    if alias.isdigit():
        raise BadParameter("alias", f"{alias!r} is not a valid alias: it would read as a version number")
    if alias in RESERVED_ALIASES:
        raise BadParameter("alias", f"{alias!r} is reserved: REF 'name' already means the latest version")
    return alias


def check_tags(tags: Mapping[str, object]) -> dict[str, str | None]:
    """Tag keys are plain names; values are text (``None`` removes the tag)."""
    checked: dict[str, str | None] = {}
    for key, value in tags.items():
        if not isinstance(key, str) or not _TAG_KEY.fullmatch(key):
            raise BadParameter("tag", f"{key!r} is not a valid tag key (letters, digits, '_', '.', '-')")
        if value is not None:
            if not isinstance(value, str | int | float | bool):
                raise BadParameter("tag", f"tag {key!r}: the value must be text")
            value = str(value)
            if len(value) > MAX_TAG_VALUE or _CONTROL.search(value) or not _storable(value):
                raise BadParameter(
                    "tag", f"tag {key!r}: the value must be at most {MAX_TAG_VALUE} characters of text"
                )
        checked[key] = value
    return checked


def check_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Metadata as the JSON every backend stores (other values become their text), or BadParameter.

    What one backend could keep and another not is refused on all of them: nesting deeper than
    :data:`MAX_METADATA_DEPTH` (BSON allows 100 levels), integers beyond 64 bits, and a
    ``test_accuracy`` that is not a number.
    """
    try:
        text = json.dumps(dict(metadata), allow_nan=False, default=str, ensure_ascii=False)
    except RecursionError:
        raise BadParameter("metadata", f"metadata nests deeper than {MAX_METADATA_DEPTH} levels") from None
    except (TypeError, ValueError) as e:
        raise BadParameter("metadata", f"metadata must be JSON data ({e})") from None
    if not _storable(text):
        raise BadParameter("metadata", "metadata must be text that UTF-8 can hold (no lone surrogates)")
    loaded: dict[str, Any] = json.loads(text)
    check_json_shape(loaded, "metadata", MAX_METADATA_DEPTH)
    accuracy = loaded.get("test_accuracy")
    if accuracy is not None and (not isinstance(accuracy, int | float) or isinstance(accuracy, bool)):
        raise BadParameter("metadata", f"test_accuracy must be a number (got {str(accuracy)[:40]!r})")
    return loaded


def check_json_shape(value: Any, what: str, max_depth: int) -> None:
    """Refuse JSON nested deeper than ``max_depth`` or holding an integer beyond 64 bits (iteratively:
    a hostile document must not exhaust the stack)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > max_depth:
                raise BadParameter(what, f"nests deeper than {max_depth} levels")
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
        elif isinstance(item, int) and not isinstance(item, bool) and not -(2**63) <= item < 2**63:
            digits = len(str(abs(item)))
            raise BadParameter(what, f"holds a {digits}-digit integer; integers must fit in 64 bits")


def check_notes(notes: object) -> str:
    if not isinstance(notes, str) or len(notes) > MAX_NOTES or "\x00" in notes or not _storable(notes):
        raise BadParameter("notes", f"notes must be text (UTF-8) of at most {MAX_NOTES} characters")
    return notes


@dataclass(frozen=True)
class Ref:
    """A model version named by ``name`` (its latest), ``name:3`` or ``name@alias``."""

    name: str
    version: int | None = None
    alias: str | None = None

    def __post_init__(self) -> None:
        check_name(self.name, "REF")
        if self.version is not None and (
            not isinstance(self.version, int)
            or isinstance(self.version, bool)
            or not 1 <= self.version <= MAX_INT
        ):
            raise BadParameter("REF", f"{self.name}: the version must be a number from 1 to {MAX_INT}")
        if self.alias is not None:
            check_name(self.alias, "REF")

    @classmethod
    def parse(cls, text: str | Ref) -> Ref:
        if isinstance(text, Ref):
            return text
        if not isinstance(text, str):
            raise BadParameter("REF", f"expected text such as 'name', 'name:3' or 'name@alias', got {text!r}")
        if "@" in text:
            name, alias = text.split("@", 1)
            return cls(check_name(name, "REF"), alias=check_name(alias, "REF"))
        if ":" in text:
            name, version = text.split(":", 1)
            if not (version.isascii() and version.isdigit()) or not 1 <= int(version) <= MAX_INT:
                raise BadParameter("REF", f"{text!r}: the version after ':' must be a number from 1")
            return cls(check_name(name, "REF"), version=int(version))
        return cls(check_name(text, "REF"))

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}:{self.version}"
        if self.alias is not None:
            return f"{self.name}@{self.alias}"
        return self.name


@dataclass
class ModelRecord:
    """One immutable model version and what is known about it."""

    name: str
    version: int
    created: str  # ISO 8601, UTC
    sha256: str
    size: int
    aliases: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    notes: str = ""
    test_accuracy: float | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "created": self.created,
            "sha256": self.sha256,
            "size": self.size,
            "aliases": sorted(self.aliases),
            "tags": dict(sorted(self.tags.items())),
            "notes": self.notes,
            "test_accuracy": self.test_accuracy,
            "metadata": self.metadata,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelRecord:
        return cls(
            name=data["name"],
            version=int(data["version"]),
            created=data["created"],
            sha256=data["sha256"],
            size=int(data["size"]),
            aliases=list(data.get("aliases") or []),
            tags=dict(data.get("tags") or {}),
            notes=data.get("notes") or "",
            test_accuracy=data.get("test_accuracy"),
            metadata=dict(data.get("metadata") or {}),
        )


#: What :meth:`ModelStore.check` can find, and what ``repair`` does about it.
PROBLEM_KINDS = {
    "missing": "a version's file is gone: the model is lost; repair removes its record",
    "corrupt": "a version's bytes do not match its size and sha256: the model is lost; repair removes it",
    "unreadable": "a version's file cannot be read (permissions?): never repaired, nothing is removed",
    "orphan": "stored bytes that no record names (a save killed before its record): repair removes them",
    "partial": "what a save cut short while writing left (a staging file, chunks without their GridFS "
    "files document): repair removes it",
    "dangling-alias": "an alias naming a version that does not exist: repair removes the alias",
    "counter": "a version existed that the store's memory of used numbers is behind: its number could "
    "be given again; repair advances the counter",
}
LOST_KINDS = ("missing", "corrupt")


@dataclass
class Problem:
    """One disagreement :meth:`ModelStore.check` found; ``repaired`` says whether it was fixed."""

    kind: str  # a key of PROBLEM_KINDS
    detail: str
    name: str | None = None
    version: int | None = None
    repaired: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "version": self.version,
            "detail": self.detail,
            "repaired": self.repaired,
        }


@dataclass
class CheckReport:
    """What :meth:`ModelStore.check` read and found."""

    store: str
    checked: int = 0  # versions whose bytes were read to the end
    in_progress: int = 0  # leftovers young enough to belong to a save still running: left alone
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """The store is consistent: nothing found, or everything found repaired."""
        return all(p.repaired for p in self.problems)

    @property
    def lost(self) -> list[Problem]:
        """Versions whose model is gone (their bytes are missing or corrupt)."""
        return [p for p in self.problems if p.kind in LOST_KINDS]

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "store": self.store,
            "checked": self.checked,
            "in_progress": self.in_progress,
            "problems": [p.to_json() for p in self.problems],
        }


@dataclass(frozen=True)
class Leftover:
    """Stored bytes that no record names: what a killed save (or delete) left behind."""

    kind: str  # "orphan" (a whole file) or "partial" (one that was being written)
    key: Any  # how the backend finds it again: a path, a GridFS id
    detail: str
    young: bool  # may belong to a save still running: never removed


@dataclass
class Page:
    """One page of a listing, and how many records match in all."""

    items: list[ModelRecord]
    total: int
    offset: int
    limit: int

    def to_json(self) -> dict[str, Any]:
        return {
            "items": [r.to_json() for r in self.items],
            "total": self.total,
            "offset": self.offset,
            "limit": self.limit,
        }


@dataclass(frozen=True)
class Query:
    """What to list: filters (all optional, combined with AND), order and page."""

    name: str | None = None  # exact model name
    search: str | None = None  # case-insensitive substring of the name or the notes
    tags: Mapping[str, str] = field(default_factory=dict)  # each key must have this value
    sort: str = "-created"  # a field of SORT_FIELDS, '-' for descending
    limit: int = 50
    offset: int = 0

    def checked(self) -> Query:
        field_ = self.sort.removeprefix("-")
        if field_ not in SORT_FIELDS:
            raise BadParameter(
                "sort", f"{self.sort!r}: sort by one of {', '.join(SORT_FIELDS)} ('-' first: descending)"
            )
        if not isinstance(self.limit, int) or not 1 <= self.limit <= 1000:
            raise BadParameter("limit", f"must be a number from 1 to 1000 (got {self.limit!r})")
        if not isinstance(self.offset, int) or not 0 <= self.offset <= MAX_INT:
            raise BadParameter("offset", f"must be a number from 0 (got {self.offset!r})")
        if self.name is not None:
            check_name(self.name)
        if self.search is not None and (
            not isinstance(self.search, str)
            or len(self.search) > MAX_SEARCH
            or "\x00" in self.search
            or not _storable(self.search)
        ):
            raise BadParameter("search", f"must be text of at most {MAX_SEARCH} characters, without NUL")
        check_tags(self.tags)
        return self

    @property
    def sort_field(self) -> str:
        return self.sort.removeprefix("-")

    @property
    def descending(self) -> bool:
        return self.sort.startswith("-")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"
