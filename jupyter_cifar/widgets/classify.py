"""The Classify tab: upload many images at once and see each one's picture and top-3 labels as bars.

A file that cannot be read shows its error in place; the others are still classified. Example images
from the test set are one click away. Uploads go through :class:`~.upload.ImageUpload`, which sends each
file on its own and names any file too large for the kernel's websocket instead of losing it; a file
over the image decoder's limits gets that decoder's message: never an empty result.
"""

from __future__ import annotations

import io
import random
import threading
from collections.abc import Sequence
from typing import Any

import ipywidgets as w
import numpy as np

from ..engine.data import CLASS_NAMES
from .common import ErrorArea, button, guarded, in_background, label
from .photos import CorrectionRow, PhotoSetBar
from .session import Session
from .upload import ImageUpload, Uploaded

THUMBNAIL = 96
CURRENT = "the current model (trained or loaded here)"


def _thumbnail(data: bytes | np.ndarray, heatmap: np.ndarray | None = None) -> bytes | None:
    """A small PNG of the whole picture (the model looks at all of it, in several views), with
    ``heatmap`` (0..1, any size) coloured over it when given: where the model saw its answer.

    Decoded by :func:`jupyter_cifar.engine.images.load_image`, so a thumbnail has every protection the
    classifier has (accepted formats only, pixel and memory bounds). None if it cannot be drawn.
    """
    from PIL import Image

    from ..engine.images import WITHIN, load_image
    from ..errors import ImageError

    try:
        pixels = load_image(data, name="upload", size=(THUMBNAIL * 2, THUMBNAIL * 2), fit=WITHIN)
    except ImageError:
        return None
    if heatmap is not None:
        from ..engine.explain import overlay

        heat = Image.fromarray(np.asarray(heatmap, np.float32)).resize(
            (pixels.shape[1], pixels.shape[0]), Image.Resampling.BILINEAR
        )
        pixels = overlay(pixels, np.clip(np.asarray(heat), 0, 1))
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def result_card(
    name: str,
    picture: bytes | None,
    top: Sequence[dict[str, Any]],
    error: str | None,
    truth: str | None = None,
    extra: Sequence[w.Widget] = (),
) -> w.VBox:
    """One file: its picture, then its top labels as probability bars, or its error (wrapped, in red).

    ``truth``, where the right answer is known (an example from the test set), adds whether the top
    label is right; ``extra`` goes last (the correction row).
    """
    children: list[w.Widget] = []
    if picture is not None:
        children.append(w.Image(value=picture, format="png", layout=w.Layout(width=f"{THUMBNAIL}px")))
    children.append(label(name, "jc-classify-file", max_width="250px"))
    if error is not None:
        children.append(label(error, "jc-classify-error", max_width="250px"))
    if truth is not None and top:
        right = top[0]["label"] == truth
        verdict = f"✓ right: it is a {truth}" if right else f"✗ wrong: it is a {truth}"
        children.append(label(verdict, "jc-classify-right" if right else "jc-classify-wrong"))
    for item in top:
        bar = w.FloatProgress(
            value=item["probability"], min=0, max=1, layout=w.Layout(width="120px"), bar_style="info"
        )
        text = label(f"{item['label']} {item['probability']:.1%}", "jc-classify-label")
        children.append(w.HBox([bar, text]))
    children.extend(extra)
    card = w.VBox(
        children, layout=w.Layout(margin="6px", padding="6px", border="1px solid #ddd", width="270px")
    )
    card.add_class("jc-classify-item")
    if error is not None:
        card.layout.border = "1px solid #d9534f"
        card.add_class("jc-classify-error-card")
    return card


class ClassifyPanel(w.VBox):
    """Image upload classifier (see the module's doc)."""

    def __init__(self, session: Session) -> None:
        super().__init__()
        self.session = session
        self.errors = ErrorArea()
        self.model_label = label("", "jc-classify-model")
        # Which model classifies: the one in hand (trained here or loaded), or any version in the store.
        self.chooser = w.Dropdown(
            options=[(CURRENT, "")],
            value="",
            description="Model",
            layout=w.Layout(width="420px"),
        )
        self.chooser.add_class("jc-classify-chooser")
        self.chooser.observe(guarded(self.errors)(self._on_choose), names="value")
        session.observe(lambda _: self.refresh_choices(), names="store_changed")
        self.upload = ImageUpload(on_files=guarded(self.errors)(self._on_files))
        self.upload.add_class("jc-classify-upload")
        self.examples = button(
            "Examples", "jc-classify-examples", icon="image", tooltip="8 random test images"
        )
        self.top = w.BoundedIntText(3, min=1, max=10, description="Top", layout=w.Layout(width="140px"))
        self.heatmaps = w.Checkbox(
            False, description="show where it looked", indent=False, layout=w.Layout(width="180px")
        )
        self.heatmaps.add_class("jc-classify-heatmaps")
        self.heatmaps.observe(guarded(self.errors)(self._on_heatmaps), names="value")
        self.photos = PhotoSetBar(session, self.errors)
        self._kept: dict[int, str] = {}  # a card's kept correction, by position, shown when cards are redrawn
        self.results = w.HBox(layout=w.Layout(flex_flow="row wrap"))
        self.results.add_class("jc-classify-results")
        self.results_by = label("", "jc-classify-by")
        self._shown: tuple[Any, ...] | None = None  # what the cards show, to classify again
        self.examples.on_click(guarded(self.errors)(lambda _: self.classify_examples()))
        self._quiet = False
        session.observe(self._on_model, names="model_changed")
        self._on_model({})
        self.children = [
            self.model_label,
            self.chooser,
            w.HBox(
                [self.upload, self.examples, self.top, self.heatmaps],
                layout=w.Layout(flex_flow="row wrap", align_items="center"),
            ),
            self.photos,
            self.results_by,
            self.results,
            self.errors,
        ]
        self.add_class("jc-classify")

    def _on_model(self, _change: dict[str, Any]) -> None:
        record = self.session.record
        if self.chooser.value and (record is None or record.ref != self.chooser.value):
            self._quiet = True  # another model came into hand: the chooser shows it as "in hand"
            try:
                self.chooser.value = ""
            finally:
                self._quiet = False
        label_text = self.session.model_label
        self.model_label.value = (
            f"model: {label_text}"
            if self.session.model is not None
            else "no model yet: train one in the Train tab, or load one in the Models tab"
        )
        if self._shown is not None and self.session.model is not None:
            self.classify(*self._shown)  # the cards always show what the model in hand says

    def refresh_choices(self) -> threading.Thread:
        """List the store's newest versions in the chooser, and count the photo set (in the background)."""
        session = self.session
        self.photos.refresh()

        def done(page: Any) -> None:
            choices = [(CURRENT, "")]
            for r in page.items:
                accuracy = "" if r.test_accuracy is None else f" (test accuracy {r.test_accuracy:.4f})"
                choices.append((f"{r.ref}{accuracy}", r.ref))
            self._quiet = True
            try:
                self.chooser.options = choices
                self.chooser.value = ""
            finally:
                self._quiet = False

        return in_background(lambda: session.store().list(limit=50), done=done, errors=self.errors)

    def _on_choose(self, change: dict[str, Any]) -> None:
        ref = change["new"]
        if not ref or getattr(self, "_quiet", False):
            return
        session = self.session
        self.model_label.value = f"loading {ref}…"

        def done(loaded: tuple[Any, Any]) -> None:
            model, record = loaded
            session.set_model(model, record=record)

        def work() -> tuple[Any, Any]:
            store = session.store()
            return store.load(ref), store.resolve(ref)

        in_background(work, done=done, errors=self.errors, busy=[self.chooser, self.upload, self.examples])

    def _class_names(self) -> Sequence[str]:
        return self.session.class_names or CLASS_NAMES

    def _on_files(self, files: list[Uploaded]) -> None:
        refused = {i: f.error for i, f in enumerate(files) if f.content is None}
        self._kept = {}
        self.classify([f.content or b"" for f in files], [f.name for f in files], refused=refused)

    def _on_heatmaps(self, _change: dict[str, Any]) -> None:
        if self._shown is not None and self.session.model is not None:
            self.classify(*self._shown)

    def classify(
        self,
        sources: Sequence[Any],
        names: Sequence[str],
        refused: dict[int, str | None] | None = None,
        truths: Sequence[str] | None = None,
    ) -> threading.Thread:
        """Classify in the background and show one card per source, in order, under the name of the
        model that classified them; a model coming into hand later classifies them again.

        ``refused`` gives, by position, the sources that never arrived and why: they get an error card.
        ``truths`` gives the right labels where they are known (examples from the test set).
        """
        model = self.session.model
        if model is None:
            raise RuntimeError("no model yet: train one in the Train tab, or load one in the Models tab")
        from ..engine.predict import classify

        top, class_names, by = self.top.value, self._class_names(), self.session.model_label
        heatmaps, session, corrections = self.heatmaps.value, self.session, self._kept
        plan = session.view_plan
        self._shown = (sources, names, refused, truths)
        self.results_by.value = f"classifying {len(sources)} image(s) with {by}…"
        self.results.children = []

        missing = refused or {}
        kept = [i for i in range(len(sources)) if i not in missing]
        notes: list[str] = []

        def work() -> list[w.VBox]:
            results = classify(
                model,
                [sources[i] for i in kept],
                top=top,
                names=[names[i] for i in kept],
                class_names=class_names,
                plan=plan,
            )
            maps: dict[int, Any] = {}
            if heatmaps:
                from ..engine.explain import explain
                from ..errors import BadParameter

                good = [(i, r) for i, r in zip(kept, results, strict=True) if r.ok]
                answered = [class_names.index(r.top[0]["label"]) for _, r in good]
                try:
                    found = explain(model, [sources[i] for i, _ in good], class_index=answered)
                except BadParameter as e:  # a model without a map to show (no convolution): say so
                    notes.append(f"no heatmaps: {e}")
                    found = []
                maps = {i: m for (i, _), m in zip(good, found, strict=False) if isinstance(m, np.ndarray)}

            def correction(i: int, r: Any) -> list[w.Widget]:
                if (
                    not r.ok
                    or not isinstance(sources[i], bytes | bytearray)
                    or tuple(class_names) != CLASS_NAMES
                ):
                    # Only a photo's own bytes (not a test-set example) go into a photo set, labelled
                    # with CIFAR-10's classes (a model of other classes has nothing to correct it to).
                    return []

                def remember(chosen: str) -> None:
                    corrections[i] = chosen

                return [
                    CorrectionRow(
                        session, bytes(sources[i]), names[i], r.top[0]["label"], class_names, self.errors,
                        kept=corrections.get(i), on_kept=remember,
                    )
                ]  # fmt: skip

            cards = {
                i: result_card(
                    r.file,
                    None if r.error else _thumbnail(sources[i], maps.get(i)),
                    r.top,
                    r.error,
                    truths[i] if truths is not None else None,
                    extra=correction(i, r),
                )
                for i, r in zip(kept, results, strict=True)
            }
            for i, error in missing.items():
                cards[i] = result_card(names[i], None, [], error or f"{names[i]}: not received")
            return [cards[i] for i in range(len(sources))]

        def done(cards: list[w.VBox]) -> None:
            if self.session.model is not model:
                return  # another model came into hand meanwhile: its own run draws the cards
            self.results.children = cards
            self.results_by.value = "; ".join([f"classified by {by}", *notes])

        return in_background(work, done=done, errors=self.errors, busy=[self.examples])

    def classify_examples(self, count: int = 8) -> threading.Thread:
        session = self.session

        def pick() -> tuple[list[np.ndarray], list[str], list[str]]:
            data = session.data()
            rng = random.Random()
            chosen = rng.sample(range(len(data.x_test)), count)
            names = [f"test image #{i}" for i in chosen]
            truths = [data.class_names[data.y_test[i]] for i in chosen]
            return [data.x_test[i] for i in chosen], names, truths

        def go(picked: tuple[list[np.ndarray], list[str], list[str]]) -> None:
            sources, names, truths = picked
            self._kept = {}
            self.classify(sources, names, truths=truths)

        if session.model is None:
            raise RuntimeError("no model yet: train one in the Train tab, or load one in the Models tab")
        return in_background(pick, done=go, errors=self.errors)
