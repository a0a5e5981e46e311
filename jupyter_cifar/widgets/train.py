"""The Train tab: choose a recipe, start, watch live curves, stop, continue, look at the result, save.

Training runs in the trainer's background thread; its events update widget traits from that thread,
throttled (at most a few widget messages per second, whatever the batch rate) and batched in
``hold_sync``, with a bounded number of points per curve that still covers the whole run evenly.

The curves' x axis is the model's epochs of training (:mod:`jupyter_cifar.history`): a run stopped at
1.53 epochs ends there, and Continue goes on from there. Continue trains the model in hand as the
network it is, with the form's values, which show its own recipe when it comes into hand; the form says
when a value is far from that recipe. A saved version's parent is the stored version its training
started from, nothing else.
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

from ..history import epoch_ends, epoch_fractions, epochs_done, epochs_text
from ..nets import DEFAULT_PRESET, PRESETS
from .common import (
    ErrorArea,
    button,
    epochs_figure,
    epochs_scales,
    gradient_html,
    guarded,
    in_background,
    label,
    legend_html,
    parse_tags,
    text_html,
)
from .session import Session

if TYPE_CHECKING:
    from ..store.base import ModelRecord
    from ..training import TrainConfig, Trainer, TrainResult

FLUSH_SECONDS = 0.3  # at most ~3 updates a second reach the browser
MAX_POINTS = 400  # per curve: the whole run, averaged in buckets of equal width
SMOOTHING = 0.9  # TensorBoard-style exponential moving average of per-batch values
FAR = {"batch_size": 4.0, "learning_rate": 3.0}  # a value this many times off its recipe's is "far"
TRAIN_COLOUR, VAL_COLOUR = "#1f77b4", "#ff7f0e"


class Curve:
    """One live line over a whole run at bounded cost.

    Points are averaged in buckets of an equal number of points; when there are more than
    ``max_points`` buckets, neighbours merge and the bucket width doubles. Every part of the run keeps
    the same resolution: after ten epochs the first looks as it did live, only coarser.
    """

    def __init__(self, mark: bq.Lines, max_points: int = MAX_POINTS) -> None:
        self.mark = mark
        self.max_points = max_points
        self.width = 1  # points per bucket
        self.buckets: list[list[float]] = []  # [sum of x, sum of y, count]
        self.dirty = False

    def add(self, x: float, y: float) -> None:
        if self.buckets and self.buckets[-1][2] < self.width:
            last = self.buckets[-1]
            last[0] += x
            last[1] += y
            last[2] += 1
        else:
            self.buckets.append([x, y, 1])
            if len(self.buckets) > self.max_points:
                pairs = [self.buckets[i : i + 2] for i in range(0, len(self.buckets), 2)]
                self.buckets = [[sum(b[k] for b in pair) for k in range(3)] for pair in pairs]
                self.width *= 2
        self.dirty = True

    @property
    def x(self) -> list[float]:
        return [b[0] / b[2] for b in self.buckets]

    @property
    def y(self) -> list[float]:
        return [b[1] / b[2] for b in self.buckets]

    def clear(self) -> None:
        self.buckets, self.width = [], 1
        self.dirty = True

    def flush(self) -> None:
        if self.dirty:
            self.dirty = False
            with self.mark.hold_sync():
                self.mark.x = np.asarray(self.x, dtype=float)
                self.mark.y = np.asarray(self.y, dtype=float)


def _figure(title: str, cls: str, metric: str) -> tuple[bq.Figure, Curve, Curve]:
    scales = epochs_scales(metric)
    train = bq.Lines(x=[], y=[], scales=scales, colors=[TRAIN_COLOUR], labels=["training"])
    val = bq.Lines(
        x=[], y=[], scales=scales, colors=[VAL_COLOUR], labels=["validation"], marker="circle", marker_size=24
    )
    fig = epochs_figure(title, metric, cls, [train, val], scales, height="280px", min_width="300px")
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

    def __init__(self, session: Session, *, shown: bool = True) -> None:
        super().__init__()
        self.session = session
        # Figures reach the page only while the tab is shown: bqplot sizes a figure drawn in a hidden
        # box at zero, less its margins (the browser's "negative width" errors), and draws it wrong.
        self.showing = shown
        self._pending: list[w.Widget] | None = None  # a result's figures, kept until the tab is shown
        self.trainer: Trainer | None = None
        self.result: TrainResult | None = None
        self.saved_record: ModelRecord | None = None  # the version self.result was saved as, if it was
        self._busy = False  # from a click on Start or Continue until that training has ended
        self._continuing: Any = None  # the model a Continue started from
        self._drawn: Any = None  # the model whose training the curves show
        self._lock = threading.Lock()
        self._last_flush = 0.0
        self._batch: dict[str, Any] | None = None
        self._smoothed: dict[str, float] = {}
        self._previous: dict[str, float] = {}
        self.errors = ErrorArea()

        preset = PRESETS[DEFAULT_PRESET]
        self.preset = w.Dropdown(
            options=[(p.name, p.name) for p in PRESETS.values()],
            value=DEFAULT_PRESET,
            description="Network",
            layout=w.Layout(width="220px"),
        )
        self.preset.add_class("jc-train-preset")
        self.preset_info = w.HTML(layout=w.Layout(flex="1 1 auto", margin="0 0 0 12px"))
        self.preset_info.add_class("jc-train-preset-info")
        self.epochs = w.BoundedIntText(preset.epochs, min=1, max=1000, description="Epochs", **_narrow())
        self.epochs.add_class("jc-train-epochs")
        self.batch_size = w.BoundedIntText(
            preset.batch_size, min=1, max=65536, description="Batch size", **_narrow()
        )
        self.learning_rate = w.BoundedFloatText(
            preset.learning_rate, min=1e-7, max=10.0, step=1e-4, description="Learning rate", **_narrow()
        )
        self.limit = w.BoundedIntText(0, min=0, max=50000, description="Train images (0: all)", **_narrow())
        self.limit.add_class("jc-train-limit")

        self.start_button = button(
            "Start", "jc-train-start", style="success", icon="play", tooltip="train a new network"
        )
        self.stop_button = button("Stop", "jc-train-stop", style="danger", icon="stop")
        self.continue_button = button(
            "Continue", "jc-train-continue", icon="forward", tooltip="train the current model for more epochs"
        )
        self.stop_button.disabled = True
        self.continue_button.disabled = True
        self.start_button.on_click(guarded(self.errors)(lambda _: self.start()))
        self.stop_button.on_click(guarded(self.errors)(lambda _: self.stop()))
        self.continue_button.on_click(guarded(self.errors)(lambda _: self.start(continue_training=True)))
        self.continue_note = w.HTML()
        self.continue_note.add_class("jc-train-continue-note")

        self.epoch_bar = w.IntProgress(0, min=0, max=1, description="Epoch", layout=w.Layout(width="360px"))
        self.batch_bar = w.IntProgress(0, min=0, max=1, description="Batch", layout=w.Layout(width="360px"))
        self.status = label("ready", "jc-train-status")
        self.loss_fig, self.loss_train, self.loss_val = _figure("Loss", "jc-train-loss", "loss")
        self.acc_fig, self.acc_train, self.acc_val = _figure("Accuracy", "jc-train-accuracy", "accuracy")
        self.curves = [self.loss_train, self.loss_val, self.acc_train, self.acc_val]
        self.figure_row = w.HBox(
            [self.loss_fig, self.acc_fig] if shown else [], layout=w.Layout(width="100%", overflow="hidden")
        )

        self.result_label = label("", "jc-train-result")
        self.result_box = w.VBox(layout=w.Layout(display="none", overflow="hidden"))
        self.save_name = w.Text(
            placeholder="e.g. my-cifar (letters, digits, . _ -)",
            description="Save as",
            layout=w.Layout(width="340px"),
        )
        self.save_name.add_class("jc-train-save-name")
        self.name_hint = label("", "jc-train-name-hint")
        self.save_tags = w.Text(
            placeholder="key=value, key=value", description="Tags", layout=w.Layout(width="300px")
        )
        self.save_notes = w.Textarea(placeholder="notes", description="Notes", layout=w.Layout(width="460px"))
        self.save_button = button("Save", "jc-train-save", style="primary", icon="save")
        self.save_button.disabled = True
        self.save_button.on_click(guarded(self.errors)(lambda _: self.save()))
        self.saved = label("", "jc-train-saved")

        self.preset.observe(self._on_preset, names="value")
        for box in (self.epochs, self.batch_size, self.learning_rate):
            box.observe(lambda _: self._update_continue(), names="value")
        self.save_name.observe(self._on_name, names="value")
        session.observe(self._on_model_changed, names="model_changed")
        self._show_preset_info()

        self.children = [
            w.HBox([self.preset, self.preset_info], layout=w.Layout(align_items="center")),
            w.HBox([self.epochs, self.batch_size, self.learning_rate, self.limit], layout=_wrap()),
            w.HBox([self.start_button, self.stop_button, self.continue_button]),
            self.continue_note,
            w.HBox([self.epoch_bar, self.batch_bar], layout=_wrap()),
            self.status,
            self.figure_row,
            w.HTML(
                legend_html(
                    [
                        (TRAIN_COLOUR, "solid", "training (per batch, smoothed)"),
                        (VAL_COLOUR, "dot", "validation on the test images (after each epoch)"),
                    ]
                )
            ),
            self.result_label,
            self.result_box,
            w.HBox([self.save_name, self.save_tags, self.save_button], layout=_wrap()),
            self.name_hint,
            self.save_notes,
            self.saved,
            self.errors,
        ]
        self.add_class("jc-train")

    # -- the form --------------------------------------------------------------------------------
    def _on_preset(self, change: dict[str, Any]) -> None:
        """A network's recipe fills the form: the model in hand's own, if it is that network."""
        preset = PRESETS[change["new"]]
        recipe = self.session.recipe if self.session.model is not None else {}
        own = recipe.get("preset") == preset.name
        with self.hold_sync():
            self.epochs.value = preset.epochs
            self.batch_size.value = recipe.get("batch_size", preset.batch_size) if own else preset.batch_size
            self.learning_rate.value = (
                recipe.get("learning_rate", preset.learning_rate) if own else preset.learning_rate
            )
        self._show_preset_info()
        self._update_continue()

    def _show_preset_info(self) -> None:
        self.preset_info.value = text_html(PRESETS[self.preset.value].description)

    def _on_model_changed(self, _change: dict[str, Any]) -> None:
        """A model came into hand: the form shows its recipe (unless a training is running)."""
        recipe = self.session.recipe
        if not self._busy and self.session.model is not None and recipe.get("preset") in PRESETS:
            if self.preset.value != recipe["preset"]:
                self.preset.value = recipe["preset"]  # fills in its recipe (_on_preset)
            else:
                with self.hold_sync():
                    self.batch_size.value = recipe.get("batch_size", self.batch_size.value)
                    self.learning_rate.value = recipe.get("learning_rate", self.learning_rate.value)
        self._update_continue()

    def _update_continue(self) -> None:
        """Whether Continue can train the model in hand, and with what: said beside the button."""
        session, note = self.session, ""
        network = session.recipe.get("preset")
        allowed = session.model is not None and network in (None, self.preset.value)
        if session.model is None:
            note = ""
        elif not allowed:
            note = (
                f"Continue trains the current model ({session.model_label}) as the {network} network it "
                f"is: choose {network} in Network to continue it (the network you chose is for Start)."
            )
        else:
            done = epochs_text(epochs_done(session.history))
            note = (
                f"Continue trains the current model for {epochs_text(self.epochs.value)} more with the "
                f"values above (it has had {done}: {session.model_label})"
            )
            if network is None:
                note += f"; its recipe is not known: it trains with {self.preset.value}'s optimizer"
            far = self._far_from_recipe()
            if far:
                note += "; far from its own recipe: " + ", ".join(far)
        warn = "far from" in note or not allowed
        colour = "#8a4b00" if note and warn else "inherit"
        self.continue_note.value = f'<div style="color:{colour}">{text_html(note)}</div>' if note else ""
        self.continue_button.disabled = self._busy or not allowed

    def _far_from_recipe(self) -> list[str]:
        recipe, far = self.session.recipe, []
        for key, box, name in (
            ("batch_size", self.batch_size, "batch size"),
            ("learning_rate", self.learning_rate, "learning rate"),
        ):
            own = recipe.get(key)
            if own and not 1 / FAR[key] <= box.value / own <= FAR[key]:
                far.append(f"{name} {box.value:g} (it was trained with {own:g})")
        return far

    def _on_name(self, change: dict[str, Any]) -> None:
        from ..errors import BadParameter
        from ..store.base import check_name

        self.name_hint.value = ""
        if change["new"].strip():
            try:
                check_name(change["new"].strip())
            except BadParameter as e:
                self.name_hint.value = str(e).removeprefix("name: ")

    def config(self) -> TrainConfig:
        """What Start trains: a new network of the chosen preset, with the form's values."""
        from ..training import TrainConfig

        return TrainConfig(
            preset=self.preset.value,
            epochs=self.epochs.value,
            batch_size=self.batch_size.value,
            learning_rate=self.learning_rate.value,
            train_limit=self.limit.value or None,
        )

    def continue_config(self) -> TrainConfig:
        """What Continue trains: the model in hand as the network it is, with the form's values."""
        from dataclasses import replace

        session = self.session
        if session.model is None:
            raise RuntimeError("there is no model to continue: train one, or load one in the Models tab")
        network = session.recipe.get("preset")
        if network not in (None, self.preset.value):
            raise RuntimeError(f"{session.model_label} is a {network} network: choose {network} in Network")
        return replace(self.config(), preset=network or self.preset.value)

    # -- driving ---------------------------------------------------------------------------------
    def start(self, continue_training: bool = False) -> threading.Thread | None:
        """Load the data (first time: decode, then cached) and start training in the background.

        A click while a training is starting or running does nothing: a double click starts one.
        """
        if self._busy:
            return None
        config = self.continue_config() if continue_training else self.config()
        session = self.session
        self._busy = True
        for widget in (self.start_button, self.continue_button, self.save_button):
            widget.disabled = True
        self.saved.value = ""
        self.status.value = "loading CIFAR-10…"
        model, history, parent = session.model, session.history, session.origin
        self._continuing = model if continue_training else None

        def launch() -> None:
            from ..training import Trainer

            try:
                data = session.data(progress=lambda message: setattr(self.status, "value", message))
                if continue_training:
                    self.status.value = f"preparing {session.model_label} to train further…"
                    trainer = Trainer(data, config, model=model, history=history, parent=parent)
                else:
                    self.status.value = f"building the {config.preset} network…"
                    trainer = Trainer(data, config)
            except BaseException:  # nothing started: the buttons come back, the error is shown
                self.status.value = "ready"
                self._busy = False
                self.start_button.disabled = False
                self._update_continue()
                self.save_button.disabled = self.result is None
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
        self._offset = float(event.get("epochs_done", 0.0))
        self._smoothed, self._previous = {}, {}
        if event["initial_epoch"] == 0 or self._drawn is not self._continuing:
            for curve in self.curves:
                curve.clear()
            self._draw_history(self.session.history if event["initial_epoch"] else [])
        with self.hold_sync():
            self.epoch_bar.max = event["epochs"]
            self.epoch_bar.value = 0
            self.batch_bar.max = event["batches_per_epoch"]
            self.batch_bar.value = 0
            self.result_label.value = ""
            self.result_box.layout.display = "none"
        self.status.value = (
            f"training {event['architecture']} on {event['n_train']:,} images: "
            f"{epochs_text(event['epochs'])} of {event['batches_per_epoch']} batches (seed {event['seed']})"
        )
        self._flush(force=True)

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
        return self._offset + (epoch - self._start["initial_epoch"] - 1) + fraction

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
        x = self._x(event["epoch"], event["batch"] / event["batches"])
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
            x = self._x(event["epoch"], epoch_fractions([event])[0])
            self.loss_val.add(x, event["val_loss"])
            self.acc_val.add(x, event["val_accuracy"])
        self._flush(force=True)

    def _flush(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_flush < FLUSH_SECONDS:
            return
        self._last_flush = now
        for curve in self.curves:
            curve.flush()
        batch, trainer = self._batch, self.trainer
        if batch is None or trainer is None or trainer.state != "running":
            return
        start = self._start
        run_epoch = batch["epoch"] - start["initial_epoch"]
        with self.hold_sync():
            self.epoch_bar.value = run_epoch - 1
            self.batch_bar.value = batch["batch"]
        if trainer.stopping:
            self.status.value = "stopping after this batch…"
            return
        in_all = ""
        if self._offset:
            in_all = f" ({_number(self._offset)} → {_number(self._offset + start['epochs'])} epochs in all)"
        self.status.value = (
            f"epoch {run_epoch}/{start['epochs']}{in_all} · batch {batch['batch']}/{batch['batches']} · "
            f"{batch['images_per_second']:,.0f} images/s · ETA {_duration(batch['eta_seconds'])}"
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
        self._busy = False
        self.start_button.disabled = False
        self.save_button.disabled = self.result is None or self.saved_record is not None
        self._update_continue()

    def _finished(self, trainer: Trainer, result: TrainResult, event: dict[str, Any]) -> None:
        self.result, self.saved_record = result, None
        if event["status"] == "finished":
            self.epoch_bar.value = self.epoch_bar.max
        total = epochs_done(result.history)
        run = epochs_text(round(total - self._offset, 2))
        in_all = f" ({epochs_text(total)} in all)" if self._offset else ""
        self.status.value = (
            f"{event['status']} after {run}{in_all} in {event['seconds']:.1f} s "
            f"({event['images_per_second']:,.0f} images/s)"
        )
        evaluation = result.evaluation
        assert evaluation is not None
        self.result_label.value = f"test accuracy {evaluation.accuracy:.4f} on {evaluation.n:,} test images"
        self._show_result(trainer, result)
        cfg = result.config
        accuracy = f"test accuracy {evaluation.accuracy:.4f}"
        self.session.set_model(
            result.model,
            history=result.history,
            label=f"{cfg.preset} trained here, {epochs_text(total)}, {accuracy}",
            class_names=list(evaluation.class_names),
            recipe={"preset": cfg.preset, "batch_size": cfg.batch_size, "learning_rate": cfg.learning_rate},
            origin=result.parent,
        )
        self._drawn = result.model

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
                bq.Axis(scale=y_scale, side="left", tick_format=".0%"),
            ],
            layout=w.Layout(width="50%", height="320px", min_width="300px"),
            fig_margin={"top": 40, "bottom": 80, "left": 50, "right": 10},
        )
        per_class.add_class("jc-train-per-class")
        confusion = np.array(evaluation.confusion, dtype=float)
        rows = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
        col, row = bq.OrdinalScale(), bq.OrdinalScale(reverse=True)
        colour = bq.ColorScale(scheme="Blues", min=0, max=1)
        heat = bq.GridHeatMap(
            color=rows,
            row=names,
            column=names,
            scales={"row": row, "column": col, "color": colour},
            tooltip=bq.Tooltip(fields=["row", "column", "color"], labels=["true", "predicted", "share"]),
        )
        matrix = bq.Figure(
            title="Confusion matrix (share of each true class)",
            marks=[heat],
            axes=[
                bq.Axis(
                    scale=col,
                    label="predicted",
                    label_offset="62px",
                    tick_rotate=-40,
                    tick_style={"text-anchor": "end"},
                ),
                bq.Axis(scale=row, side="left", label="true", label_offset="70px"),
            ],
            layout=w.Layout(width="100%", height="320px"),
            fig_margin={"top": 40, "bottom": 90, "left": 90, "right": 10},
            title_style={"font-size": "14px"},
        )
        matrix.add_class("jc-train-confusion")
        scale = gradient_html("#f7fbff", "#08306b", "0%", "100% of the true class")
        matrix_box = w.VBox(
            [matrix, w.HTML(scale, layout=w.Layout(margin="0 0 0 90px"))],
            layout=w.Layout(width="50%", min_width="300px", overflow="hidden"),
        )
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
        self._pending = [
            w.HBox([per_class, matrix_box], layout=w.Layout(width="100%", overflow="hidden")),
            label("Most confidently wrong test images (true → predicted):"),
            gallery,
        ]
        if self.showing:
            self._place_result()

    def _place_result(self) -> None:
        if self._pending is not None:
            self.result_box.layout.display = None  # visible first: its figures are then drawn at their size
            self.result_box.children, self._pending = self._pending, None

    def show(self) -> None:
        """The tab is shown: its figures can be drawn now."""
        self.showing = True
        if not self.figure_row.children:
            self.figure_row.children = [self.loss_fig, self.acc_fig]
        self._place_result()

    def hide(self) -> None:
        self.showing = False

    # -- saving ----------------------------------------------------------------------------------
    def save(self) -> threading.Thread | None:
        """Save the last result as the next version of the name given; its parent is the version its
        training started from. A result is saved once: a second Save says where it already is."""
        from ..store.base import check_name

        result = self.result
        if result is None:
            raise RuntimeError("nothing to save yet: train a model first")
        if self.saved_record is not None:
            self.saved.value = (
                f"already saved as {self.saved_record.ref}: train or continue it to make a new version"
            )
            return None
        name = check_name(self.save_name.value.strip())
        tags = parse_tags(self.save_tags.value)
        notes = self.save_notes.value
        session = self.session
        metadata = result.metadata()  # its parent: where its training started (TrainResult.parent)

        def work() -> Any:
            try:
                return session.store().save(result.model, name, metadata=metadata, tags=tags, notes=notes)
            except BaseException:
                self.saved.value = ""  # the error says what happened
                raise

        def done(record: ModelRecord) -> None:
            self.saved_record = record
            self.saved.value = f"saved as {record.ref}"
            self.save_button.disabled = True
            with self.hold_sync():  # tags and notes belong to that version, not to the next run
                self.save_tags.value = ""
                self.save_notes.value = ""
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
    return {"layout": w.Layout(width="auto", min_width="200px"), "style": {"description_width": "initial"}}


def _wrap() -> w.Layout:
    """A row that wraps onto a second line rather than being cut at a narrow notebook's edge."""
    return w.Layout(flex_flow="row wrap")


def _number(value: float) -> str:
    """1.53, 2 (not 2.00)."""
    return f"{value:.2f}".rstrip("0").rstrip(".")
