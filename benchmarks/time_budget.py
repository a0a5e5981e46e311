"""What a time budget buys: the same minutes of training three ways, side by side in one run.

    python benchmarks/time_budget.py [--preset balanced] [--minutes 4] [--seed 0] [--data DIR] [--quick]

- ``minutes``: ``TrainConfig(minutes=M)`` (``jupyter cifar train --minutes M``), the preset's schedules
  spread over the time (:mod:`jupyter_cifar.engine.budget`);
- ``stopped``: the preset's own epochs and schedule, stopped when M minutes have passed since the first
  batch (what Lightning's ``max_time`` does: the learning rate is wherever its schedule had reached);
- ``epochs that fit``: as many whole epochs as the ``minutes`` run trained in its M minutes (rounded
  down: what a user who had timed the machine would ask for), with the preset's schedule over them.

Each trains in its own process, one after the other on the same machine (its speed changes: the table
gives each run's images/s). Accuracy is the final evaluation with the preset's test-time views.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import DEFAULT_DATA, machine, print_result, run_child, table


def child(args: argparse.Namespace) -> dict[str, Any]:
    from jupyter_cifar.engine.data import load_cifar10
    from jupyter_cifar.engine.training import TrainConfig, Trainer

    data = load_cifar10(args.data)
    how, budget = args.run, args.minutes * 60
    length: dict[str, Any] = {}  # "stopped": the preset's own epochs
    if how == "minutes":
        length = {"minutes": args.minutes}
    elif how.startswith("epochs="):
        length = {"epochs": int(how.removeprefix("epochs="))}
    limits = {"train_limit": 5000, "test_limit": 1000} if args.quick else {}
    trainer = Trainer(data, TrainConfig(preset=args.preset, seed=args.seed, **length, **limits))
    if how == "stopped":
        first_batch = threading.Event()
        trainer.subscribe(lambda e: first_batch.set() if e["type"] == "batch" else None)

        def stop_when_time_is_up() -> None:
            first_batch.wait()
            time.sleep(budget)
            trainer.stop()

        threading.Thread(target=stop_when_time_is_up, daemon=True).start()
    result = trainer.run()
    if result.evaluation is None:
        raise SystemExit(f"{how}: training failed: {result.error}")
    return {
        "run": how,
        "accuracy": result.evaluation.accuracy,
        "epochs": result.epochs,
        "trained_s": sum(row["seconds"] for row in result.history),
        "seconds": result.seconds,
        "images_per_second": result.images_per_second,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="balanced")
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--quick", action="store_true", help="smoke run: 5,000 images")
    parser.add_argument("--run", help=argparse.SUPPRESS)  # internal: one run, in a child
    args = parser.parse_args()
    if args.run:
        print_result(child(args))
        return
    print(f"time budget, {machine()}", flush=True)
    common = ["--preset", args.preset, "--minutes", str(args.minutes), "--seed", str(args.seed),
              "--data", args.data] + (["--quick"] if args.quick else [])  # fmt: skip
    runs = [run_child(__file__, [*common, "--run", "minutes"])]
    print(f"  minutes: {runs[-1]['accuracy']:.4f}", flush=True)
    runs.append(run_child(__file__, [*common, "--run", "stopped"]))
    print(f"  stopped: {runs[-1]['accuracy']:.4f}", flush=True)
    fit = max(1, int(runs[0]["epochs"]))
    runs.append(run_child(__file__, [*common, "--run", f"epochs={fit}"]))
    names = {
        "minutes": f"--minutes {args.minutes:g} (schedule on the clock)",
        "stopped": f"{args.preset}'s schedule, stopped at {args.minutes:g} min",
        f"epochs={fit}": f"{fit} whole epochs (what fitted)",
    }
    rows = [[names[r["run"]], f"{r['accuracy']:.4f}", f"{r['epochs']:g}", f"{r['trained_s']:.0f}",
             f"{r['seconds']:.0f}", f"{r['images_per_second']:.0f}"] for r in runs]  # fmt: skip
    print(f"{args.preset}, {args.minutes:g} minutes, seed {args.seed}:")
    print(table(["run", "test accuracy", "epochs", "training s", "trainer s", "images/s"], rows))
    base = runs[1]["accuracy"]
    print(f"accuracy over the stopped schedule: {runs[0]['accuracy'] - base:+.4f} (minutes), "
          f"{runs[2]['accuracy'] - base:+.4f} (whole epochs)")  # fmt: skip


if __name__ == "__main__":
    main()
