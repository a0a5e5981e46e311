"""The Train tab: choose a recipe, start, watch live curves, stop, continue, look at the result, save.

Training runs in the trainer's background thread; its events update widget traits from that thread,
throttled (at most a few widget messages per second, whatever the batch rate) and batched in
``hold_sync``, with a bounded number of points per curve that still covers the whole run evenly.

The curves' x axis is the model's epochs of training (:mod:`jupyter_cifar.history`): a run stopped at
1.53 epochs ends there, and Continue goes on from there. Continue trains the model in hand as the
network it is, with the form's values, which show its own recipe when it comes into hand; the form says
when a value is far from that recipe. A saved version's parent is the stored version its training
started from, nothing else.

Where the kernel's Jupyter server runs training jobs (:mod:`jupyter_cifar.jobs`), Start and Continue
queue a job there by default ("keeps running when this notebook closes"); the in-kernel trainer stays
for plain Python and for a model that is not saved. The jobs list shows the server's running and recent
jobs; the tab attaches to one (the newest running one when the app opens) through a
:class:`~jupyter_cifar.jobs.follow.JobFollower`, which replays its whole event history into the same
handlers as a trainer here, then goes on live. A job saves its model itself, under the name given before
Start, and its result becomes the model in hand.
"""

from __future__ import annotations

import math
import re
import threading
import time
from typing import TYPE_CHECKING, Any

import ipywidgets as w

from ..errors import BadParameter
from ..history import epoch_ends, epoch_fractions, epochs_done, epochs_text
from ..jobs.records import ACTIVE
from ..nets import DEFAULT_PRESET, PRESETS
from .common import ErrorArea, button, guarded, in_background, label, legend_html, parse_tags, text_html
from .curves import MAX_POINTS, TRAIN_COLOUR, VAL_COLOUR, Curve, loss_accuracy_figure
from .evaluation import evaluation_views
from .jobs import SHOWN, JobsList
from .session import Session

if TYPE_CHECKING:
    from ..jobs.client import JobClient
    from ..jobs.follow import JobFollower
    from ..store.records import ModelRecord
    from ..training import TrainConfig, Trainer, TrainResult

__all__ = ["MAX_POINTS", "Curve", "TrainPanel"]

FLUSH_SECONDS = 0.3  # at most ~3 updates a second reach the browser
SMOOTHING = 0.9  # TensorBoard-style exponential moving average of per-batch values
FAR = {"batch_size": 4.0, "learning_rate": 3.0}  # a value this many times off its recipe's is "far"
SUBMIT_GAP = 1.0  # seconds: a second click on Start within this is the same click (a double click)
LIMIT_CHOICES = (1000, 5000, 10000, 20000)  # offered in the train-images box, after "all (50,000)"


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
        self.trainer: Trainer | None = None  # a training in this kernel
        self.follower: JobFollower | None = None  # the job the tab is attached to
        self.run: Any = None  # what the curves show: the trainer or the follower
        self.job_client: JobClient | None = None  # the server's jobs, when it runs them
        self.result: TrainResult | None = None
        self.saved_record: ModelRecord | None = None  # the version self.result was saved as, if it was
        self._busy = False  # from a click on Start or Continue until that training has ended
        self._drawn: Any = None  # the model whose training the curves show
        self._keep = False  # the next run's start continues the drawing (the model drawn trains further)
        self._prior: list[dict[str, Any]] = []  # else: the history drawn before its first point
        self._offset = self._reached = 0.0
        self._evaluation: dict[str, Any] | None = None
        self._end: dict[str, Any] | None = None
        self._last_submit = 0.0
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
        # How many training images: self.limit holds the number that config() reads (0: all of them);
        # limit_box shows it as text, 0 as "all (50,000)" (the data's count once it is loaded), never 0.
        self.limit = w.BoundedIntText(0, min=0, max=50000, description="Train images")
        self.limit_box = w.Combobox(
            value=_all_text(None),
            options=[],
            ensure_option=False,
            continuous_update=False,  # read once typed (Enter, or leaving the box), not at each key
            placeholder="all, or a number",
            description="Train images",
            tooltip="how many training images (a class-balanced sample), or all of them",
            **_narrow(),
        )
        self.limit_box.add_class("jc-train-limit")
        self.limit.observe(lambda _: self._show_limit(), names="value")
        self._limit_refused = False  # the errors area shows a refused train-images text
        self.limit_box.observe(self._on_limit_text, names="value")
        self._show_limit()

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
        self.loss_fig, self.loss_train, self.loss_val = loss_accuracy_figure("Loss", "jc-train-loss", "loss")
        self.acc_fig, self.acc_train, self.acc_val = loss_accuracy_figure(
            "Accuracy", "jc-train-accuracy", "accuracy"
        )
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

        self.as_job = w.Checkbox(
            False,
            description="as a job on the Jupyter server: it keeps running when this notebook closes",
            indent=False,
            layout=w.Layout(display="none", width="auto"),
        )
        self.as_job.add_class("jc-train-as-job")
        self.as_job.observe(lambda _: self._arrange(), names="value")
        self.job_note = label("", "jc-train-job-note")
        self.jobs_list = JobsList(
            on_show=guarded(self.errors)(self.show_job), on_resume=guarded(self.errors)(self.resume_job)
        )

        self.preset.observe(self._on_preset, names="value")
        for box in (self.epochs, self.batch_size, self.learning_rate):
            box.observe(lambda _: self._update_continue(), names="value")
        self.save_name.observe(self._on_name, names="value")
        session.observe(self._on_model_changed, names="model_changed")
        self._show_preset_info()

        self.form = [
            w.HBox([self.preset, self.preset_info], layout=w.Layout(align_items="center")),
            w.HBox([self.epochs, self.batch_size, self.learning_rate, self.limit_box], layout=_wrap()),
            self.as_job,
        ]
        self.save_rows = [
            w.HBox([self.save_name, self.save_tags, self.save_button], layout=_wrap()),
            self.name_hint,
            self.save_notes,
        ]
        self.buttons = w.HBox([self.start_button, self.stop_button, self.continue_button])
        self.bars = w.HBox([self.epoch_bar, self.batch_bar], layout=_wrap())
        self.legend = w.HTML(
            legend_html(
                [
                    (TRAIN_COLOUR, "solid", "training (per batch, smoothed)"),
                    (VAL_COLOUR, "dot", "validation on the test images (after each epoch)"),
                ]
            )
        )
        self._arrange()
        self.add_class("jc-train")

    def _arrange(self) -> None:
        """The tab's rows: as a job, what it saves as is said before Start (the job saves it)."""
        as_job = self.as_job.value and self.job_client is not None
        running = [
            self.buttons,
            self.continue_note,
            self.jobs_list,
            self.bars,
            self.status,
            self.figure_row,
            self.legend,
            self.result_label,
            self.result_box,
        ]
        self.save_button.layout.display = "none" if as_job else None
        if as_job:
            self.job_note.value = (
                "The job saves its model when it ends, as the next version of the name above (none: "
                "job-<its id>), with these tags and notes."
            )
            self.children = [*self.form, *self.save_rows, self.job_note, *running, self.saved, self.errors]
        else:
            self.children = [*self.form, *running, *self.save_rows, self.saved, self.errors]
        self._update_continue()

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

    def _train_count(self) -> int | None:
        """How many training images the data has, once it is loaded (None before: it is not loaded for
        asking)."""
        data = self.session.loaded_data()
        return None if data is None else len(data.x_train)

    def _show_limit(self) -> None:
        """The train-images box shows the number in ``self.limit``: 0 as "all (50,000)" ("all" while the
        data is not loaded), any other number as the digits typed (a text that means it stays as typed)."""
        total = self._train_count()
        wanted = self.limit.value
        try:
            shown = parse_train_images(self.limit_box.value)
        except BadParameter:
            shown = None
        with self.hold_sync():
            self.limit_box.options = [
                _all_text(total),
                *(str(n) for n in LIMIT_CHOICES if total is None or n < total),
            ]
            if shown != wanted or (wanted == 0 and self.limit_box.value != _all_text(total)):
                self.limit_box.value = str(wanted) if wanted else _all_text(total)

    def _on_limit_text(self, change: dict[str, Any]) -> None:
        """Text typed into the train-images box: "all" (or nothing, or 0) or a number; anything else is
        refused, saying so, and the box shows the number in hand again. (Not ``guarded``: the box also
        changes when the data's count comes, which must not clear another error.)"""
        try:
            wanted = parse_train_images(change["new"])
        except BadParameter as e:
            self._show_limit()
            self.errors.show(e)
            self._limit_refused = True
            return
        if self._limit_refused:  # the refusal shown is answered
            self._limit_refused = False
            self.errors.clear()
        self.limit.value = wanted  # at most 50,000 (BoundedIntText): the box then shows what it kept
        self._show_limit()

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
        self._show_limit()  # the data may have been loaded meanwhile: "all" gets its count
        self._update_continue()

    def _update_continue(self) -> None:
        """Whether Continue can train the model in hand, and with what: said beside the button."""
        session, note = self.session, ""
        network = session.recipe.get("preset")
        as_job = self.as_job.value and self.job_client is not None
        allowed = session.model is not None and network in (None, self.preset.value)
        from ..training import why_not_trainable

        why = why_not_trainable(session.model) if session.model is not None else None
        if why is not None:
            allowed = False
            note = f"The current model ({session.model_label}) cannot be trained here: {why}."
        elif as_job and allowed and session.record is None:
            allowed = False
            note = (
                f"A job continues a saved version, and the current model ({session.model_label}) is not "
                "saved: save it, or untick 'as a job' to continue it in this kernel."
            )
        elif session.model is None:
            note = ""
        elif not allowed:
            note = (
                f"Continue trains the current model ({session.model_label}) as the {network} network it "
                f"is: choose {network} in Network to continue it (the network you chose is for Start)."
            )
        else:
            done = epochs_text(epochs_done(session.history))
            where = "queues a job that trains" if as_job else "trains"
            note = (
                f"Continue {where} the current model for {epochs_text(self.epochs.value)} more with the "
                f"values above (it has had {done}: {session.model_label})"
            )
            if network is None:
                note += f"; its recipe is not known: it trains with {self.preset.value}'s optimizer"
            far = self._far_from_recipe()
            if far:
                note += "; far from its own recipe: " + ", ".join(far)
        warn = "far from" in note or (session.model is not None and not allowed)
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
        from ..store.records import check_name

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

        from ..training import why_not_trainable

        session = self.session
        if session.model is None:
            raise RuntimeError("there is no model to continue: train one, or load one in the Models tab")
        why = why_not_trainable(session.model)
        if why is not None:
            raise RuntimeError(f"{session.model_label} cannot be trained here: {why}")
        network = session.recipe.get("preset")
        if network not in (None, self.preset.value):
            raise RuntimeError(f"{session.model_label} is a {network} network: choose {network} in Network")
        return replace(self.config(), preset=network or self.preset.value)

    # -- driving ---------------------------------------------------------------------------------
    def start(self, continue_training: bool = False) -> threading.Thread | None:
        """Start (or Continue): a job on the server when that is chosen, else a training here.

        A click while a training is starting or running here, or within a second of queueing a job,
        does nothing: a double click starts one.
        """
        if self.as_job.value and self.job_client is not None:
            return self._submit(continue_training)
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

        def launch() -> None:
            from ..training import Trainer

            try:
                data = session.data(progress=lambda message: setattr(self.status, "value", message))
                self._show_limit()  # "all" now says how many
                if continue_training:
                    self.status.value = f"preparing {session.model_label} to train further…"
                    trainer = Trainer(data, config, model=model, history=history, parent=parent)
                else:
                    self.status.value = f"building the {config.preset} network…"
                    trainer = Trainer(data, config)
            except BaseException:  # nothing started: the buttons come back, the error is shown
                self.status.value = "ready"
                self._idle()
                raise
            with self._lock:
                self._follow(trainer, keep=continue_training and self._drawn is model, prior=history)
                self.trainer = trainer
            trainer.subscribe(lambda event: self._on_event(event, trainer))
            self.stop_button.disabled = False
            trainer.start()

        self.trainer = None
        return in_background(launch, errors=self.errors, name="jupyter-cifar-launch")

    def _idle(self) -> None:
        """Nothing trains here: the buttons come back."""
        self._busy = False
        self.start_button.disabled = False
        self.save_button.disabled = self.result is None or self.saved_record is not None
        self._update_continue()

    def stop(self) -> None:
        run = self.run
        if run is not None and run.state in ("running", "queued"):
            run.stop()
            self.status.value = "stopping after this batch…" if run.state != "stopped" else "stopped"
            self.stop_button.disabled = True
            if self.follower is not None:
                self.jobs_list.update(self.follower.job)

    def _follow(self, run: Any, *, keep: bool, prior: list[dict[str, Any]]) -> None:
        """The curves now show ``run`` (under the lock): a new drawing, or the drawn one going on."""
        if self.follower is not None and self.follower is not run:
            self.follower.detach()
            self.follower = None
        self.run = run
        self._keep, self._prior = keep, list(prior)
        self._evaluation = self._end = None
        self._batch = None
        self._offset = self._reached = 0.0
        if not keep:
            for curve in self.curves:
                curve.clear()
            self._flush(force=True)
        with self.hold_sync():
            self.result_label.value = ""
            self.result_box.layout.display = "none"
            self.saved.value = ""

    # -- jobs --------------------------------------------------------------------------------------
    def discover_jobs(self) -> threading.Thread:
        """Ask the server (in the background) whether it runs jobs: if so, Start queues jobs by default,
        the jobs list appears, and the tab attaches to the newest running (else queued) one."""

        def work() -> None:
            client = self.session.jobs()
            if client is None:
                return
            items, _ = client.list([], limit=SHOWN)
            self.job_client = client
            with self.hold_sync():
                self.as_job.layout.display = None
                self.as_job.value = not self._busy
            self.jobs_list.show(items)
            self.jobs_list.poll(client)
            active = self.jobs_list.newest_active()
            if active is not None and self.run is None:
                self._attach(active)

        return in_background(work, errors=self.errors, name="jupyter-cifar-jobs")

    def show_job(self, job_id: str) -> threading.Thread | None:
        """Attach the curves, bars, Stop and the result's views to a job (its whole history first)."""
        if self.job_client is None:
            raise RuntimeError("this kernel's store is not a Jupyter server that runs jobs")
        if self.trainer is not None and self.trainer.state == "running":
            raise RuntimeError("a training runs in this kernel: stop it, or wait for its end, to show a job")
        if self.follower is not None and self.follower.id == job_id:
            return None
        client = self.job_client
        return in_background(lambda: self._attach(client.get(job_id)), errors=self.errors)

    def resume_job(self, job_id: str) -> threading.Thread | None:
        """Queue an interrupted, stopped or failed job again, from its last epoch, and attach to it."""
        client = self.job_client
        if client is None:
            return None
        return in_background(lambda: self._attach(client.resume(job_id)), errors=self.errors)

    def _attach(
        self, job: dict[str, Any], *, keep: bool = False, prior: list[dict[str, Any]] | None = None
    ) -> None:
        """Follow a job (called in a background thread): its events from the first into the handlers."""
        from ..jobs.follow import JobFollower

        assert self.job_client is not None
        if prior is None:
            prior = []
            parent = job["spec"].get("parent")
            if parent:  # the parent's epochs are drawn before the job's own
                try:
                    record = self.session.store().resolve(parent)
                    prior = list(record.metadata.get("history") or [])
                except Exception:  # a parent deleted since: the job's own epochs still show
                    prior = []
        follower = JobFollower(self.job_client, job)
        with self._lock:
            self.trainer = None
            self._follow(follower, keep=keep, prior=prior)
            self.follower = follower
            self.result, self.saved_record = None, None
        follower.subscribe(lambda event: self._on_event(event, follower))
        follower.on_ended(lambda ended: self._on_job_ended(ended, follower))
        self._form_from(job["spec"])
        self.jobs_list.select(job["id"])
        self.jobs_list.update(job)
        self.stop_button.disabled = job["state"] not in ACTIVE
        self.status.value = _job_waiting(job)
        follower.start()

    def _form_from(self, spec: dict[str, Any]) -> None:
        """The form shows what the job shown trains (a value it leaves to its preset: the preset's)."""
        if spec.get("preset") in PRESETS and spec["preset"] != self.preset.value:
            self.preset.value = spec["preset"]  # its recipe fills the form (_on_preset)
        with self.hold_sync():
            for box, key in (
                (self.epochs, "epochs"),
                (self.batch_size, "batch_size"),
                (self.learning_rate, "learning_rate"),
            ):
                if spec.get(key) is not None:
                    box.value = spec[key]
            self.limit.value = spec.get("train_limit") or 0

    def _submit(self, continue_training: bool) -> threading.Thread | None:
        """Queue the form's training as a job on the server, and attach to it."""
        from ..store.records import check_name

        now = time.monotonic()
        if self._busy or now - self._last_submit < SUBMIT_GAP:
            return None
        config = self.continue_config() if continue_training else self.config()
        session, client = self.session, self.job_client
        assert client is not None
        name = self.save_name.value.strip()
        spec: dict[str, Any] = {
            "preset": config.preset,
            "epochs": config.epochs,
            "batch_size": config.batch_size,
            "learning_rate": config.learning_rate,
            "train_limit": config.train_limit,
            "save": check_name(name) if name else None,
            "tags": parse_tags(self.save_tags.value),
            "notes": self.save_notes.value,
        }
        keep, prior = False, []
        if continue_training:
            record = session.record
            if record is None:
                raise RuntimeError(
                    f"{session.model_label} is not saved, so a job cannot start from it: save it first, or "
                    "untick 'as a job' to continue it in this kernel"
                )
            spec["parent"] = record.ref
            spec["save"] = spec["save"] or record.name  # the next version of the same model
            keep, prior = self._drawn is session.model, session.history
        self._busy, self._last_submit = True, now
        self.start_button.disabled = self.continue_button.disabled = True
        self.status.value = "queueing the job…"

        def work() -> None:
            try:
                job = client.submit({k: v for k, v in spec.items() if v is not None})
                self._attach(job, keep=keep, prior=prior)
            finally:
                self._idle()  # more jobs may be queued: the server runs them in order

        return in_background(work, errors=self.errors, name="jupyter-cifar-submit")

    def _on_job_ended(self, job: dict[str, Any], follower: JobFollower) -> None:
        """The job has ended and published everything (in the follower's thread): its saved model comes
        into hand, its result's views are shown, the buttons come back."""
        with self._lock:
            if follower is not self.follower:
                return
            self._batch = None
            self._flush(force=True)
        self.jobs_list.update(job)
        self.stop_button.disabled = True
        state, end = job["state"], self._end
        if state in ("finished", "stopped") and job.get("model"):
            if state == "finished":
                self.epoch_bar.value, self.batch_bar.value = self.epoch_bar.max, self.batch_bar.max
            self.status.value = self._ended_text(state, end)
            if self._evaluation is not None:
                self._show_evaluation(self._evaluation)
            self.saved.value = f"the job saved it as {job['model']}; loading it here…"
            try:
                store = self.session.store()
                record = store.resolve(job["model"])
                model = store.load(record.ref)
            except Exception as e:
                self.saved.value = f"the job saved it as {job['model']}"
                self.errors.show(f"could not load {job['model']} into this kernel: {e}")
            else:
                self._finished_job(follower, record, model)
        elif state == "stopped":
            self.status.value = "stopped before it started"
        elif state == "interrupted":
            self.status.value = f"interrupted ({job.get('error') or 'its process stopped'}): Resume goes on"
        elif state == "deleted":
            self.status.value = "the job was deleted"
        else:
            self.status.value = "failed"
            self.errors.show(f"job {job['id']} failed: {job.get('error')}")
        self._idle()

    def _finished_job(self, follower: JobFollower, record: ModelRecord, model: Any) -> None:
        with self._lock:
            if follower is not self.follower:
                return
            self.saved_record = record
            self.saved.value = f"saved as {record.ref} by the job"
            self.session.set_model(model, record=record)
            self._drawn = model
        self.session.notify_store_changed()

    # -- events (called in the training thread, or a job follower's) -------------------------------
    def _on_event(self, event: dict[str, Any], source: Any) -> None:
        kind = event["type"]
        with self._lock:
            if source is not self.run:  # a job no longer shown, a training no longer followed
                return
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
        self._offset = self._reached = float(event.get("epochs_done", 0.0))
        self._smoothed, self._previous = {}, {}
        if self._keep and event["initial_epoch"]:
            # The model drawn trains further (a Continue, a resumed job): points past where this run
            # starts were drawn by a run whose end was lost, and are trained again.
            for curve in self.curves:
                curve.truncate(self._offset)
        else:
            for curve in self.curves:
                curve.clear()
            self._draw_history(self._prior if event["initial_epoch"] else [])
        self._keep = True  # a later start of the same run (a resumed job) goes on from its epochs
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
        x = self._x(event["epoch"], epoch_fractions([event])[0])
        self._reached = x
        if event["val_loss"] is not None:
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
        batch, run = self._batch, self.run
        if batch is None or run is None or run.state not in ("running", "stopping"):
            return
        start = self._start
        run_epoch = batch["epoch"] - start["initial_epoch"]
        with self.hold_sync():
            self.epoch_bar.value = run_epoch - 1
            self.batch_bar.value = batch["batch"]
        if run.stopping:
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
        self._end = event
        trainer = self.trainer
        if trainer is None:  # a job's: it saves its model now, then ends (_on_job_ended)
            if event["status"] != "failed":
                self.status.value = f"the job is saving its model ({event['status']})…"
            return
        result = trainer.result
        self.stop_button.disabled = True
        if event["status"] == "failed" or result is None:
            self.status.value = "failed"
            self.errors.show(f"training failed: {event['error']}")
        else:
            self._finished(result, event)
        self._idle()  # the buttons come back last, once the model in hand is the new one

    def _ended_text(self, status: str, end: dict[str, Any] | None) -> str:
        """ "finished after 2 epochs (5 in all) in 12.3 s (1,234 images/s)"."""
        run = epochs_text(round(self._reached - self._offset, 2))
        in_all = f" ({epochs_text(round(self._reached, 2))} in all)" if self._offset else ""
        seconds = f" in {end['seconds']:.1f} s ({end['images_per_second']:,.0f} images/s)" if end else ""
        return f"{status} after {run}{in_all}{seconds}"

    def _finished(self, result: TrainResult, event: dict[str, Any]) -> None:
        self.result, self.saved_record = result, None
        if event["status"] == "finished":
            self.epoch_bar.value, self.batch_bar.value = self.epoch_bar.max, self.batch_bar.max
        self.status.value = self._ended_text(event["status"], event)
        if self._evaluation is not None:
            self._show_evaluation(self._evaluation)
        evaluation = result.evaluation
        assert evaluation is not None
        cfg = result.config
        accuracy = f"test accuracy {evaluation.accuracy:.4f}"
        self.session.set_model(
            result.model,
            history=result.history,
            label=f"{cfg.preset} trained here, {epochs_text(epochs_done(result.history))}, {accuracy}",
            class_names=list(evaluation.class_names),
            recipe={"preset": cfg.preset, "batch_size": cfg.batch_size, "learning_rate": cfg.learning_rate},
            origin=result.parent,
        )
        self._drawn = result.model

    def _show_evaluation(self, evaluation: dict[str, Any]) -> None:
        """The result's views, from its evaluation event (a training here or a job's): drawn when the
        tab is shown."""
        self.result_label.value = (
            f"test accuracy {evaluation['accuracy']:.4f} on {evaluation['n']:,} test images"
        )
        self._pending = evaluation_views(evaluation, evaluation.get("pictures"))
        if self.showing:
            self._place_result()

    def _place_result(self) -> None:
        if self._pending is not None:
            self.result_box.layout.display = None  # visible first: its figures are then drawn at their size
            self.result_box.children, self._pending = self._pending, None

    def show(self) -> None:
        """The tab is shown: its figures can be drawn now."""
        self.showing = True
        self._show_limit()
        if not self.figure_row.children:
            self.figure_row.children = [self.loss_fig, self.acc_fig]
        self._place_result()

    def hide(self) -> None:
        self.showing = False

    # -- saving ----------------------------------------------------------------------------------
    def save(self) -> threading.Thread | None:
        """Save the last result as the next version of the name given; its parent is the version its
        training started from. A result is saved once: a second Save says where it already is."""
        from ..store.records import check_name

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
        """Stop a training in this kernel; a job goes on (only this tab stops following it)."""
        if self.trainer is not None:
            self.trainer.stop()
        if self.follower is not None:
            self.follower.detach()
        self.jobs_list.close()
        super().close()


def _all_text(total: int | None) -> str:
    """ "all (50,000)": what 0 training images (all of them) reads as; "all" while the count is unknown."""
    return "all" if total is None else f"all ({total:,})"


def parse_train_images(text: str) -> int:
    """The train-images box's text as a number: "all", "all (50,000)", nothing or 0 mean all (0);
    "1000", "1,000" or "1 000" that many."""
    cleaned = text.strip().lower()
    if not cleaned or cleaned.startswith("all"):
        return 0
    digits = re.sub(r"[,_ ]", "", cleaned)
    if not re.fullmatch(r"[0-9]+", digits):
        raise BadParameter("Train images", f"{text.strip()!r} is not a number of images: write one, or all")
    return int(digits)


def _narrow() -> dict[str, Any]:
    """Arguments for a short labelled number box whose label is never cut."""
    return {"layout": w.Layout(width="auto", min_width="200px"), "style": {"description_width": "initial"}}


def _wrap() -> w.Layout:
    """A row that wraps onto a second line rather than being cut at a narrow notebook's edge."""
    return w.Layout(flex_flow="row wrap")


def _number(value: float) -> str:
    """1.53, 2 (not 2.00)."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _job_waiting(job: dict[str, Any]) -> str:
    """What the status says when the tab attaches to a job, before its events come."""
    state, short = job["state"], job["id"][:6]
    if state == "queued":
        return f"job {short} is queued: it starts when the jobs before it have ended"
    if state in ACTIVE:
        return f"job {short} is {state}: reading its progress…"
    return f"job {short} is {state}: reading its history…"
