"""The Train tab: choose a recipe, start, watch live curves, stop, continue, look at the result, save.

Training runs in the trainer's background thread; its events update the tab's progress
(:mod:`~jupyter_cifar.widgets.progress`: bars, status, curves on the model's epochs-of-training axis) from
that thread. Continue trains the model in hand further as the network it is, with the form's values
(:mod:`~jupyter_cifar.widgets.recipe`), which show its own recipe when it comes into hand; the tab says
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

import threading
import time
from typing import TYPE_CHECKING, Any

import ipywidgets as w

from ..engine.history import epochs_done, epochs_text
from ..errors import BadParameter
from ..jobs.records import ACTIVE
from .common import ErrorArea, button, guarded, in_background, label, parse_tags, row_layout, text_html
from .curves import MAX_POINTS, Curve
from .evaluation import evaluation_views
from .jobs import SHOWN, JobsList
from .progress import TrainingProgress
from .recipe import RecipeForm
from .session import Session

if TYPE_CHECKING:
    from ..engine.training import TrainConfig, Trainer, TrainResult
    from ..jobs.client import JobClient
    from ..jobs.follow import JobFollower
    from ..store.records import ModelRecord

__all__ = ["MAX_POINTS", "Curve", "TrainPanel"]

SUBMIT_GAP = 1.0  # seconds: a second click on Start within this is the same click (a double click)


class TrainPanel(w.VBox):
    """Training control with live curves (see the module's doc)."""

    def __init__(self, session: Session, *, shown: bool = True) -> None:
        super().__init__()
        self.session = session
        # Figures reach the page only while the tab is shown (see TrainingProgress)
        self.showing = shown
        self._pending: list[w.Widget] | None = None  # a result's figures, kept until the tab is shown
        self.trainer: Trainer | None = None  # a training in this kernel
        self.follower: JobFollower | None = None  # the job the tab is attached to
        self.job_client: JobClient | None = None  # the server's jobs, when it runs them
        self.result: TrainResult | None = None
        self.saved_record: ModelRecord | None = None  # the version self.result was saved as, if it was
        self._busy = False  # from a click on Start or Continue until that training has ended
        self._drawn: Any = None  # the model whose training the curves show
        self._evaluation: dict[str, Any] | None = None
        self._end: dict[str, Any] | None = None
        self._last_submit = 0.0
        self._lock = threading.Lock()
        self.errors = ErrorArea()
        self.form = RecipeForm(session, self.errors, on_change=self._update_continue)
        self.progress = TrainingProgress(shown=shown)
        self.status = self.progress.status  # the tab's own messages go on the same line

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

        self.save_name.observe(self._on_name, names="value")
        session.observe(self._on_model_changed, names="model_changed")

        self.save_rows = [
            w.HBox([self.save_name, self.save_tags, self.save_button], layout=row_layout()),
            self.name_hint,
            self.save_notes,
        ]
        self.buttons = w.HBox([self.start_button, self.stop_button, self.continue_button])
        self._arrange()
        self.add_class("jc-train")

    @property
    def queues_jobs(self) -> bool:
        """Start and Continue queue a job on the server ('as a job' ticked, and the server runs jobs)."""
        return bool(self.as_job.value) and self.job_client is not None

    @property
    def run(self) -> Any:
        """What the curves show: the trainer here or the job's follower (None before the first)."""
        return self.progress.run

    def _arrange(self) -> None:
        """The tab's rows: as a job, what it saves as is said before Start (the job saves it)."""
        as_job = self.queues_jobs
        running = [
            self.buttons,
            self.continue_note,
            self.jobs_list,
            self.progress.bars,
            self.status,
            self.progress.figure_row,
            self.progress.legend,
            self.result_label,
            self.result_box,
        ]
        form = [*self.form.rows, self.as_job]
        self.save_button.layout.display = "none" if as_job else None
        if as_job:
            self.job_note.value = (
                "The job saves its model when it ends, as the next version of the name above (none: "
                "job-<its id>), with these tags and notes."
            )
            self.children = [*form, *self.save_rows, self.job_note, *running, self.saved, self.errors]
        else:
            self.children = [*form, *running, *self.save_rows, self.saved, self.errors]
        self._update_continue()

    # -- the form ----------------------------------------------------------------------------------
    def _on_model_changed(self, _change: dict[str, Any]) -> None:
        """A model came into hand: the form shows its recipe (unless a training is running)."""
        if not self._busy and self.session.model is not None:
            self.form.show_recipe(self.session.recipe)
        self.form.show_limit()  # the data may have been loaded meanwhile: "all" gets its count
        self._update_continue()

    def _update_continue(self) -> None:
        """Whether Continue can train the model in hand, and with what: said beside the button."""
        as_job = self.queues_jobs
        allowed, note, warn = self.form.continue_advice(as_job)
        colour = "#8a4b00" if note and warn else "inherit"
        self.continue_note.value = f'<div style="color:{colour}">{text_html(note)}</div>' if note else ""
        self.continue_button.disabled = self._busy or not allowed

    def _on_name(self, change: dict[str, Any]) -> None:
        from ..store.records import check_name

        self.name_hint.value = ""
        if change["new"].strip():
            try:
                check_name(change["new"].strip())
            except BadParameter as e:
                self.name_hint.value = str(e).removeprefix("name: ")

    def continue_config(self) -> TrainConfig:
        """What Continue trains (see :meth:`RecipeForm.continue_config`)."""
        return self.form.continue_config()

    # -- driving ---------------------------------------------------------------------------------
    def start(self, continue_training: bool = False) -> threading.Thread | None:
        """Start (or Continue): a job on the server when that is chosen, else a training here.

        A click while a training is starting or running here, or within a second of queueing a job,
        does nothing: a double click starts one.
        """
        if self.queues_jobs:
            return self._submit(continue_training)
        if self._busy:
            return None
        config = self.continue_config() if continue_training else self.form.config()
        session = self.session
        self._busy = True
        for widget in (self.start_button, self.continue_button, self.save_button):
            widget.disabled = True
        self.saved.value = ""
        self.status.value = "loading CIFAR-10…"
        model, history, parent = session.model, session.history, session.origin

        def launch() -> None:
            from ..engine.training import Trainer

            try:
                data = session.data(progress=lambda message: setattr(self.status, "value", message))
                self.form.show_limit()  # "all" now says how many
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
        """Nothing trains here: the buttons come back, Start last (whoever waits on it, a test or a
        script driving the panel, then finds Save and Continue as they will stay)."""
        self._busy = False
        self.save_button.disabled = self.result is None or self.saved_record is not None
        self._update_continue()
        self.start_button.disabled = False

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
        self.progress.follow(run, keep=keep, prior=prior)
        self._evaluation = self._end = None
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
        self.form.show_spec(job["spec"])
        self.jobs_list.select(job["id"])
        self.jobs_list.update(job)
        self.stop_button.disabled = job["state"] not in ACTIVE
        self.status.value = _job_waiting(job)
        follower.start()

    def _submit(self, continue_training: bool) -> threading.Thread | None:
        """Queue the form's training as a job on the server, and attach to it."""
        from ..store.records import check_name

        now = time.monotonic()
        if self._busy or now - self._last_submit < SUBMIT_GAP:
            return None
        config = self.continue_config() if continue_training else self.form.config()
        session, client = self.session, self.job_client
        assert client is not None
        name = self.save_name.value.strip()
        spec: dict[str, Any] = {
            "preset": config.preset,
            "epochs": config.epochs,
            "minutes": config.minutes,
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
            self.progress.on_end()
        self.jobs_list.update(job)
        self.stop_button.disabled = True
        state, end = job["state"], self._end
        if state in ("finished", "stopped") and job.get("model"):
            if state == "finished":
                self.progress.complete()
            self.status.value = self.progress.ended_text(state, end)
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
                self.progress.on_start(event)
                with self.hold_sync():
                    self.result_label.value = ""
                    self.result_box.layout.display = "none"
            elif kind == "batch":
                self.progress.on_batch(event)
            elif kind == "epoch":
                self.progress.on_epoch(event)
            elif kind == "evaluation":
                self._on_evaluation(event)
            elif kind == "end":
                self._on_end(event)

    def _on_evaluation(self, event: dict[str, Any]) -> None:
        self.status.value = "evaluating on the test images…"
        self._evaluation = event

    def _on_end(self, event: dict[str, Any]) -> None:
        self.progress.on_end()
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

    def _finished(self, result: TrainResult, event: dict[str, Any]) -> None:
        self.result, self.saved_record = result, None
        if event["status"] == "finished":
            self.progress.complete()
        self.status.value = self.progress.ended_text(event["status"], event)
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
        self.form.show_limit()
        self.progress.show()
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


def _job_waiting(job: dict[str, Any]) -> str:
    """What the status says when the tab attaches to a job, before its events come."""
    state, short = job["state"], job["id"][:6]
    if state == "queued":
        return f"job {short} is queued: it starts when the jobs before it have ended"
    if state in ACTIVE:
        return f"job {short} is {state}: reading its progress…"
    return f"job {short} is {state}: reading its history…"
