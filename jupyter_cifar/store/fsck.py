"""Checking a store like ``git fsck``, and repairing what can be repaired safely: the work behind
:meth:`ModelStore.check <jupyter_cifar.store.base.ModelStore.check>` and
:meth:`~jupyter_cifar.store.base.ModelStore.collect_garbage`, written once over the primitives every
backend implements (``_catalogue``, ``_alias_targets``, ``_leftovers``, ...).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import IntegrityError, NotFound
from .integrity import VerifyingReader
from .records import CHUNK, LOST_KINDS, CheckReport, ModelRecord, Problem

if TYPE_CHECKING:
    from .base import ModelStore


def check(store: ModelStore, repair: bool, grace: float) -> CheckReport:
    """What :meth:`ModelStore.check` reports (and, with ``repair``, repairs)."""
    report = CheckReport(store.display)
    _versions(store, report, repair)
    _aliases(store, report, repair)
    _leftovers(store, report, repair, grace, exact=True)
    return report


def collect_garbage(store: ModelStore, max_age: float) -> int:
    """The cheap part of :func:`check` with repair (no file is read); how many items went."""
    report = CheckReport(store.display)
    _aliases(store, report, repair=True)
    _leftovers(store, report, repair=True, grace=max_age, exact=False)
    return sum(1 for p in report.problems if p.repaired and p.kind != "counter")


def _versions(store: ModelStore, report: CheckReport, repair: bool) -> None:
    for name, version in store._catalogue():
        record = store._get(name, version)
        try:
            found = None if record is None else _verify(store, record)
        except NotFound:
            continue
        if record is None or (found is not None and store._get(name, version) is None):
            continue  # deleted meanwhile (a delete removes the record first, then the bytes)
        report.checked += 1
        if found is None:
            continue
        kind, detail = found
        problem = Problem(kind, detail, name, version)
        if repair and kind in LOST_KINDS:
            problem.repaired = store._delete_version(name, version)
            store._forget(record.sha256)
        report.problems.append(problem)


def _verify(store: ModelStore, record: ModelRecord) -> tuple[str, str] | None:
    """None if the version's bytes read back whole; else (kind, detail). NotFound: deleted meanwhile."""
    try:
        raw = store._open_file(record)
    except IntegrityError as e:
        return "missing", f"{e}: the model is lost"
    except OSError as e:
        return "unreadable", f"model {record.ref}: its stored file cannot be read ({e})"
    try:
        with VerifyingReader(raw, record) as reader:
            while reader.read(CHUNK):
                pass
    except IntegrityError as e:
        return "corrupt", f"{e}: the model is lost"
    except OSError as e:
        return "unreadable", f"model {record.ref}: its stored file cannot be read ({e})"
    return None


def _aliases(store: ModelStore, report: CheckReport, repair: bool) -> None:
    """Aliases naming versions that do not exist, and the counters they show to be behind.

    The aliases are read before and after the versions: an alias seen both times whose version was
    absent in between outlived its version (a delete removes the aliases first).
    """
    before = set(store._alias_targets())
    stored = store._catalogue()
    existing = set(stored)
    highest: dict[str, int] = {}
    for name, version in stored:
        highest[name] = max(highest.get(name, 0), version)
    counters = store._counters()
    for name, alias, version in sorted(set(store._alias_targets()) & before):
        if (name, version) in existing:
            continue
        used = max(highest.get(name, 0), counters.get(name, 0))
        if version > used:  # that number was given once, and the store would give it again
            behind = Problem(
                "counter",
                f"version {version} of {name!r} existed (alias {alias!r} names it) but the store "
                f"remembers numbers up to {used} only: the next save would reuse {used + 1}",
                name,
                version,
            )
            if repair:
                store._advance_counter(name, version)
                counters[name] = version
                behind.repaired = True
            report.problems.append(behind)
        detail = f"alias {alias!r} names version {version}, which does not exist"
        dangling = Problem("dangling-alias", detail, name, version)
        if repair:
            dangling.repaired = store._drop_alias(name, alias, version)
            if not dangling.repaired:
                continue  # moved to an existing version meanwhile: nothing wrong
        report.problems.append(dangling)


def _leftovers(store: ModelStore, report: CheckReport, repair: bool, grace: float, exact: bool) -> None:
    with store._leftovers(grace, exact) as leftovers:
        for item in leftovers:
            if item.young:
                report.in_progress += 1
                continue
            problem = Problem(item.kind, item.detail)
            if repair:
                problem.repaired = store._remove_leftover(item)
                if not problem.repaired:
                    continue  # a record names it now: it was a save, not a leftover
            report.problems.append(problem)
