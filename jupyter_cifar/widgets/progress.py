"""A training's progress as it happens: epoch and batch bars, a status line, loss and accuracy curves.

It is fed the training's events (:mod:`jupyter_cifar.engine.training`'s stream: a trainer in this kernel, or a
job's replayed through its follower), in the thread that publishes them. Whatever the batch rate, at most
a few widget messages a second reach the browser, and each curve keeps a bounded number of points that
still covers the whole run evenly (:class:`~jupyter_cifar.widgets.curves.Curve`).

The curves' x axis is the model's epochs of training (:mod:`jupyter_cifar.engine.history`): a run stopped at
1.53 epochs ends there, and a run that trains the same model further goes on from there, after the
epochs it had before.
"""

from __future__ import annotations

import math
import time
from typing import Any

import ipywidgets as w

from ..engine.budget import minutes_text
from ..engine.history import epoch_ends, epoch_fractions, epochs_text
from ..engine.precision import machine_text
from .common import label, legend_html, row_layout
from .curves import TRAIN_COLOUR, VAL_COLOUR, loss_accuracy_figure

FLUSH_SECONDS = 0.3  # at most ~3 updates a second reach the browser
SMOOTHING = 0.9  # TensorBoard-style exponential moving average of per-batch values


class TrainingProgress:
    """The bars, status line, curves and legend of the run being followed (one at a time).

    Not a widget itself: the Train tab places its parts among its own rows, and writes its own messages
    ("loading CIFAR-10…", a job's state) on the same status line. The tab calls it under its lock.
    """

    def __init__(self, *, shown: bool = True) -> None:
        self.epoch_bar = w.IntProgress(0, min=0, max=1, description="Epoch", layout=w.Layout(width="360px"))
        self.batch_bar = w.IntProgress(0, min=0, max=1, description="Batch", layout=w.Layout(width="360px"))
        self.bars = w.HBox([self.epoch_bar, self.batch_bar], layout=row_layout())
        self.status = label("ready", "jc-train-status")
        self.loss_fig, self.loss_train, self.loss_val = loss_accuracy_figure("Loss", "jc-train-loss", "loss")
        self.acc_fig, self.acc_train, self.acc_val = loss_accuracy_figure(
            "Accuracy", "jc-train-accuracy", "accuracy"
        )
        self.curves = [self.loss_train, self.loss_val, self.acc_train, self.acc_val]
        # Figures reach the page only once the tab is shown: bqplot sizes a figure drawn in a hidden box
        # at zero, less its margins (the browser's "negative width" errors), and draws it wrong.
        self.figure_row = w.HBox(
            [self.loss_fig, self.acc_fig] if shown else [], layout=w.Layout(width="100%", overflow="hidden")
        )
        self.legend = w.HTML(
            legend_html(
                [
                    (TRAIN_COLOUR, "solid", "training (per batch, smoothed)"),
                    (VAL_COLOUR, "dot", "validation on the test images (after each epoch)"),
                ]
            )
        )
        self.run: Any = None  # what is followed: a Trainer or a JobFollower (``state``, ``stopping``)
        self.batch: dict[str, Any] | None = None  # the last batch event of the run, until it ends
        self.offset = 0.0  # the epochs the model had when this run started
        self.reached = 0.0  # the epochs it has had at the last epoch's end
        self._keep = False  # the next start continues the drawing (the model drawn trains further)
        self._prior: list[dict[str, Any]] = []  # else: the history drawn before its first point
        self._start: dict[str, Any] = {}
        self._last_flush = 0.0
        self._smoothed: dict[str, float] = {}
        self._previous: dict[str, float] = {}

    def show(self) -> None:
        """The tab is shown: the figures can be drawn now."""
        if not self.figure_row.children:
            self.figure_row.children = [self.loss_fig, self.acc_fig]

    def follow(self, run: Any, *, keep: bool, prior: list[dict[str, Any]]) -> None:
        """Show ``run`` from now on: a new drawing, or (``keep``) the drawn model going on."""
        self.run = run
        self._keep, self._prior = keep, list(prior)
        self.batch = None
        self.offset = self.reached = 0.0
        if not keep:
            for curve in self.curves:
                curve.clear()
            self.flush(force=True)

    def on_start(self, event: dict[str, Any]) -> None:
        self._start = event
        self.offset = self.reached = float(event.get("epochs_done", 0.0))
        self._smoothed, self._previous = {}, {}
        if self._keep and event["initial_epoch"]:
            # The model drawn trains further (a Continue, a resumed job): points past where this run
            # starts were drawn by a run whose end was lost, and are trained again.
            for curve in self.curves:
                curve.truncate(self.offset)
        else:
            for curve in self.curves:
                curve.clear()
            self._draw_history(self._prior if event["initial_epoch"] else [])
        self._keep = True  # a later start of the same run (a resumed job) goes on from its epochs
        # A run with a time budget has no number of epochs: its first bar counts its time, in percent.
        self.epoch_bar.max, self.epoch_bar.value = event["epochs"] or 100, 0
        self.epoch_bar.description = "Time" if event.get("minutes") else "Epoch"
        self.batch_bar.max, self.batch_bar.value = event["batches_per_epoch"], 0
        length = _budget(event) or epochs_text(event["epochs"])
        said = [f"seed {event['seed']}"] + ([event["precision"]] if event.get("precision") else [])
        where = f" on {machine_text(event['machine'])}" if event.get("machine") else ""  # a job's: its worker
        self.status.value = (
            f"training {event['architecture']} on {event['n_train']:,} images: "
            f"{length} of {event['batches_per_epoch']} batches ({', '.join(said)}){where}"
        )
        self.flush(force=True)

    def on_batch(self, event: dict[str, Any]) -> None:
        x = self._x(event["epoch"], event["batch"] / event["batches"])
        loss = self._smooth("loss", event["loss"], event["batch"])
        accuracy = self._smooth("accuracy", event["accuracy"], event["batch"])
        if loss is not None:
            self.loss_train.add(x, loss)
        if accuracy is not None:
            self.acc_train.add(x, accuracy)
        self.batch = event
        self.flush()

    def on_epoch(self, event: dict[str, Any]) -> None:
        x = self._x(event["epoch"], epoch_fractions([event])[0])
        self.reached = x
        if event["val_loss"] is not None:
            self.loss_val.add(x, event["val_loss"])
            self.acc_val.add(x, event["val_accuracy"])
        self.flush(force=True)

    def on_end(self) -> None:
        """The run's last batch is done: every point drawn, the bars and status left to the tab."""
        self.batch = None
        self.flush(force=True)

    def complete(self) -> None:
        """A finished run's bars read full (a stopped one's stay where it stopped)."""
        self.epoch_bar.value, self.batch_bar.value = self.epoch_bar.max, self.batch_bar.max

    def ended_text(self, status: str, end: dict[str, Any] | None) -> str:
        """ "finished after 2 epochs (5 in all) in 12.3 s (1,234 images/s)"."""
        run = epochs_text(round(self.reached - self.offset, 2))
        in_all = f" ({epochs_text(round(self.reached, 2))} in all)" if self.offset else ""
        seconds = f" in {end['seconds']:.1f} s ({end['images_per_second']:,.0f} images/s)" if end else ""
        return f"{status} after {run}{in_all}{seconds}"

    def flush(self, force: bool = False) -> None:
        """Send what changed to the browser: at most every FLUSH_SECONDS unless ``force``."""
        now = time.monotonic()
        if not force and now - self._last_flush < FLUSH_SECONDS:
            return
        self._last_flush = now
        for curve in self.curves:
            curve.flush()
        batch, run = self.batch, self.run
        if batch is None or run is None or run.state not in ("running", "stopping"):
            return
        start = self._start
        run_epoch = batch["epoch"] - start["initial_epoch"]
        budget = _budget(start)
        self.epoch_bar.value = round(100 * batch.get("done", 0.0)) if budget else run_epoch - 1
        self.batch_bar.value = batch["batch"]
        if run.stopping:
            self.status.value = "stopping after this batch…"
            return
        in_all = ""
        if budget:
            where = f"epoch {run_epoch} · {batch.get('done', 0.0):.0%} of {budget}"
        else:
            where = f"epoch {run_epoch}/{start['epochs']}"
            if self.offset:
                in_all = f" ({_number(self.offset)} → {_number(self.offset + start['epochs'])} epochs in all)"
        self.status.value = (
            f"{where}{in_all} · batch {batch['batch']}/{batch['batches']} · "
            f"{batch['images_per_second']:,.0f} images/s · ETA {_duration(batch['eta_seconds'])}"
        )

    def _draw_history(self, history: list[dict[str, Any]]) -> None:
        """The epochs a continued model had before this run, one point each, where they ended."""
        for x, row in zip(epoch_ends(history), history, strict=True):
            for curve, key in (
                (self.loss_train, "loss"),
                (self.acc_train, "accuracy"),
                (self.loss_val, "val_loss"),
                (self.acc_val, "val_accuracy"),
            ):
                if isinstance(row.get(key), int | float):
                    curve.add(x, float(row[key]))

    def _x(self, epoch: int, fraction: float) -> float:
        """Where a point of this run lies on the epochs-of-training axis."""
        return self.offset + (epoch - self._start["initial_epoch"] - 1) + fraction

    def _smooth(self, key: str, running_mean: float | None, batch: int) -> float | None:
        """The per-batch value behind Keras' running epoch mean, then an exponential moving average."""
        if running_mean is None:
            return None
        previous = self._previous.get(key) if batch > 1 else None
        value = running_mean if previous is None else batch * running_mean - (batch - 1) * previous
        self._previous[key] = running_mean
        last = self._smoothed.get(key)
        self._smoothed[key] = value if last is None else SMOOTHING * last + (1 - SMOOTHING) * value
        return self._smoothed[key]


def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "…"
    seconds = int(seconds)
    return (
        f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        if seconds >= 3600
        else (f"{seconds // 60}:{seconds % 60:02d}")
    )


def _budget(start: dict[str, Any]) -> str | None:
    """ "9 minutes" for a run with a time budget (its start event says), else None."""
    return minutes_text(start["minutes"]) if start.get("minutes") else None


def _number(value: float) -> str:
    """1.53, 2 (not 2.00)."""
    return f"{value:.2f}".rstrip("0").rstrip(".")
