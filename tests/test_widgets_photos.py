"""The Classify tab's photo loop without a browser (issue 17): correct a wrong answer and keep it, see the
set's counts, the heatmap toggle, evaluate on the set, fine-tune on it. Real store, real models, real
CIFAR-10; photos from tests/photoset.py."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from photoset import make_photo_set
from PIL import Image
from polling import wait_for
from storetools import tiny_model
from test_widgets import texts

from jupyter_cifar.engine.data import CLASS_NAMES
from jupyter_cifar.engine.views import stored_plan
from jupyter_cifar.photos.finetune import evaluate_photos
from jupyter_cifar.photos.labelled import set_photos
from jupyter_cifar.widgets import App
from jupyter_cifar.widgets.photos import CorrectionRow

pytestmark = pytest.mark.slow


@pytest.fixture
def app(cifar10_dir: Path, tmp_path: Path, cifar10):
    app = App(store=str(tmp_path / "store"), data=str(cifar10_dir), tab="classify")
    yield app
    app.close()


@pytest.fixture(scope="module")
def photos(cifar10) -> list:
    return make_photo_set(cifar10.x_test, cifar10.y_test, 40, seed=3)


def conv_model(name: str):
    """A small convolutional model (what a heatmap needs: a feature map with a size)."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    outputs = keras.layers.Dense(10, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, outputs, name=name)


def in_hand(app: App, name: str = "tiny"):
    store = app.session.store()
    record = store.save(conv_model(name), name, metadata={"preset": "fast"})
    app.session.set_model(store.load(record.ref), record=record)
    return record


def corrections(card) -> list[CorrectionRow]:
    return [c for c in card.children if isinstance(c, CorrectionRow)]


def test_a_wrong_answer_corrected_is_kept_with_who_said_what(app: App, photos: list) -> None:
    record = in_hand(app)
    classify = app.classify
    sources = [p.data for p in photos[:3]] + [b"not an image"]
    classify.classify(sources, ["a.jpg", "b.jpg", "c.jpg", "broken.png"]).join(60)
    cards = classify.results.children
    assert [len(corrections(card)) for card in cards] == [1, 1, 1, 0]  # not for what could not be read
    row = corrections(cards[0])[0]
    said = row.predicted
    assert any(t.startswith(said) for t in texts(cards[0]))  # the answer and its share stay in view
    right = next(name for name in CLASS_NAMES if name != said)
    row.choice.value = right
    row.save().join(30)
    assert row.status.value == f"✓ kept as {right} (it said {said})"
    [kept], _ = app.session.photos().list()
    assert (kept.label, kept.origin, kept.wrong_version, kept.predicted) == (
        right,
        "correction",
        record.ref,
        said,
    )
    assert kept.filename == "a.jpg" and app.session.photos().read(kept.id) == sources[0]
    wait_for(lambda: classify.photos.counts.value == f"1 photo: 1 {right}", what="the counts")

    # Another model in hand draws the cards again: the kept choice is still shown, not lost.
    in_hand(app, "other")
    wait_for(lambda: classify.results_by.value == "classified by other:1", what="the cards made again")
    again = corrections(classify.results.children[0])[0]
    assert again.choice.value == right and again.status.value.startswith(f"✓ kept as {right}")
    # Examples from the test set are not photos of the user's: no correction row.
    classify.classify_examples(count=2).join(30)
    wait_for(
        lambda: len(classify.results.children) == 2 and "test image" in texts(classify.results)[0],
        what="examples",
    )
    assert not any(corrections(card) for card in classify.results.children)


def test_the_heatmap_toggle_colours_where_the_model_looked(app: App, photos: list) -> None:
    in_hand(app)
    classify = app.classify
    classify.classify([photos[0].data], ["a.jpg"]).join(60)
    plain = classify.results.children[0].children[0].value
    classify.heatmaps.value = True
    wait_for(
        lambda: classify.results.children and classify.results.children[0].children[0].value != plain,
        what="the heatmap",
    )
    coloured = classify.results.children[0].children[0].value
    with Image.open(io.BytesIO(plain)) as a, Image.open(io.BytesIO(coloured)) as b:
        assert a.size == b.size  # the whole photo, at its own aspect
        assert a.size[0] / a.size[1] == pytest.approx(photos[0].size[0] / photos[0].size[1], rel=0.05)
        assert np.abs(np.asarray(a, float) - np.asarray(b, float)).mean() > 5


def test_a_model_without_a_map_says_so_and_still_classifies(app: App, photos: list) -> None:
    store = app.session.store()
    record = store.save(tiny_model(), "flat")
    app.session.set_model(store.load(record.ref), record=record)
    app.classify.heatmaps.value = True
    app.classify.classify([photos[0].data], ["a.jpg"]).join(60)
    assert app.classify.results_by.value.startswith("classified by flat:1; no heatmaps: ")
    assert len(app.classify.results.children) == 1


def test_evaluate_on_my_photos_shows_the_sets_accuracy_and_views(app: App, photos: list) -> None:
    in_hand(app)
    store = app.session.photos()
    for p in photos[:20]:
        store.add(p.data, CLASS_NAMES[p.label])
    bar = app.classify.photos
    bar.evaluate().join(120)
    expected = evaluate_photos(app.session.model, set_photos(store, "my-photos")).evaluation
    assert bar.status.value == f"tiny:1: accuracy {expected.accuracy:.4f} on 20 photos of my-photos"
    assert len(bar.output.children) >= 1  # per class and the confusion matrix (and the worst, if any)
    assert "jc-train-per-class" in bar.output.children[0].children[0]._dom_classes


def test_fine_tune_on_my_photos_saves_a_version_with_before_and_after(app: App, photos: list) -> None:
    record = in_hand(app)
    store = app.session.photos()
    for p in photos:
        store.add(p.data, CLASS_NAMES[p.label])
    bar = app.classify.photos
    assert bar.save_as.value == "tiny-photos"
    bar.epochs.value = 1
    bar.finetune().join(300)
    assert app.session.record is not None and app.session.record.ref == "tiny-photos:1", bar.status.value
    meta = app.session.record.metadata
    assert (
        meta["parent"] == record.ref and meta["finetune"]["photos_used"] + meta["finetune"]["held_out"] == 40
    )
    before, after = meta["finetune"]["before"], meta["finetune"]["after"]
    assert bar.status.value.startswith("saved tiny-photos:1 (from tiny:1), fine-tuned on ")
    assert f"{before['photos']:.1%} → {after['photos']:.1%}" in bar.status.value
    # The new version in hand classifies photos through the views its fine-tuning chose.
    assert meta["views"] == app.session.view_plan.to_json() and app.session.view_plan == stored_plan(meta)


def test_fine_tune_and_evaluate_say_what_is_missing(app: App) -> None:
    bar = app.classify.photos
    with pytest.raises(RuntimeError, match="no model yet"):
        bar.evaluate()
    in_hand(app)
    bar.evaluate().join(30)
    assert "my-photos&#x27; has no photos" in app.classify.errors.value
    bar.set_name.value = "no/slashes"
    assert "--set" in app.classify.errors.value and app.session.photo_set == "my-photos"
    bar.set_name.value = "garden"
    assert app.session.photo_set == "garden"


def test_fine_tune_runs_as_a_job_where_the_server_runs_jobs(
    jobs_server, cifar10_dir: Path, photos: list
) -> None:
    """The app of a kernel of a server that runs jobs: the fine-tuning is a job (it outlives the kernel),
    the photos go to the server's store through its API, the version it saves comes into hand."""
    app = App(store=jobs_server.store_url, data=str(cifar10_dir), tab="classify")
    try:
        record = in_hand(app)
        for p in photos:
            app.session.photos().add(p.data, CLASS_NAMES[p.label])
        bar = app.classify.photos
        bar.epochs.value = 1
        bar.finetune().join(300)
        assert app.session.record is not None and app.session.record.ref == "tiny-photos:1", bar.status.value
        meta = app.session.record.metadata
        assert meta["parent"] == record.ref and meta["job"] and meta["finetune"]["held_out"] >= 10
        assert (
            meta["views"] == app.session.view_plan.to_json()
            and meta["finetune"]["views"]["chosen_on"] == meta["finetune"]["photos_used"]
        )
        [job], _ = app.session.jobs().list([])
        assert job["spec"]["photos"] == "my-photos" and job["state"] == "finished"
        assert job["model"] == "tiny-photos:1" and bar.status.value.startswith(
            "saved tiny-photos:1 (from tiny:1)"
        )
    finally:
        app.close()
