"""Training as a job against training in the kernel, and how quickly a job's events reach a watcher.

    python benchmarks/jobs.py [--data DIR] [--preset fast] [--images 10000] [--epochs 2] [--repeats 2]
                              [--no-dask]

1. Images/s: the same training (preset, images, epochs, seed) run in turns as a kernel runs it (a
   Trainer in the process, nothing else) and as a job (``run_job``, what the local executor's process
   runs: events published five times a second, heartbeats, a checkpoint at each epoch's end into the
   job store); each run in a fresh process, the trainer's own images/s.
2. Through a real `jupyter server` with the local executor, and then with the Dask executor (a real
   `dask scheduler` and `dask worker --nthreads 1` on loopback): seconds from POST jobs to the job's
   first batch (the job's process start, TensorFlow's import and the cached data load included), and
   for every batch the time from its end (stamped by the job) to its event reaching a watcher that
   long-polls the API as the app and ``jobs watch`` do: p50 and p95. Same machine, same clock.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path[:0] = [
    str(Path(__file__).resolve().parent.parent),
    str(Path(__file__).resolve().parent.parent / "tests"),
]

from benchmarks._common import DEFAULT_DATA, machine, print_result, run_child, table


def spec(args: argparse.Namespace) -> dict[str, Any]:
    return {"preset": args.preset, "epochs": args.epochs, "train_limit": args.images, "seed": 0}


# -------------------------------------------------------------------------------------- in a child


def child_kernel(args: argparse.Namespace) -> None:
    from jupyter_cifar.engine.data import load_cifar10
    from jupyter_cifar.engine.training import TrainConfig, Trainer

    data = load_cifar10(args.data)
    config = TrainConfig(preset=args.preset, epochs=args.epochs, train_limit=args.images, seed=0)
    result = Trainer(data, config).run()
    print_result({"images_per_second": result.images_per_second, "status": result.status})


def child_job(args: argparse.Namespace) -> None:
    from jupyter_cifar.jobs.records import JobSpec
    from jupyter_cifar.jobs.runner import run_job
    from jupyter_cifar.jobs.store import open_job_store
    from jupyter_cifar.store import open_store

    store = tempfile.mkdtemp(prefix="bench-jobs-")
    try:
        with open_store(store) as models:
            jobs = open_job_store(models)
            job = jobs.create(JobSpec.from_json({**spec(args), "data": str(args.data)}))
            jobs.close()
        state = run_job(store, job.id)
        with open_store(store) as models:
            jobs = open_job_store(models)
            [end] = [e for _, e in jobs.events(job.id, limit=100_000) if e["type"] == "end"]
            jobs.close()
        print_result({"images_per_second": end["images_per_second"], "status": state})
    finally:
        shutil.rmtree(store, ignore_errors=True)


# -------------------------------------------------------------------------------------- the parent


def throughput(args: argparse.Namespace) -> dict[str, list[float]]:
    rates: dict[str, list[float]] = {"kernel": [], "job": []}
    for i in range(args.repeats):
        for kind in ("kernel", "job") if i % 2 == 0 else ("job", "kernel"):
            argv = ["--child", kind, "--data", str(args.data), "--preset", args.preset]
            argv += ["--images", str(args.images), "--epochs", str(args.epochs)]
            result = run_child(__file__, argv)
            assert result["status"] == "finished", result
            rates[kind].append(result["images_per_second"])
            print(f"  {kind:6s} run {i + 1}: {result['images_per_second']:,.0f} images/s", flush=True)
    return rates


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def through_server(args: argparse.Namespace, root: Path, executor: str) -> dict[str, Any]:
    """One job through a real server: POST to first batch, batch-end-to-watcher latencies."""
    from jupyterserver import JupyterServer
    from mongod import free_port, terminate

    from jupyter_cifar.jobs.client import RemoteJobClient
    from jupyter_cifar.jobs.follow import follow
    from jupyter_cifar.store.remote import RemoteModelStore

    store = str(root / "models")
    extra = [f"--CifarExtension.data_dir={args.data}"]
    helpers: list[subprocess.Popen[bytes]] = []
    if executor == "dask":
        port = free_port()
        address = f"tcp://127.0.0.1:{port}"
        env = {**os.environ, "JUPYTER_CIFAR_STORE": store, "JUPYTER_CIFAR_DATA": str(args.data)}
        env.pop("JUPYTER_CIFAR_SERVER_URL", None)
        log = open(root / "dask.log", "ab")  # noqa: SIM115 (the processes own it)
        dask = str(Path(sys.executable).with_name("dask"))
        for argv in (
            ["scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            ["worker", address, "--nthreads", "1", "--no-dashboard", "--host", "127.0.0.1"],
        ):
            helpers.append(subprocess.Popen([dask, *argv], stdout=log, stderr=subprocess.STDOUT, env=env))
        extra += ["--CifarExtension.job_executor=dask", f"--CifarExtension.dask_scheduler={address}"]
        time.sleep(5)  # the worker registers with the scheduler
    server = JupyterServer(root / "server", store_uri=store, max_jobs=1, extra=tuple(extra)).start()
    try:
        client = RemoteJobClient(RemoteModelStore(server.store_url))
        posted = time.time()
        job = client.submit(spec(args))
        latencies, first_batch, ips = [], None, None
        for event in follow(client, job["id"], wait=10):
            heard = time.time()
            if event["type"] == "batch":
                first_batch = first_batch or event["time"] - posted
                latencies.append(heard - event["time"])
            elif event["type"] == "end":
                ips = event["images_per_second"]
        final = client.get(job["id"])
        assert final["state"] == "finished", final
        return {
            "executor": executor,
            "post_to_first_batch": first_batch,
            "p50": percentile(latencies, 0.5),
            "p95": percentile(latencies, 0.95),
            "batches": len(latencies),
            "images_per_second": ips,
            "worker": final["worker"],
        }
    finally:
        server.stop()
        for proc in reversed(helpers):
            terminate(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-dask", action="store_true", help="leave out the Dask executor")
    parser.add_argument("--child", choices=["kernel", "job"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "kernel":
        return child_kernel(args)
    if args.child == "job":
        return child_job(args)

    from jupyter_cifar.engine.data import load_cifar10

    print(machine())
    print(f"{args.preset}, {args.images:,} images, {args.epochs} epochs, seed 0; data {args.data}")
    load_cifar10(args.data)  # decoded once into the cache: every run below loads it cached
    print("1. images/s, in the kernel and as a job, in turns, each in a fresh process:")
    rates = throughput(args)
    kernel, job = statistics.median(rates["kernel"]), statistics.median(rates["job"])
    print(table(["", "images/s (median)", "runs"], [
        ["in the kernel", f"{kernel:,.0f}", ", ".join(f"{r:,.0f}" for r in rates["kernel"])],
        ["as a job", f"{job:,.0f}", ", ".join(f"{r:,.0f}" for r in rates["job"])],
    ]))  # fmt: skip
    print(f"job / kernel: {job / kernel:.3f}x (goal >= 0.95x)\n")

    print("2. one job through a real jupyter server, watched through its API:")
    rows = []
    executors = ["local"] if args.no_dask else ["local", "dask"]
    for executor in executors:
        with tempfile.TemporaryDirectory(prefix=f"bench-{executor}-") as tmp:
            found = through_server(args, Path(tmp), executor)
        rows.append(found)
        print(f"  {executor}: {found}", flush=True)
    print(table(
        ["executor", "POST -> first batch (s)", "batch end -> watcher p50 (s)", "p95 (s)", "batches",
         "images/s"],
        [[r["executor"], f"{r['post_to_first_batch']:.2f}", f"{r['p50']:.3f}", f"{r['p95']:.3f}",
          r["batches"], f"{r['images_per_second']:,.0f}"] for r in rows],
    ))  # fmt: skip
    if len(rows) == 2:
        local, dask = rows
        start = dask["post_to_first_batch"] / local["post_to_first_batch"]
        print(
            f"dask / local: POST -> first batch {start:.2f}x, "
            f"images/s {dask['images_per_second'] / local['images_per_second']:.3f}x, "
            f"p95 latency {dask['p95'] / local['p95']:.2f}x"
        )
    print("goals: POST -> first batch <= 10 s; p95 <= 0.5 s with the local executor")


if __name__ == "__main__":
    main()
