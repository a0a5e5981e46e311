"""The Classify tab's photo loop: correct a wrong answer, see the set grow, evaluate on it, fine-tune on it.

:class:`CorrectionRow` sits under a result card: "wrong? it is [label ▾] keep" puts the photo, its
right label, the version that answered and what it answered into the session's photo set. The card keeps
its prediction and confidence in view, and a kept choice stays shown when the cards are drawn again (a
new model in hand classifies them again). :class:`PhotoSetBar` names the set, counts it per class, and
runs "Evaluate on my photos" (the same views as the Train tab's evaluation) and "Fine-tune on my photos"
(:func:`jupyter_cifar.photos.finetune.finetune`, in this kernel), saving the new version with its
before/after figures and putting it in hand.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from typing import Any

import ipywidgets as w
import numpy as np

from .common import ErrorArea, button, guarded, in_background, label
from .session import Session


class CorrectionRow(w.VBox):
    """ "wrong? it is [label ▾] keep" for one classified photo."""

    def __init__(
        self,
        session: Session,
        data: bytes,
        name: str,
        predicted: str,
        class_names: Sequence[str],
        errors: ErrorArea,
        kept: str | None = None,
        on_kept: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(layout=w.Layout(margin="4px 0 0 0"))
        self.session, self.data, self.name, self.predicted = session, data, name, predicted
        self.errors, self.on_kept = errors, on_kept
        self.choice = w.Dropdown(
            options=list(class_names), value=kept or predicted, layout=w.Layout(width="110px")
        )
        self.choice.add_class("jc-correct-label")
        self.keep = button(
            "keep", "jc-correct-keep", tooltip="keep this photo with this label in the photo set"
        )
        self.keep.layout.width = "64px"
        self.keep.on_click(guarded(errors)(lambda _: self.save()))
        self.status = label("", "jc-correct-status", max_width="250px")
        self.status.add_class("jc-wrap")
        self.children = [
            w.HBox([label("wrong? it is", "jc-correct-ask"), self.choice, self.keep]),
            self.status,
        ]
        self.add_class("jc-correct")
        if kept is not None:
            self._show_kept(kept)

    def save(self) -> Any:
        chosen = self.choice.value
        session = self.session
        record = session.record
        wrong = chosen != self.predicted

        def work() -> Any:
            return session.photos().add(
                self.data, chosen, set=session.photo_set, filename=self.name, origin="correction",
                wrong_version=record.ref if wrong and record is not None else None,
                predicted=self.predicted if wrong else None,
            )  # fmt: skip

        def done(_: Any) -> None:
            self._show_kept(chosen)
            if self.on_kept is not None:
                self.on_kept(chosen)
            session.photos_changed = object()

        return in_background(work, done=done, errors=self.errors, busy=[self.keep, self.choice])

    def _show_kept(self, chosen: str) -> None:
        verdict = "" if chosen == self.predicted else f" (it said {self.predicted})"
        self.status.value = f"✓ kept as {chosen}{verdict}"
        self.status.tooltip = f"in the photo set {self.session.photo_set}"


class PhotoSetBar(w.VBox):
    """The photo set: its name and counts, and what can be done with it."""

    def __init__(self, session: Session, errors: ErrorArea) -> None:
        super().__init__()
        self.session, self.errors = session, errors
        self.set_name = w.Text(  # read when typing ends (Enter, or leaving the box), not at each key
            value=session.photo_set, description="Photo set", continuous_update=False,
            layout=w.Layout(width="260px"),
        )  # fmt: skip
        self.set_name.add_class("jc-photos-set")
        self.set_name.observe(guarded(errors)(self._on_set_name), names="value")
        self.counts = label("", "jc-photos-counts")
        self.counts.add_class("jc-wrap")  # ten classes' counts, or the hint: wrapped, never clipped
        self.evaluate_button = button(
            "Evaluate on my photos",
            "jc-photos-evaluate",
            icon="check",
            tooltip="the model in hand on the set",
        )
        self.finetune_button = button(
            "Fine-tune on my photos", "jc-photos-finetune", icon="graduation-cap",
            tooltip="train the model in hand further on the set, with CIFAR-10 replay: a new version",
        )  # fmt: skip
        for wide in (self.evaluate_button, self.finetune_button):
            wide.layout.width = "200px"
        self.epochs = w.BoundedIntText(4, min=1, max=50, description="Epochs", layout=w.Layout(width="130px"))
        self.epochs.add_class("jc-photos-epochs")
        self.save_as = w.Text(value="", placeholder="save as NAME", layout=w.Layout(width="180px"))
        self.save_as.add_class("jc-photos-save-as")
        self.status = label("", "jc-photos-status", max_width="900px")
        self.status.add_class("jc-wrap")
        self.output = w.VBox()
        self.output.add_class("jc-photos-output")
        self.evaluate_button.on_click(guarded(errors)(lambda _: self.evaluate()))
        self.finetune_button.on_click(guarded(errors)(lambda _: self.finetune()))
        session.observe(lambda _: self.refresh(), names="photos_changed")
        session.observe(self._on_model, names="model_changed")
        self.children = [
            w.HBox([self.set_name, self.counts], layout=w.Layout(align_items="center")),
            w.HBox(
                [self.evaluate_button, self.finetune_button, self.epochs, self.save_as],
                layout=w.Layout(flex_flow="row wrap"),
            ),
            self.status,
            self.output,
        ]
        self.add_class("jc-photos")
        self._on_model({})

    def _busy(self) -> list[w.Widget]:
        return [self.evaluate_button, self.finetune_button]

    def _on_set_name(self, change: dict[str, Any]) -> None:
        from ..photos.records import check_set

        name = change["new"].strip()
        check_set(name)
        self.session.photo_set = name
        self.refresh()

    def _on_model(self, _change: dict[str, Any]) -> None:
        record = self.session.record
        if record is not None and not self.save_as.value:
            self.save_as.value = record.name if record.name.endswith("-photos") else f"{record.name}-photos"

    def refresh(self) -> Any:
        """Count the set's photos per class (in the background)."""
        session = self.session

        def done(counts: dict[str, int]) -> None:
            total = sum(counts.values())
            by_class = ", ".join(f"{n} {name}" for name, n in counts.items())
            self.counts.value = (
                f"{total} photo{'' if total == 1 else 's'}: {by_class}"
                if total
                else "no photos yet: keep a corrected answer below, or `jupyter cifar photos add`"
            )

        return in_background(
            lambda: session.photos().counts(session.photo_set), done=done, errors=self.errors
        )

    def _model(self) -> Any:
        model = self.session.model
        if model is None:
            raise RuntimeError("no model yet: train one in the Train tab, or load one in the Models tab")
        return model

    def evaluate(self) -> Any:
        """The model in hand on the set: accuracy, per class, confusion, the most confidently wrong."""
        from ..photos.finetune import evaluate_photos
        from ..photos.labelled import set_photos

        model, session = self._model(), self.session
        by, plan = session.model_label, session.view_plan
        self.status.value = f"evaluating {by} on {session.photo_set}…"

        def work() -> tuple[Any, list[str]]:
            found = set_photos(session.photos(), session.photo_set)
            result = evaluate_photos(model, found, plan=plan)
            return result, _worst_pictures(found, result.rows, result.evaluation.worst)

        def done(out: tuple[Any, list[str]]) -> None:
            from .evaluation import evaluation_views

            result, pictures = out
            ev = result.evaluation
            skipped = f"; {len(result.skipped)} photo(s) could not be read" if result.skipped else ""
            self.status.value = (
                f"{by}: accuracy {ev.accuracy:.4f} on {ev.n} photos of {session.photo_set}{skipped}"
            )
            self.output.children = evaluation_views(ev.to_json(), pictures)

        return in_background(work, done=done, errors=self.errors, busy=self._busy())

    def finetune(self) -> Any:
        """Fine-tune the version in hand on the set and save the result as a new version: as a job where
        the server runs jobs, else in this kernel."""
        from ..photos.finetune import finetune
        from ..photos.labelled import set_photos
        from ..store.records import check_name

        model, session = self._model(), self.session
        record = session.record
        if record is None:
            raise RuntimeError(
                "save the model first (the Train tab's Save, or load a version in the Models tab)"
            )
        name = check_name(self.save_as.value.strip(), "save as")
        epochs = self.epochs.value
        self.status.value = f"fine-tuning {record.ref} on {session.photo_set}: loading CIFAR-10 for replay…"

        first_epoch = len(session.history)

        def on_event(event: dict[str, Any]) -> None:
            if event.get("type") == "batch":
                epoch = event["epoch"] - first_epoch
                self.status.value = (
                    f"fine-tuning {record.ref} on {session.photo_set}: epoch {epoch}/{epochs}, "
                    f"batch {event['batch']}/{event['batches']}"
                )

        def in_kernel() -> tuple[dict[str, Any], Any, Any]:
            found = set_photos(session.photos(), session.photo_set)
            data = session.data()
            preset = record.metadata.get("preset")
            result = finetune(
                model, found, data, preset=preset if isinstance(preset, str) else "fast", epochs=epochs,
                history=session.history, parent=record.ref, views=session.view_plan, on_event=on_event,
            )  # fmt: skip
            saved = session.store().save(result.model, name, metadata=result.metadata())
            return result.summary(), saved, result.model

        def as_job(jobs: Any) -> tuple[dict[str, Any], Any, Any]:
            """On the Jupyter server, which runs jobs: it goes on if this notebook closes (the Train
            tab's jobs list shows it too)."""
            from ..jobs.follow import follow

            spec = {"parent": record.ref, "photos": session.photo_set, "epochs": epochs, "save": name}
            job = jobs.submit(spec)
            self.status.value = f"fine-tuning {record.ref} on {session.photo_set} as job {job['id']}: queued"
            for event in follow(jobs, job["id"], wait=10):
                on_event(event)
            job = jobs.get(job["id"])
            if job["state"] != "finished" or not job["model"]:
                raise RuntimeError(f"the fine-tuning job {job['id']} {job['state']}: {job['error'] or ''}")
            store = session.store()
            saved = store.resolve(job["model"])
            return saved.metadata.get("finetune") or {}, saved, store.load(saved.ref)

        def work() -> tuple[dict[str, Any], Any, Any]:
            jobs = session.jobs()
            return as_job(jobs) if jobs is not None else in_kernel()

        def done(out: tuple[dict[str, Any], Any, Any]) -> None:
            summary, saved, trained = out
            b, a = summary["before"], summary["after"]
            self.status.value = (
                f"saved {saved.ref} (from {record.ref}), fine-tuned on {summary['photos_used']} photos: "
                f"{summary['held_out']} held-out photos {b['photos']:.1%} → {a['photos']:.1%}, "
                f"CIFAR-10 test {b['test']:.1%} → {a['test']:.1%} "
                f"({summary['negative_flips']} test images it no longer gets right)"
            )
            session.set_model(trained, record=saved)
            session.notify_store_changed()

        return in_background(work, done=done, errors=self.errors, busy=self._busy())


def _worst_pictures(
    found: Any, rows: Sequence[int], worst: list[dict[str, Any]], count: int = 8
) -> list[str]:
    """The most confidently wrong photos as small base64 PNGs (the evaluation's ``worst`` order; ``rows``:
    which photo of ``found`` each evaluated one is)."""
    import base64

    from PIL import Image

    from ..engine.images import load_image

    pictures = []
    for item in worst[:count]:
        pixels = load_image(found.sources[rows[item["index"]]], size=(36, 36), fit="crop")
        buffer = io.BytesIO()
        Image.fromarray(np.asarray(pixels)).save(buffer, "PNG")
        pictures.append(base64.b64encode(buffer.getvalue()).decode("ascii"))
    return pictures
