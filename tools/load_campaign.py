"""Load campaigns: many writers and readers at once on each store backend, and on the HTTP API.

    python tools/load_campaign.py                                  # all three, a minute each
    python tools/load_campaign.py --backend local --seconds 60 --procs 8
    python tools/load_campaign.py --backend mongo --store mongodb://host:27017/loadtest
    python tools/load_campaign.py --backend http --seconds 60 --clients 50
    ... --json                                                     # the figures as one JSON document

**local / mongo**: ``--procs`` worker processes share one store for ``--seconds``. Each repeats: save
the same small ``.keras`` file as the next version of one of three shared names (so every save races
the others for a version number), list (the newest page, and the name's newest versions), and read a
random version of that name back: an export whose sha256 must be the saved file's, or, in the first
``--loaders`` processes, a real Keras ``load`` (safe mode, cache off). Only the loaders import
TensorFlow, before the clock starts. Without ``--store``: a fresh folder (local), or a throwaway
``mongod`` from the test helpers (mongo); with one, the names carry this run's id, so a store in use
is fine.

**http**: a real ``jupyter server`` process with the extension (its store: a fresh folder, or
``--store``), and ``--clients`` concurrent clients on loopback (one asyncio loop, tornado's HTTP client,
a new connection per request) each repeating a random mix of list, show, upload (a new version from the
raw bytes) and download (checked against its sha256).

Afterwards each name's versions must be exactly 1..N, N the saves that succeeded, no version handed to
two saves, and every record the saved file's sha256 and size. Errors are any exception, any status but
the one expected (so any 5xx), any connection error, any wrong byte. The exit status is 1 if there was
any error, duplicate or gap. ``tests/test_load.py`` runs each backend for a few seconds in CI.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import multiprocessing as mp
import os
import queue
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]  # the package, and the test helpers (mongod, server)

from benchmarks._common import machine, table  # noqa: E402

NAMES = ("alpha", "beta", "gamma")
HTTP_MIX = {"list": 4, "show": 3, "upload": 1, "download": 2}
MAX_MESSAGES = 20  # error messages kept per run (all are counted)


# -- the store backends: processes ------------------------------------------------------------------


def _store_worker(
    index: int, uri: str, names: list[str], model: str, seconds: float, loader: bool, barrier: Any, out: Any
) -> None:
    """One process: save, list, read back, until the time is up; puts what it did on ``out``."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from jupyter_cifar.store import open_store
    from jupyter_cifar.store.integrity import file_digest

    expected, size = file_digest(Path(model))
    rng = random.Random(index)
    counts: Counter[str] = Counter()
    errors: list[str] = []
    saved: list[tuple[str, int]] = []
    try:
        store = open_store(uri)
        store.model_cache_size = 0  # every load reads and verifies the file again
        if loader:
            import keras  # noqa: F401 (TensorFlow's import is not part of the campaign)
    except Exception as e:
        barrier.abort()
        out.put({"index": index, "counts": {}, "errors": [f"worker {index} start: {e!r}"], "saved": []})
        return
    with store, tempfile.TemporaryDirectory(prefix="jc-load-") as tmp:
        copy = Path(tmp) / "copy.keras"
        newest: list[Any] = []
        try:
            barrier.wait()
        except threading.BrokenBarrierError:  # another worker could not start: no campaign
            seconds = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            name = rng.choice(names)
            for op in ("save", "list", "load" if loader else "read"):
                try:
                    if op == "save":
                        record = store.save_file(model, name)
                        saved.append((name, record.version))
                        _check(
                            record.sha256 == expected and record.size == size, f"{record.ref}: wrong record"
                        )
                    elif op == "list":
                        store.list(limit=20)
                        newest = store.list(name=name, sort="-version", limit=5).items
                    elif op == "read":
                        record = store.export(rng.choice(newest).ref, copy)
                        _check(file_digest(copy) == (expected, size), f"{record.ref}: exported bytes differ")
                    else:
                        model_ = store.load(rng.choice(newest).ref)
                        _check(model_.count_params() > 0, "a loaded model with no parameters")
                    counts[op] += 1
                except Exception as e:
                    errors.append(f"worker {index} {op}: {type(e).__name__}: {e}")
    out.put({"index": index, "counts": dict(counts), "errors": errors, "saved": saved})


def _results(workers: list[Any], out: Any) -> list[dict[str, Any]]:
    """Every worker's result; one that died without a word (killed, crashed) is an error of its own."""
    results: list[dict[str, Any]] = []
    while len(results) < len(workers):
        try:
            results.append(out.get(timeout=5))
        except queue.Empty:
            dead = [w for w in workers if w.exitcode not in (None, 0)]
            if len(results) + len(dead) >= len(workers) and all(not w.is_alive() for w in workers):
                message = f"{len(dead)} worker(s) died: exit codes {[w.exitcode for w in dead]}"
                results.append({"counts": {}, "errors": [message], "saved": []})
                break
    return results


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def run_store(
    backend: str, uri: str, seconds: float, procs: int, loaders: int, model: Path
) -> dict[str, Any]:
    names = [f"load-{uuid.uuid4().hex[:8]}-{n}" for n in NAMES]
    ctx = mp.get_context("spawn")  # fresh interpreters: no TensorFlow, no threads inherited
    barrier = ctx.Barrier(procs + 1)
    out = ctx.Queue()
    workers = [
        ctx.Process(
            target=_store_worker,
            args=(i, uri, names, str(model), seconds, i < loaders, barrier, out),
            daemon=True,
        )
        for i in range(procs)
    ]
    for worker in workers:
        worker.start()
    errors: list[str] = []
    try:
        barrier.wait(timeout=600)  # every worker has opened the store (and imported what it needs)
    except Exception:
        errors.append("a worker could not start (see its message)")
    started = time.monotonic()
    results = _results(workers, out)
    elapsed = time.monotonic() - started
    for worker in workers:
        worker.join(60)
    counts: Counter[str] = Counter()
    saved: list[tuple[str, int]] = []
    for result in results:
        counts.update(result["counts"])
        errors.extend(result["errors"])
        saved.extend(map(tuple, result["saved"]))
    from jupyter_cifar.store import open_store

    with open_store(uri) as store:
        duplicates, problems = audit(store, names, saved, model)
    return {
        "backend": backend,
        "processes": procs,
        "seconds": round(elapsed, 1),
        "saves": counts["save"],
        "lists": counts["list"],
        "reads": counts["read"],
        "loads": counts["load"],
        "errors": len(errors) + len(problems),
        "duplicates": duplicates,
        "messages": (errors + problems)[:MAX_MESSAGES],
    }


def audit(store: Any, names: list[str], saved: list[tuple[str, int]], model: Path) -> tuple[int, list[str]]:
    """(versions handed to two saves, what else is wrong): each name's versions must be exactly 1..N."""
    from jupyter_cifar.store.integrity import file_digest

    expected, size = file_digest(model)
    duplicates = len(saved) - len(set(saved))
    problems = []
    for name in names:
        records = []
        while page := store.list(name=name, sort="version", limit=1000, offset=len(records)).items:
            records.extend(page)
        versions = [r.version for r in records]
        wanted = list(range(1, sum(1 for n, _ in saved if n == name) + 1))
        if versions != wanted:
            missing, extra = sorted(set(wanted) - set(versions)), sorted(set(versions) - set(wanted))
            problems.append(f"{name}: {len(versions)} versions for {len(wanted)} saves; "
                            f"missing {missing[:10]}, unexpected {extra[:10]}")  # fmt: skip
        bad = [r.ref for r in records if (r.sha256, r.size) != (expected, size)]
        if bad:
            problems.append(f"{name}: {len(bad)} records with the wrong sha256 or size, e.g. {bad[:5]}")
    return duplicates, problems


# -- the HTTP API: concurrent clients ---------------------------------------------------------------


async def _http_client(
    index: int, api: str, token: str, names: list[str], model: bytes, deadline: float, stats: dict[str, Any]
) -> None:
    from tornado.httpclient import AsyncHTTPClient, HTTPRequest

    client = AsyncHTTPClient()
    rng = random.Random(index)
    expected = hashlib.sha256(model).hexdigest()
    auth = {"Authorization": f"token {token}"}
    kinds, weights = list(HTTP_MIX), list(HTTP_MIX.values())
    while time.monotonic() < deadline:
        kind, name = rng.choices(kinds, weights)[0], rng.choice(names)
        version = rng.randint(1, stats["known"][name])  # a version known to exist
        if kind == "list":
            request = HTTPRequest(f"{api}/models?limit=20", headers=auth)
        elif kind == "show":
            request = HTTPRequest(f"{api}/versions/{name}:{version}", headers=auth)
        elif kind == "download":
            request = HTTPRequest(f"{api}/versions/{name}:{version}/file", headers=auth)
        else:
            request = HTTPRequest(
                f"{api}/models/{name}/versions",
                method="POST",
                body=model,
                headers={**auth, "Content-Type": "application/octet-stream"},
            )
        request.request_timeout = 120
        start = time.perf_counter()
        try:
            response = await client.fetch(request, raise_error=False)
        except Exception as e:  # a connection that failed: refused, reset, timed out
            stats["errors"].append(f"client {index} {kind}: {type(e).__name__}: {e}")
            continue
        stats["latency"].append(time.perf_counter() - start)
        stats["counts"][kind] += 1
        wanted = 201 if kind == "upload" else 200
        if response.code != wanted:
            stats["errors"].append(f"client {index} {kind}: HTTP {response.code} {response.body[:200]!r}")
        elif kind == "upload":
            record = json.loads(response.body)
            stats["saved"].append((name, record["version"]))
            stats["known"][name] = max(stats["known"][name], record["version"])
        elif kind == "download" and hashlib.sha256(response.body).hexdigest() != expected:
            stats["errors"].append(f"client {index} download {name}:{version}: the bytes differ")
        elif kind == "show" and json.loads(response.body)["version"] != version:
            stats["errors"].append(f"client {index} show {name}:{version}: another version came back")


def run_http(store_uri: str | None, seconds: float, clients: int, model: Path) -> dict[str, Any]:
    from jupyterserver import JupyterServer
    from tornado.httpclient import AsyncHTTPClient

    from jupyter_cifar.store.remote import RemoteModelStore

    names = [f"load-{uuid.uuid4().hex[:8]}-{n}" for n in NAMES]
    data = model.read_bytes()
    with tempfile.TemporaryDirectory(prefix="jc-load-http-") as tmp:
        root = Path(tmp)
        server = JupyterServer(root, store_uri=store_uri or str(root / "models")).start()
        try:
            stats: dict[str, Any] = {
                "counts": Counter(),
                "errors": [],
                "latency": [],
                "saved": [],
                "known": {},
            }
            with RemoteModelStore(server.store_url) as store:
                for name in names:  # one version each, so that show and download have something
                    stats["saved"].append((name, store.save_file(model, name).version))
                    stats["known"][name] = 1
            AsyncHTTPClient.configure(None, max_clients=clients)  # one connection per client at once
            api = f"{server.url}jupyter-cifar/api"

            async def campaign() -> float:
                deadline = time.monotonic() + seconds
                start = time.monotonic()
                await asyncio.gather(
                    *(
                        _http_client(i, api, server.token, names, data, deadline, stats)
                        for i in range(clients)
                    )
                )
                return time.monotonic() - start

            elapsed = asyncio.run(campaign())
            with RemoteModelStore(server.store_url) as store:
                duplicates, problems = audit(store, names, stats["saved"], model)
        finally:
            server.stop()
    latency = sorted(stats["latency"])
    requests = len(latency)
    errors = stats["errors"] + problems
    return {
        "backend": "http",
        "clients": clients,
        "seconds": round(elapsed, 1),
        "requests": requests,
        **{kind: stats["counts"][kind] for kind in HTTP_MIX},
        "requests_per_second": round(requests / elapsed, 1),
        "p50_ms": round(1000 * statistics.median(latency), 1) if latency else None,
        "p99_ms": round(1000 * latency[min(requests - 1, int(0.99 * requests))], 1) if latency else None,
        "errors": len(errors),
        "duplicates": duplicates,
        "messages": errors[:MAX_MESSAGES],
    }


# -- running ------------------------------------------------------------------------------------------


@contextmanager
def model_file(given: str | None) -> Iterator[Path]:
    """The ``.keras`` file every save stores: the one given, else the test helpers' tiny model."""
    if given:
        yield Path(given)
        return
    from storetools import tiny_model_file

    with tempfile.TemporaryDirectory(prefix="jc-load-model-") as tmp:
        yield tiny_model_file(Path(tmp) / "tiny.keras")


@contextmanager
def store_for(backend: str, given: str | None) -> Iterator[str]:
    """The store URI a run uses: the one given, else a fresh folder or a throwaway mongod."""
    if given:
        yield given
        return
    from storetools import throwaway_store

    with (
        tempfile.TemporaryDirectory(prefix=f"jc-load-{backend}-") as tmp,
        throwaway_store(backend, Path(tmp), "loadtest") as uri,
    ):
        yield uri


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("local", "mongo", "http", "all"), default="all")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--procs", type=int, default=8, help="worker processes (local, mongo)")
    parser.add_argument("--loaders", type=int, default=1, help="of which do real Keras loads")
    parser.add_argument("--clients", type=int, default=50, help="concurrent HTTP clients (http)")
    parser.add_argument("--store", help="the store to use (local, mongo) or the server's store (http)")
    parser.add_argument("--model", help="the .keras file to save (default: a tiny model made with Keras)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    backends = ("local", "mongo", "http") if args.backend == "all" else (args.backend,)
    runs = []
    with model_file(args.model) as model:
        for backend in backends:
            if backend == "http":
                runs.append(run_http(args.store, args.seconds, args.clients, model))
            else:
                with store_for(backend, args.store) as uri:
                    runs.append(run_store(backend, uri, args.seconds, args.procs, args.loaders, model))
    if args.json:
        print(json.dumps({"machine": machine(), "runs": runs}, indent=2))
    else:
        report(runs)
    return 1 if any(run["errors"] or run["duplicates"] for run in runs) else 0


def report(runs: list[dict[str, Any]]) -> None:
    print(f"machine: {machine()}\n")
    stores = [r for r in runs if r["backend"] != "http"]
    if stores:
        header = [
            "backend",
            "processes",
            "seconds",
            "saves",
            "lists",
            "reads",
            "loads",
            "errors",
            "duplicates",
        ]
        print(table(header, [[r[h] for h in header] for r in stores]), end="\n\n")
    http = [r for r in runs if r["backend"] == "http"]
    if http:
        header = ["clients", "seconds", "requests", *HTTP_MIX, "requests_per_second", "p50_ms", "p99_ms"]
        header += ["errors", "duplicates"]
        print(table(["backend", *header], [["http", *(r[h] for h in header)] for r in http]), end="\n\n")
    for run in runs:
        for message in run["messages"]:
            print(f"{run['backend']}: {message}")


if __name__ == "__main__":
    sys.exit(main())
