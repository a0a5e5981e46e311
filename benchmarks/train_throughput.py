"""Training images/s of each preset against the seed's `tutorial`, in one run.

    python benchmarks/train_throughput.py [--data DIR] [--images N] [--epochs E]

Each preset trains E epochs on the same N-image subset; the first epoch (graph tracing, warm-up) is left
out of the rate, so the figure is the steady state. Validation is off the clock too: only the batches
are timed, as the trainer reports them.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import DEFAULT_DATA, machine, table
from jupyter_cifar.engine.data import load_cifar10
from jupyter_cifar.engine.nets import PRESETS
from jupyter_cifar.engine.training import TrainConfig, Trainer


def steady_rate(data, preset: str, epochs: int) -> tuple[float, float]:
    """(images/s after the first epoch, accuracy at the end)."""
    clock: dict[int, list[float]] = {}

    def on_event(event: dict) -> None:
        if event["type"] == "batch":
            clock.setdefault(event["epoch"], []).append(time.perf_counter())

    trainer = Trainer(data, TrainConfig(preset=preset, epochs=epochs, seed=0))
    trainer.subscribe(on_event)
    result = trainer.run()
    batch = trainer.config.batch_size
    images = seconds = 0.0
    for epoch, stamps in clock.items():
        if epoch == 1:
            continue
        # From the first batch's end to the last's: (len - 1) batches of work.
        images += (len(stamps) - 1) * batch
        seconds += stamps[-1] - stamps[0]
    assert result.evaluation is not None
    return images / seconds, result.evaluation.accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    data = load_cifar10(args.data).subset(args.images, 1000)
    names = dict.fromkeys(["tutorial", *PRESETS])  # the baseline first, each preset once
    rates = {name: steady_rate(data, name, args.epochs) for name in names}
    base = rates["tutorial"][0]
    print(f"training throughput on {args.images} images, {args.epochs} epochs ({machine()})")
    print(
        table(
            ["preset", "batch", "images/s", "vs tutorial", f"accuracy after {args.epochs} epochs"],
            [
                [name, PRESETS[name].batch_size, f"{rate:.0f}", f"{rate / base:.2f}x", f"{acc:.3f}"]
                for name, (rate, acc) in rates.items()
            ],
        )
    )


if __name__ == "__main__":
    main()
