"""The Train tab: choose a recipe, start, watch live curves, stop, continue, look at the result, save.

Training runs in the trainer's background thread; its events update widget traits from that thread,
throttled (at most a few widget messages per second, whatever the batch rate) and batched in
``hold_sync``, with a bounded number of points per curve.
"""

from __future__ import annotations

import io
import math
import threading
import time
from typing import TYPE_CHECKING, Any

import bqplot as bq
import ipywidgets as w
import numpy as np

from ..nets import DEFAULT_PRESET, PRESETS
from .common import ErrorArea, button, guarded, in_background, label, parse_tags
from .session import Session

if TYPE_CHECKING:
    from ..training import Trainer, TrainResult

FLUSH_SECONDS = 0.3  # at most ~3 updates a second reach the browser
MAX_POINTS = 400  # per curve; older points are thinned, never dropped wholesale
SMOOTHING = 0.9  # TensorBoard-style exponential moving average of per-batch values


class Curve:
    """One live line: points arrive from the training thread and reach the browser in batches."""

    def __init__(self, mark: bq.Lines) -> None:
        self.mark = mark
        self.x: list[float] = []
        self.y: list[float] = []
        self.dirty = False

    def add(self, x: float, y: float) -> None:
        self.x.append(x)
        self.y.append(y)
        if len(self.x) > MAX_POINTS:  # keep every other point: the shape stays, the count stays bounded
            self.x, self.y = self.x[::2], self.y[::2]
        self.dirty = True

    def clear(self) -> None:
        self.x, self.y = [], []
        self.dirty = True

    def flush(self) -> None:
        if self.dirty:
            self.dirty = False
            with self.mark.hold_sync():
                self.mark.x = np.asarray(self.x, dtype=float)
                self.mark.y = np.asarray(self.y, dtype=float)


def _figure(title: str, cls: str, y_label: str) -> tuple[bq.Figure, Curve, Curve]:
    accuracy = y_label == "accuracy"
    # Accuracy on fixed bounds (0 to 1), as fastai draws it: the curve's rise is honest from the start.
    x_scale, y_scale = bq.LinearScale(), bq.LinearScale(min=0, max=1) if accuracy else bq.LinearScale()
    scales = {"x": x_scale, "y": y_scale}
    train = bq.Lines(x=[], y=[], scales=scales, colors=["#1f77b4"], labels=["training"], display_legend=True)
    val = bq.Lines(
        x=[], y=[], scales=scales, colors=["#ff7f0e"], labels=["validation"], display_legend=True,
        marker="circle", marker_size=24,
    )  # fmt: skip
    fig = bq.Figure(
        title=title,
        marks=[train, val],
        axes=[
            bq.Axis(scale=x_scale, label="epoch", grid_lines="dashed", tick_format=".1f"),
            bq.Axis(
                scale=y_scale,
                orientation="vertical",
                label=y_label,
                grid_lines="dashed",
                tick_format=".0%" if accuracy else ".2f",
            ),
        ],
        legend_location="top-left" if accuracy else "top-right",  # where each curve leaves room
        layout=w.Layout(width="50%", height="280px", min_width="300px"),
        fig_margin={"top": 40, "bottom": 40, "left": 50, "right": 10},
        animation_duration=0,
    )
    fig.add_class(cls)
    return fig, Curve(train), Curve(val)


def _png(pixels: np.ndarray, scale: int = 2) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).resize((32 * scale, 32 * scale), Image.Resampling.NEAREST).save(buffer, "PNG")
    return buffer.getvalue()


def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "…"
    seconds = int(seconds)
    return (
        f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
        if seconds >= 3600
        else (f"{seconds // 60}:{seconds % 60:02d}")
    )


class TrainPanel(w.VBox):
    """Training control with live curves (see the module's doc)."""

    def __init__(self, session: Session) -> None:
        super().__init__()
        self.session = session
        self.trainer: Trainer | None = None
        self.result: TrainResult | None = None
        self._lock = threading.Lock()
        self._last_flush = 0.0
        self._batch: dict[str, Any] | None = None
        self._smoothed: dict[str, float] = {}
        self._previous: dict[str, float] = {}
        self.errors = ErrorArea()

        preset = PRESETS[DEFAULT_PRESET]
        self.preset = w.Dropdown(
            options=[(f"{p.name}: {p.description}", p.name) for p in PRESETS.values()],
            value=DEFAULT_PRESET,
            description="Network",
            layout=w.Layout(width="480px"),
        )
        self.preset.add_class("jc-train-preset")
        self.epochs = w.BoundedIntText(preset.epochs, min=1, max=1000, description="Epochs", **_narrow())
        self.epochs.add_class("jc-train-epochs")
        self.batch_size = w.BoundedIntText(
            preset.batch_size, min=1, max=65536, description="Batch size", **_narrow()
        )
        self.learning_rate = w.BoundedFloatText(
            preset.learning_rate, min=1e-7, max=10.0, step=1e-4, description="Learning rate", **_narrow()
        )
        self.limit = w.BoundedIntText(
            0, min=0, max=50000, description="Train images", **_narrow(), tooltip="0: all 50,000"
        )
        self.limit.add_class("jc-train-limit")
        self.preset.observe(self._on_preset, names="value")

        self.start_button = button("Start", "jc-train-start", style="success", icon="play")
        self.stop_button = button("Stop", "jc-train-stop", style="danger", icon="stop")
        self.continue_button = button(
            "Continue", "jc-train-continue", icon="forward", tooltip="train the model in hand for more epochs"
        )
        self.stop_button.disabled = True
        self.continue_button.disabled = True
        self.start_button.on_click(guarded(self.errors)(lambda _: self.start()))
        self.stop_button.on_click(guarded(self.errors)(lambda _: self.stop()))
        self.continue_button.on_click(guarded(self.errors)(lambda _: self.start(continue_training=True)))

        self.epoch_bar = w.IntProgress(0, min=0, max=1, description="Epoch", layout=w.Layout(width="360px"))
        self.batch_bar = w.IntProgress(0, min=0, max=1, description="Batch", layout=w.Layout(width="360px"))
        self.status = label("ready", "jc-train-status")
        self.loss_fig, self.loss_train, self.loss_val = _figure("Loss", "jc-train-loss", "loss")
        self.acc_fig, self.acc_train, self.acc_val = _figure("Accuracy", "jc-train-accuracy", "accuracy")
        self.curves = [self.loss_train, self.loss_val, self.acc_train, self.acc_val]

        self.result_label = label("", "jc-train-result")
        self.result_box = w.VBox(layout=w.Layout(display="none"))
        self.save_name = w.Text(
            placeholder="model name", description="Save as", layout=w.Layout(width="300px")
        )
        self.save_name.add_class("jc-train-save-name")
        self.save_tags = w.Text(
            placeholder="key=value, key=value", description="Tags", layout=w.Layout(width="300px")
        )
        self.save_notes = w.Textarea(placeholder="notes", description="Notes", layout=w.Layout(width="460px"))
        self.save_button = button("Save", "jc-train-save", style="primary", icon="save")
        self.save_button.disabled = True
        self.save_button.on_click(guarded(self.errors)(lambda _: self.save()))
        self.saved = label("", "jc-train-saved")
        session.observe(self._on_model_changed, names="model_changed")

        self.children = [
            w.HBox([self.preset]),
            w.HBox([self.epochs, self.batch_size, self.learning_rate, self.limit]),
            w.HBox([self.start_button, self.stop_button, self.continue_button]),
            w.HBox([self.epoch_bar, self.batch_bar]),
            self.status,
            w.HBox([self.loss_fig, self.acc_fig], layout=w.Layout(width="100%")),
            self.result_label,
            self.result_box,
            w.HBox([self.save_name, self.save_tags, self.save_button]),
            self.save_notes,
            self.saved,
            self.errors,
        ]
        self.add_class("jc-train")

    # -- controls --------------------------------------------------------------------------------
    def _on_preset(self, change: dict[str, Any]) -> None:
        preset = PRESETS[change["new"]]
        with self.hold_sync():
            self.epochs.value = preset.epochs
            self.batch_size.value = preset.batch_size
            self.learning_rate.value = preset.learning_rate

    def _on_model_changed(self, _change: dict[str, Any]) -> None:
        running = self.trainer is not None and self.trainer.state == "running"
        self.continue_button.disabled = self.session.model is None or running

    def config(self) -> Any:
        from ..training import TrainConfig

        return TrainConfig(
            preset=self.preset.value,
            epochs=self.epochs.value,
            batch_size=self.batch_size.value,
            learning_rate=self.learning_rate.value,
            train_limit=self.limit.value or None,
        )

    def start(self, continue_training: bool = False) -> threading.Thread:
        """Load the data (first time: decode, then cached) and start training in the background."""
        if self.trainer is not None and self.trainer.state == "running":
            raise RuntimeError("training is already running: stop it first")
        config = self.config()
        session = self.session
        if continue_training and session.model is None:
            raise RuntimeError("there is no model to continue: train one, or load one in the Models tab")
        for widget in (self.start_button, self.continue_button, self.save_button):
            widget.disabled = True
        self.status.value = "loading CIFAR-10…"

        def launch() -> None:
            from ..training import Trainer

            try:
                data = session.data(progress=lambda message: setattr(self.status, "value", message))
                if continue_training:
                    parent = session.record.ref if session.record is not None else None
                    trainer = Trainer(
                        data, config, model=session.model, history=session.history, parent=parent
                    )
                else:
                    trainer = Trainer(data, config)
            except BaseException:  # nothing started: the buttons come back, the error is shown
                self.status.value = "ready"
                self.start_button.disabled = False
                self._on_model_changed({})
                raise
            trainer.subscribe(self._on_event)
            self.trainer = trainer
            self.stop_button.disabled = False
            trainer.start()

        self.trainer = None
        return in_background(launch, errors=self.errors, name="jupyter-cifar-launch")

    def stop(self) -> None:
        if self.trainer is not None:
            self.trainer.stop()
            self.status.value = "stopping after this batch…"
            self.stop_button.disabled = True

    # -- events (called in the training thread) --------------------------------------------------
    def _on_event(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        with self._lock:
            if kind == "start":
                self._on_start(event)
            elif kind == "batch":
                self._on_batch(event)
            elif kind == "epoch":
                self._on_epoch(event)
            elif kind == "evaluation":
                self._on_evaluation(event)
            elif kind == "end":
                self._on_end(event)

    def _on_start(self, event: dict[str, Any]) -> None:
        self._start = event
        self._smoothed, self._previous = {}, {}
        if event["initial_epoch"] == 0:
            for curve in self.curves:
                curve.clear()
        with self.hold_sync():
            self.epoch_bar.max = event["epochs"]
            self.epoch_bar.value = 0
            self.batch_bar.max = event["batches_per_epoch"]
            self.batch_bar.value = 0
            self.result_label.value = ""
            self.result_box.layout.display = "none"
            self.saved.value = ""
        self.status.value = (
            f"training {event['architecture']} on {event['n_train']:,} images: {event['epochs']} epochs of "
            f"{event['batches_per_epoch']} batches (seed {event['seed']})"
        )
        self._flush(force=True)

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

    def _on_batch(self, event: dict[str, Any]) -> None:
        x = event["epoch"] - 1 + event["batch"] / event["batches"]
        loss = self._smooth("loss", event["loss"], event["batch"])
        accuracy = self._smooth("accuracy", event["accuracy"], event["batch"])
        if loss is not None:
            self.loss_train.add(x, loss)
        if accuracy is not None:
            self.acc_train.add(x, accuracy)
        self._batch = event
        self._flush()

    def _on_epoch(self, event: dict[str, Any]) -> None:
        if event["val_loss"] is not None:
            self.loss_val.add(event["epoch"], event["val_loss"])
            self.acc_val.add(event["epoch"], event["val_accuracy"])
        self._epochs_done = event["epoch"] - self._start["initial_epoch"]
        self._flush(force=True)

    def _flush(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_flush < FLUSH_SECONDS:
            return
        self._last_flush = now
        for curve in self.curves:
            curve.flush()
        batch = self._batch
        if batch is not None and self.trainer is not None and self.trainer.state == "running":
            start = self._start
            with self.hold_sync():
                self.epoch_bar.value = batch["epoch"] - 1 - start["initial_epoch"]
                self.batch_bar.value = batch["batch"]
            self.status.value = (
                f"epoch {batch['epoch'] - start['initial_epoch']}/{start['epochs']} · batch {batch['batch']}/"
                f"{batch['batches']} · {batch['images_per_second']:,.0f} images/s · ETA "
                f"{_duration(batch['eta_seconds'])}"
            )

    def _on_evaluation(self, event: dict[str, Any]) -> None:
        self.status.value = "evaluating on the test images…"
        self._evaluation = event

    def _on_end(self, event: dict[str, Any]) -> None:
        self._batch = None
        self._flush(force=True)
        trainer = self.trainer
        assert trainer is not None
        result = trainer.result
        self.stop_button.disabled = True
        if event["status"] == "failed" or result is None:
            self.status.value = "failed"
            self.errors.show(f"training failed: {event['error']}")
        else:
            self._finished(trainer, result, event)
        # Buttons come back last, once the model in hand is the new one.
        self.start_button.disabled = False
        self._on_model_changed({})

    def _finished(self, trainer: Trainer, result: TrainResult, event: dict[str, Any]) -> None:
        self.result = result
        if event["status"] == "finished":
            self.epoch_bar.value = self.epoch_bar.max
        self.status.value = (
            f"{event['status']} after {_epochs(len(result.history))} in {event['seconds']:.1f} s "
            f"({event['images_per_second']:,.0f} images/s)"
        )
        evaluation = result.evaluation
        assert evaluation is not None
        self.result_label.value = f"test accuracy {evaluation.accuracy:.4f} on {evaluation.n:,} test images"
        self._show_result(trainer, result)
        self.session.set_model(
            result.model,
            history=result.history,
            label=f"trained here: {result.config.preset}, {_epochs(len(result.history))} "
            f"(test accuracy {evaluation.accuracy:.4f})",
            class_names=list(evaluation.class_names),
        )
        self.save_button.disabled = False

    def _show_result(self, trainer: Trainer, result: TrainResult) -> None:
        evaluation = result.evaluation
        assert evaluation is not None
        names = list(evaluation.class_names)
        x_scale, y_scale = bq.OrdinalScale(), bq.LinearScale(min=0, max=1)
        bars = bq.Bars(
            x=names, y=[evaluation.per_class[n] for n in names], scales={"x": x_scale, "y": y_scale}
        )
        per_class = bq.Figure(
            title="Accuracy per class",
            marks=[bars],
            axes=[
                bq.Axis(scale=x_scale, tick_rotate=-40, tick_style={"text-anchor": "end"}),
                bq.Axis(scale=y_scale, orientation="vertical", tick_format=".0%"),
            ],
            layout=w.Layout(width="50%", height="320px", min_width="300px"),
            fig_margin={"top": 40, "bottom": 80, "left": 50, "right": 10},
        )
        per_class.add_class("jc-train-per-class")
        confusion = np.array(evaluation.confusion, dtype=float)
        rows = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
        col, row = bq.OrdinalScale(), bq.OrdinalScale(reverse=True)
        heat = bq.GridHeatMap(
            color=rows,
            row=names,
            column=names,
            scales={"row": row, "column": col, "color": bq.ColorScale(scheme="Blues", min=0, max=1)},
            tooltip=bq.Tooltip(fields=["row", "column", "color"], labels=["true", "predicted", "share"]),
        )
        matrix = bq.Figure(
            title="Confusion matrix (each row: one true class)",
            marks=[heat],
            axes=[
                bq.Axis(scale=col, tick_rotate=-40, tick_style={"text-anchor": "end"}),
                bq.Axis(scale=row, orientation="vertical"),
            ],
            layout=w.Layout(width="50%", height="320px", min_width="300px"),
            fig_margin={"top": 40, "bottom": 80, "left": 80, "right": 10},
        )
        matrix.add_class("jc-train-confusion")
        worst = []
        for item in evaluation.worst[:8]:
            pixels = trainer.data.x_test[item["index"]]
            # Two lines: "airplane → automobile (100%)" on one would be wider than its 150px column.
            lines = (f"{item['label']} →", f"{item['predicted']} ({item['probability']:.0%})")
            caption = [label(line, height="24px", margin="0px") for line in lines]
            picture = w.Image(value=_png(pixels), format="png", layout=w.Layout(width="72px", height="72px"))
            worst.append(w.VBox([picture, *caption], layout=w.Layout(width="150px", align_items="center")))
        gallery = w.HBox(worst, layout=w.Layout(flex_flow="row wrap"))
        gallery.add_class("jc-train-worst")
        self.result_box.children = [
            w.HBox([per_class, matrix], layout=w.Layout(width="100%")),
            label("Most confidently wrong test images (true → predicted):"),
            gallery,
        ]
        self.result_box.layout.display = None

    # -- saving ----------------------------------------------------------------------------------
    def save(self) -> threading.Thread:
        result = self.result
        if result is None:
            raise RuntimeError("nothing to save yet: train a model first")
        name = self.save_name.value.strip()
        tags = parse_tags(self.save_tags.value)
        notes = self.save_notes.value
        session = self.session
        parent = session.record.ref if session.record is not None else result.parent
        metadata = {**result.metadata(), "parent": parent}

        def work() -> Any:
            return session.store().save(result.model, name, metadata=metadata, tags=tags, notes=notes)

        def done(record: Any) -> None:
            self.saved.value = f"saved as {record.ref}"
            session.set_model(result.model, record=record, history=result.history)
            session.notify_store_changed()

        self.saved.value = "saving…"
        return in_background(work, done=done, errors=self.errors, busy=[self.save_button])

    def close(self) -> None:
        if self.trainer is not None:
            self.trainer.stop()
        super().close()


def _narrow() -> dict[str, Any]:
    """Arguments for a short labelled number box whose label is never cut."""
    return {"layout": w.Layout(width="230px"), "style": {"description_width": "initial"}}


def _epochs(n: int) -> str:
    return f"{n} epoch" if n == 1 else f"{n} epochs"
