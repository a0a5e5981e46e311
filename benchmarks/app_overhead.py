"""The Train tab's cost: training images/s with the app's live curves against the bare trainer.

    python benchmarks/app_overhead.py [--data DIR] [--images N] [--epochs E] [--repeats R]

Runs alternate (bare, app, bare, app, ...) on the same subset so that the machine's noise hits both;
the rate is the steady state (epochs after the first). Also counts the widget messages the panel sends
per second of training (they would go to the browser): bounded by the panel's throttle, whatever the
batch rate, so the batch size is varied too.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ipywidgets

from benchmarks._common import DEFAULT_DATA, machine, table
from jupyter_cifar.engine.data import load_cifar10
from jupyter_cifar.engine.training import TrainConfig, Trainer
from jupyter_cifar.widgets import App

SENT = [0]
_send = ipywidgets.Widget._send


def counting_send(self, *args, **kwargs):  # every message a widget would put on the wire
    SENT[0] += 1
    return _send(self, *args, **kwargs)


ipywidgets.Widget._send = counting_send


def run(data, config: TrainConfig, with_app: bool) -> tuple[float, float]:
    """(steady images/s, widget messages per second of training)."""
    trainer = Trainer(data, config)
    stamps: dict[int, list[float]] = {}
    trainer.subscribe(
        lambda e: (
            stamps.setdefault(e["epoch"], []).append(time.perf_counter()) if e["type"] == "batch" else None
        )
    )
    app = None
    if with_app:
        app = App()
        trainer.subscribe(app.train._on_event)
        app.train.trainer = trainer
    SENT[0] = 0
    start = time.perf_counter()
    trainer.run()
    seconds = time.perf_counter() - start
    messages = SENT[0] / seconds
    if app is not None:
        app.close()
    batch = trainer.config.batch_size
    assert batch is not None
    steady = [s for epoch, s in stamps.items() if epoch > 1]
    images = sum((len(s) - 1) * batch for s in steady)
    return images / sum(s[-1] - s[0] for s in steady), messages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--images", type=int, default=8000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    data = load_cifar10(args.data).subset(args.images, 1000)
    rows = []
    for batch in (32, 128):
        config = TrainConfig(preset="tutorial", epochs=args.epochs, batch_size=batch, seed=0)
        bare, app, messages = [], [], []
        for _ in range(args.repeats):
            bare.append(run(data, config, False)[0])
            rate, per_second = run(data, config, True)
            app.append(rate)
            messages.append(per_second)
        b, a = statistics.median(bare), statistics.median(app)
        batches_per_second = a / batch
        rows.append(
            [
                batch,
                f"{b:.0f}",
                f"{a:.0f}",
                f"{(1 - a / b) * 100:+.1f}%",
                f"{batches_per_second:.0f}",
                f"{statistics.median(messages):.1f}",
            ]
        )
    print(
        f"tutorial preset, {args.images} images, {args.epochs} epochs, median of {args.repeats} ({machine()})"
    )
    print(
        table(
            ["batch", "bare images/s", "with app images/s", "slowdown", "batches/s", "widget messages/s"],
            rows,
        )
    )


if __name__ == "__main__":
    main()
