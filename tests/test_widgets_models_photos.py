"""The Models tab's details table and its accuracy on a photo set; the Train tab's "all (N)" train images.

As in test_widgets.py: the panels live in this process against a real embedded store (real models, real
photos in it), callbacks are called as a click would call them, and the tests read what the browser
would draw.
"""

from __future__ import annotations

import html
import io
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from polling import wait_for
from storetools import tiny_model

from jupyter_cifar.engine.views import DEFAULT_PLAN, ViewPlan
from jupyter_cifar.photos import open_photo_store
from jupyter_cifar.photos.finetune import evaluate_photos
from jupyter_cifar.photos.labelled import set_photos
from jupyter_cifar.widgets import App
from jupyter_cifar.widgets.common import NO_MATH, epoch_ticks
from jupyter_cifar.widgets.models import NO_PHOTO_SETS
from jupyter_cifar.widgets.recipe import parse_train_images

HISTORY = [
    {"epoch": 1, "loss": 1.5, "accuracy": 0.45, "val_loss": 1.3, "val_accuracy": 0.52, "complete": True},
    {"epoch": 2, "loss": 1.1, "accuracy": 0.61, "val_loss": 1.2, "val_accuracy": 0.58, "complete": True},
]


@pytest.fixture
def bare_app(tmp_path: Path):
    """The app on an empty embedded store, with no dataset."""
    app = App(store=str(tmp_path / "store"))
    yield app
    app.close()


class _Table(HTMLParser):
    """The tags of a details table and the text of its cells (entities decoded: what a person reads)."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.cells: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))
        if tag == "span":
            self.cells.append("")

    def handle_data(self, data: str) -> None:
        if self.cells:
            self.cells[-1] += data


def table(markup: str) -> dict[str, str]:
    """The details table's rows, {key: value}, after checking it is plain markup: divs and spans, no
    handlers, inside an element MathJax skips."""
    parsed = _Table()
    parsed.feed(markup)
    assert {tag for tag, _ in parsed.tags} == {"div", "span"}, parsed.tags
    assert not any(name.startswith("on") for _, attrs in parsed.tags for name, _ in attrs)
    assert all(c in parsed.tags[0][1][0][1] for c in NO_MATH)  # the div's class
    assert len(parsed.cells) % 2 == 0, parsed.cells
    keys, values = parsed.cells[::2], parsed.cells[1::2]
    assert len(set(keys)) == len(keys), keys  # each thing once
    return dict(zip(keys, values, strict=True))


def jpeg(seed: int, size: tuple[int, int] = (48, 40)) -> bytes:
    """A small JPEG of noise, different for each seed (the same bytes twice would be one photo)."""
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=90)
    return out.getvalue()


# -- the details table ---------------------------------------------------------------------------------


def test_details_are_a_key_value_table_of_escaped_text(bare_app: App) -> None:
    store = bare_app.session.store()
    model = tiny_model()
    record = store.save(
        model, "cnn", tags={"who": "<i>me</i>"}, notes="<b>not bold</b> & <script>x</script>",
        metadata={
            "preset": "tutorial", "history": HISTORY, "test_accuracy": 0.7866,
            "hyperparameters": {"batch_size": 32, "learning_rate": 0.001},
            "dataset": {"n_train": 50000}, "parent": "<b>old</b>:1",
            "input_scaling": "Rescaling(1/255) <added>",
        },
    )  # fmt: skip
    store.set_alias(record.ref, "prod")
    record = store.resolve(record.ref)
    models = bare_app.models
    models.select(record)
    rows = table(models.details.value)
    assert rows["version"] == "cnn:1" and rows["aliases"] == "prod"
    assert rows["created"].endswith(" UTC by " + record.metadata["saved_by"])
    assert rows["created"].startswith(record.created[:10])
    assert rows["test accuracy"] == "0.7866"
    assert rows["preset"] == "tutorial" and rows["epochs of training"] == "2 epochs"
    assert rows["last run"] == "batch_size 32, learning_rate 0.001"
    assert rows["training images"] == "50,000"
    assert rows["parameters"] == f"{model.count_params():,}"
    assert rows["input"] == "32x32x3"
    assert rows["size"].endswith(("KB", "MB", "bytes")) and rows["sha256"] == record.sha256[:16] + "…"
    assert rows["architecture"] == "tiny"
    # Text from the store is shown as the text it is: a person reads the tags literally ...
    assert rows["continued from"] == "<b>old</b>:1" and rows["input scaling"] == "Rescaling(1/255) <added>"
    # ... because the markup holds it escaped, never as tags.
    assert html.escape("<b>old</b>:1") in models.details.value and "<b>old" not in models.details.value
    assert "font-weight:bold;color:#666" in models.details.value  # keys bold and grey
    # Notes and tags are shown once, where they are edited, verbatim (a Textarea and a Text are text).
    assert models.notes.value == "<b>not bold</b> & <script>x</script>"
    assert models.tags.value == "who=<i>me</i>"
    assert "not bold" not in models.details.value and "who" not in rows
    assert models.errors.value == ""


def test_a_fine_tuned_version_shows_before_and_after(bare_app: App) -> None:
    store = bare_app.session.store()
    finetune = {
        "photos": "the set my-photos", "photos_used": 560, "held_out": 140,
        "before": {"photos": 0.43, "test": 0.7866}, "after": {"photos": 0.71, "test": 0.7801},
        "negative_flips": 123, "skipped": [],
        "views": {"chosen": "contrast, whole frame x1", "chosen_on": 560, "before_photos": 0.52,
                  "candidates": {"contrast, whole frame x2": 0.41, "contrast, whole frame x1": 0.5}},
    }  # fmt: skip
    views = ViewPlan(whole_weight=1.0)
    record = store.save(
        tiny_model(),
        "cnn-photos",
        metadata={"test_accuracy": 0.7801, "parent": "cnn:1", "finetune": finetune, "views": views.to_json()},
    )
    models = bare_app.models
    models.select(record)
    rows = table(models.details.value)
    assert rows["fine-tuned on"] == "the set my-photos (560 photos trained on, 140 held out)"
    assert rows["photos: before → after"] == "0.4300 → 0.7100"
    assert rows["test: before → after"] == "0.7866 → 0.7801"
    assert rows["negative flips"] == "123 test images right before, wrong after"
    assert rows["continued from"] == "cnn:1" and rows["test accuracy"] == "0.7801"
    assert rows["photos seen through"] == "contrast, whole frame x1"
    assert rows["photos: its views, before"] == (
        "0.5200 (the parent through the views chosen, contrast, whole frame x1, on the 560 photos trained on)"
    )
    # Put in hand, the version classifies and evaluates photos through its own views.
    bare_app.session.set_model(tiny_model(), record=record)
    assert bare_app.session.view_plan == views
    bare_app.session.set_model(tiny_model(), record=store.resolve("cnn-photos:1"))
    assert bare_app.session.view_plan == views

    # Metadata is whatever JSON its saver sent: other shapes are shown as text, not trusted.
    odd = store.save(tiny_model(), "odd", metadata={"finetune": {"before": "<b>?</b>", "after": [1]}})
    models.select(odd)
    rows = table(models.details.value)
    assert (
        rows["photos: before → after"] == "- → -"
        and rows["fine-tuned on"] == "- (- photos trained on, - held out)"
    )
    hostile = store.save(tiny_model(), "hostile", metadata={"finetune": "<img src=x onerror=alert(1)>"})
    models.select(hostile)
    assert table(models.details.value)["fine-tuned"] == "<img src=x onerror=alert(1)>"
    assert "<img" not in models.details.value and models.errors.value == ""
    odd_views = store.save(tiny_model(), "odd-views", metadata={"views": {"combine": "<b>vote</b>"}})
    models.select(odd_views)
    assert table(models.details.value)["photos seen through"] == (
        "the default views (contrast, whole frame x2); its own are not a view plan: "
        "{'combine': '<b>vote</b>'}"
    )
    bare_app.session.set_model(tiny_model(), record=odd_views)
    assert bare_app.session.view_plan == DEFAULT_PLAN
    part = store.save(tiny_model(), "part-views", metadata={"views": {"whole_weight": 1}})  # the rest default
    models.select(part)
    assert table(models.details.value)["photos seen through"] == "contrast, whole frame x1"


# -- accuracy on a photo set --------------------------------------------------------------------------


def test_accuracy_on_a_photo_set_is_what_evaluate_photos_measures(bare_app: App) -> None:
    store = bare_app.session.store()
    record = store.save(tiny_model(), "cnn", metadata={"test_accuracy": 0.7866})
    models = bare_app.models
    models.select(record)
    wait_for(lambda: models.photos_hint.value == NO_PHOTO_SETS, timeout=30, what="the hint")
    assert models.photos_hint.layout.display is None
    assert models.photo_sets.layout.display == "none" and models.photos_button.disabled

    photos = open_photo_store(store)
    try:
        for i, label in enumerate(["cat", "dog", "cat", "ship", "cat", "truck", "frog"]):
            photos.add(jpeg(i), label)
        photos.add(jpeg(100), "truck", set="holiday")
        photos.add(jpeg(101, size=(200, 120)), "ship", set="holiday")  # large: several views combined
        bare_app.session.notify_store_changed()  # a save or a delete elsewhere: the sets are listed again
        wait_for(lambda: len(models.photo_sets.options) == 2, timeout=30, what="the photo sets")
        assert models.photo_sets.options == (
            ("holiday (2 photos)", "holiday"),
            ("my-photos (7 photos)", "my-photos"),
        )
        assert models.photo_sets.value == "my-photos"  # the set the Classify tab keeps corrections in
        assert models.photo_sets.layout.display is None and not models.photos_button.disabled
        assert models.photos_hint.layout.display == "none"

        models.photos_button.click()
        wait_for(lambda: models.photos_result.value.startswith("accuracy"), timeout=120, what="the accuracy")
        wait_for(lambda: not models.photos_button.disabled, timeout=30, what="the button")
        expected = evaluate_photos(store.load(record.ref), set_photos(photos, "my-photos")).evaluation
        assert expected.n == 7
        assert models.photos_result.value == (
            f"accuracy on my-photos: {expected.accuracy:.4f} (7 photos) — test set: 0.7866"
        )

        models.photo_sets.value = "holiday"
        models.evaluate_on_photos().join(120)
        expected = evaluate_photos(store.load(record.ref), set_photos(photos, "holiday")).evaluation
        assert models.photos_result.value == (
            f"accuracy on holiday: {expected.accuracy:.4f} (2 photos) — test set: 0.7866"
        )
        assert models.errors.value == ""
        assert bare_app.session.model is None  # measured, not put in hand

        # Another version: the last one's accuracy is not left beside it; a new photo is counted.
        other = store.save(tiny_model(name="other"), "other")
        models.select(other)
        assert models.photos_result.value == ""
        photos.add(jpeg(102), "bird", set="holiday")
        bare_app.session.photos_changed = object()  # a correction kept in the Classify tab
        wait_for(
            lambda: ("holiday (3 photos)", "holiday") in models.photo_sets.options, timeout=30, what="recount"
        )
        assert models.photo_sets.value == "holiday"  # the choice stays
        models.evaluate_on_photos().join(120)
        expected = evaluate_photos(store.load(other.ref), set_photos(photos, "holiday")).evaluation
        assert models.photos_result.value == (
            f"accuracy on holiday: {expected.accuracy:.4f} (3 photos) — test set: not recorded"
        )
    finally:
        photos.close()


def test_a_photo_set_emptied_meanwhile_is_an_error_in_place(bare_app: App) -> None:
    store = bare_app.session.store()
    record = store.save(tiny_model(), "cnn")
    photos = open_photo_store(store)
    try:
        kept = photos.add(jpeg(1), "cat", set="gone")
        models = bare_app.models
        models.select(record)
        wait_for(lambda: models.photo_sets.value == "gone", timeout=30, what="the photo set")
        assert models.photo_sets.options == (("gone (1 photo)", "gone"),)
        photos.remove([kept.id])
        models.evaluate_on_photos().join(60)
        assert html.escape("the set 'gone' has no photos") in models.errors.value
        assert models.photos_result.value == "" and not models.photos_button.disabled
        models.refresh_photo_sets().join(30)
        assert models.photos_hint.value == NO_PHOTO_SETS and models.photos_button.disabled
    finally:
        photos.close()


# -- the Train tab's number of training images --------------------------------------------------------


def small_data(path: Path, n_train: int = 1234, n_test: int = 200) -> Path:
    """A CIFAR-shaped dataset file of noise (every class), loaded by the real loader."""
    rng = np.random.default_rng(0)
    np.savez(
        path,
        x_train=rng.integers(0, 256, (n_train, 32, 32, 3), dtype=np.uint8),
        y_train=np.arange(n_train, dtype=np.uint8) % 10,
        x_test=rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8),
        y_test=np.arange(n_test, dtype=np.uint8) % 10,
    )
    return path


def test_parse_train_images() -> None:
    for text in ("", " ", "all", "All (50,000)", "0", "all (1,234)"):
        assert parse_train_images(text) == 0, text
    assert parse_train_images("1,000") == parse_train_images(" 1000 ") == parse_train_images("1 000") == 1000
    for text in ("lots", "-5", "1.5", "1e3", "²"):
        with pytest.raises(ValueError, match="is not a number of images"):
            parse_train_images(text)


def test_epoch_ticks_are_whole_epochs_or_left_to_d3() -> None:
    assert epoch_ticks([1.0, 2.0]) == [1, 2]
    assert epoch_ticks([1.0, 1.53]) is None and epoch_ticks([0.25, 0.5]) is None  # no two whole epochs
    assert epoch_ticks([]) is None and epoch_ticks([3.0]) is None
    assert epoch_ticks([0.5, 1.5, 2.5]) == [1, 2]  # a stopped run's ends: ticks between its points
    assert epoch_ticks([float(e) for e in range(1, 16)]) == [2, 4, 6, 8, 10, 12, 14]  # at most 8
    assert epoch_ticks([1.0, 8.0]) == list(range(1, 9))
    assert epoch_ticks([1.0, 100.0]) == [20, 40, 60, 80, 100]


@pytest.mark.slow
def test_the_train_tab_says_all_and_how_many_never_0(tmp_path: Path) -> None:
    app = App(store=str(tmp_path / "store"), data=str(small_data(tmp_path / "small.npz")))
    try:
        panel, form = app.train, app.train.form
        assert form.limit_box in form.rows[1].children and form.limit not in form.rows[1].children
        assert form.limit_box.description == "Train images"
        assert form.limit_box.value == "all" and form.limit.value == 0  # the data is not loaded yet
        assert form.config().train_limit is None

        form.preset.value, form.epochs.value = "tutorial", 1
        panel.start_button.click()  # loads the data: "all" now says how many
        wait_for(lambda: form.limit_box.value == "all (1,234)", timeout=60, what="the count")
        wait_for(lambda: panel.trainer is not None and panel.trainer.state != "running", what="training")
        wait_for(lambda: not panel.start_button.disabled, timeout=60, what="the Start button")
        assert panel.result is not None and panel.result.dataset["n_train"] == 1234  # trained on all
        assert form.limit_box.options[0] == "all (1,234)"
        assert all(int(o) < 1234 for o in form.limit_box.options[1:])  # no choice above what there is

        form.limit_box.value = "1,000"  # typed
        assert form.limit.value == 1000 and form.config().train_limit == 1000
        assert form.limit_box.value == "1,000"  # what was typed stays
        form.limit_box.value = "lots"
        assert html.escape("Train images: 'lots' is not a number of images") in panel.errors.value
        assert form.limit.value == 1000 and form.limit_box.value == "1000"  # back to the number in hand
        form.limit_box.value = "500"
        assert panel.errors.value == "" and form.config().train_limit == 500
        form.limit_box.value = "0"  # 0 means all, and reads so
        assert form.limit_box.value == "all (1,234)" and form.config().train_limit is None
        form.limit.value = 700  # set by code (a job's form, a test): the box follows
        assert form.limit_box.value == "700"
        form.show_spec({"preset": "tutorial", "train_limit": None})  # a job that trains on all
        assert form.limit.value == 0 and form.limit_box.value == "all (1,234)"
    finally:
        app.close()
