"""How a training run is observed: Keras' callback hooks turned into the trainer's events (``batch``,
``epoch``; :mod:`jupyter_cifar.engine.training` lists them), its speed and time left, a stop request
honoured between batches, and a time budget's clock advanced before each batch."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras

if TYPE_CHECKING:
    from .training import Trainer


class Progress:
    """Counts images and time; estimates speed (moving average) and the time left.

    With a time budget the clock rules: :meth:`spent` is the share of it gone since the first batch
    began (per-epoch validation included), and the time left is the budget's.
    """

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.images = 0
        self.train_seconds = 0.0
        self.rate = 0.0  # images/s, exponential moving average
        self.batches = self.epochs = self.batch_size = 0
        self.done_batches = 0
        minutes = trainer.config.minutes
        self.budget = None if minutes is None else minutes * 60.0
        self.started: float | None = None  # when the first batch began

    def begin(self, batches: int, epochs: int, batch_size: int) -> None:
        self.batches, self.epochs, self.batch_size = batches, epochs, batch_size

    def batch(self, size: int, seconds: float) -> None:
        self.images += size
        self.train_seconds += seconds
        self.done_batches += 1
        now = size / seconds if seconds > 0 else 0.0
        # The first batches include graph tracing: start the average from the overall rate.
        self.rate = now if self.done_batches <= 2 else 0.9 * self.rate + 0.1 * now

    def spent(self) -> float:
        """The share of the time budget gone (0 before the first batch); 0 without a budget."""
        if self.budget is None or self.started is None:
            return 0.0
        return (time.perf_counter() - self.started) / self.budget

    def done(self) -> float:
        """The share of this run done: of its time, or of its batches."""
        if self.budget is not None:
            return min(1.0, self.spent())
        return self.done_batches / max(1, self.batches * self.epochs)

    def eta(self) -> float:
        if self.budget is not None:
            return max(0.0, (1.0 - self.spent()) * self.budget)
        if self.done_batches < 3:  # the first batches trace the graph: their pace says nothing yet
            return float("nan")
        left = self.batches * self.epochs - self.done_batches
        return left * self.batch_size / self.rate if self.rate > 0 else float("nan")


class KerasHook(keras.callbacks.Callback):
    """Turns Keras' callback hooks into trainer events, and honours a stop request between batches.

    ``self.model`` is the model the loop trains, which may be a training view of the trainer's model
    (:mod:`jupyter_cifar.engine.fastview`); validation and checkpoints use the trainer's model itself.
    """

    def __init__(self, trainer: Trainer, progress: Progress) -> None:
        super().__init__()
        self.trainer = trainer
        self.progress = progress
        self.epoch_start = self.batch_start = 0.0
        self.epoch_batches = 0
        self.last_logs: dict[str, Any] = {}

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch_start = time.perf_counter()
        self.epoch_batches = 0

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self.batch_start = time.perf_counter()
        clock, p = self.trainer.clock, self.progress
        if clock is not None:
            if p.started is None:
                p.started = self.batch_start
            clock.assign(min(1.0, p.spent()))

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        p, t = self.progress, self.trainer
        n_train = len(t.data.x_train)
        size = min(p.batch_size, n_train - batch * p.batch_size)
        p.batch(size, time.perf_counter() - self.batch_start)
        self.epoch_batches = batch + 1
        logs = logs or {}
        self.last_logs = logs
        t._publish(
            {
                "type": "batch",
                "epoch": len(t.history) + 1,
                "batch": batch + 1,
                "batches": p.batches,
                "loss": num(logs.get("loss")),
                "accuracy": num(logs.get("accuracy")),
                "images_per_second": round(p.rate, 1),
                "eta_seconds": num(p.eta()),
                "done": round(p.done(), 4),
            }
        )
        if p.budget is not None and p.spent() >= 1.0:
            t.time_up = True
        if t.stopping or t.time_up:
            self.model.stop_training = True

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        t, p = self.trainer, self.progress
        logs = logs or self.last_logs
        complete = self.epoch_batches == p.batches
        row: dict[str, Any] = {
            "epoch": len(t.history) + 1,
            "loss": num(logs.get("loss")),
            "accuracy": num(logs.get("accuracy")),
            "val_loss": None,
            "val_accuracy": None,
            "seconds": round(time.perf_counter() - self.epoch_start, 3),
            "batches": self.epoch_batches,
            "batches_per_epoch": p.batches,
            "complete": complete,
        }
        t.history.append(row)
        assert t.model is not None
        model = t.model
        if (t.time_up or (complete and row["epoch"] == t._last_epoch)) and not t.stopping:
            model = t.final_model()  # the last validation and checkpoint are of the returned model
        if not t.stopping and (t.config.validate_each_epoch or model is not t.model):
            row.update(t._validate(model, row["epoch"]))
        if t.config.checkpoint:
            from .modelfiles import save_model

            save_model(model, Path(t.config.checkpoint))
        t._publish({"type": "epoch", **row})


def num(value: Any) -> float | None:
    """A finite float rounded for JSON, or None (JSON has no NaN)."""
    if value is None:
        return None
    f = float(value)
    return round(f, 6) if math.isfinite(f) else None
