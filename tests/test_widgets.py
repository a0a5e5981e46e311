"""The app's panels without a browser: drive their state as a person's clicks would, check what they show.

ipywidgets' own tests do the same: widgets live in this process (their comms go nowhere), callbacks are
called as a click would call them, and the test reads the traits the browser would draw.
"""

from __future__ import annotations

import io
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from polling import wait_for
from storetools import tiny_model

from jupyter_cifar.engine.data import CLASS_NAMES
from jupyter_cifar.engine.history import epochs_text
from jupyter_cifar.engine.precision import machine, machine_text
from jupyter_cifar.widgets import App
from jupyter_cifar.widgets.progress import TrainingProgress
from jupyter_cifar.widgets.train import MAX_POINTS, Curve

pytestmark = pytest.mark.slow


def click(button) -> None:
    button.click()  # runs the on_click handlers, as the browser's click message does


def texts(widget) -> list[str]:
    """Every Label's text under a widget, depth first."""
    out = []
    stack = [widget]
    while stack:
        node = stack.pop(0)
        if hasattr(node, "children"):
            stack[:0] = list(node.children)
        elif type(node).__name__ == "Label":
            out.append(node.value)
    return out


@pytest.fixture
def app(cifar10_dir: Path, tmp_path: Path, cifar10):
    app = App(store=str(tmp_path / "store"), data=str(cifar10_dir))
    yield app
    app.close()


def trained(panel) -> bool:
    """A training was started and has ended, and the panel is ready for the next."""
    return not panel.start_button.disabled and panel.trainer is not None and panel.trainer.state != "running"


def train(app: App, *, epochs: int = 1, limit: int = 1000, preset: str = "tutorial") -> None:
    panel = app.train
    panel.form.preset.value = preset
    panel.form.epochs.value = epochs
    panel.form.limit.value = limit
    click(panel.start_button)
    wait_for(lambda: panel.trainer is not None and panel.trainer.state != "running", what="training")
    wait_for(lambda: panel.start_button.disabled is False, what="the Start button")


def test_the_app_has_three_tabs_and_its_css_classes(app: App) -> None:
    assert [app.tabs.get_title(i) for i in range(3)] == ["Train", "Classify", "Models"]
    assert "jc-app" in app._dom_classes
    assert "jc-train-start" in app.train.start_button._dom_classes
    assert app.train.stop_button.disabled and app.train.continue_button.disabled
    assert app.classify.model_label.value.startswith("no model yet")


def test_choosing_a_preset_fills_in_its_recipe(app: App) -> None:
    app.train.form.preset.value = "tutorial"
    assert (app.train.form.epochs.value, app.train.form.batch_size.value) == (10, 32)
    assert app.train.form.learning_rate.value == pytest.approx(1e-3)


def test_training_draws_curves_and_shows_the_result(app: App) -> None:
    seen_points = set()
    seen_status = set()
    panel = app.train

    def watch() -> None:
        while panel.trainer is None or panel.trainer.state in ("ready", "running"):
            seen_points.add(len(panel.progress.loss_train.mark.x))
            seen_status.add(panel.status.value)
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    train(app, epochs=2, limit=2000)
    watcher.join(5)
    assert len(seen_points) >= 3, seen_points  # the curve grew while training ran
    assert any(s.startswith("epoch 1/2 · batch") and "images/s" in s for s in seen_status), seen_status
    # Until the first batch (the step is compiled), the run's description, its precision resolved.
    described = f"(seed {panel.trainer.config.seed}, {panel.trainer.policy}) on {machine_text(machine())}"
    assert any(s.startswith("training ") and s.endswith(described) for s in seen_status), seen_status
    assert panel.status.value.startswith("finished after 2 epochs")
    assert len(panel.progress.loss_val.mark.x) == 2 and len(panel.progress.acc_val.mark.y) == 2
    assert panel.result_label.value.startswith("test accuracy ")
    assert panel.result_box.layout.display is None and len(panel.result_box.children) == 3
    gallery = panel.result_box.children[2]
    assert 1 <= len(gallery.children) <= 8
    for item in gallery.children:  # the image, then "true →" over "predicted (confidence)"
        _, true, predicted = item.children
        assert true.value.endswith(" →") and true.value[:-2] in CLASS_NAMES
        assert predicted.value.split(" (")[0] in CLASS_NAMES and predicted.value.endswith("%)")
    assert not panel.save_button.disabled and not panel.continue_button.disabled
    assert app.classify.model_label.value.startswith("model: tutorial trained here, 2 epochs, test accuracy")
    assert panel.errors.value == ""


def test_stop_ends_training_within_a_batch(app: App) -> None:
    panel = app.train
    panel.form.preset.value = "tutorial"
    panel.form.epochs.value = 5
    panel.form.limit.value = 5000
    click(panel.start_button)
    wait_for(lambda: panel.trainer is not None and panel.progress.batch is not None, what="the first batch")
    assert not panel.stop_button.disabled and panel.start_button.disabled  # busy state
    click(panel.stop_button)
    seen = [panel.status.value]
    while not panel.status.value.startswith("stopped"):  # batches still report: the status must not
        seen.append(panel.status.value)  # go back to "epoch 1/5 · batch …" as if nothing was asked
        time.sleep(0.01)
        assert len(seen) < 3000, seen[-3:]
    assert set(seen) <= {"stopping after this batch…", "evaluating on the test images…"}, set(seen)
    assert len(panel.trainer.result.history) == 1 and not panel.trainer.result.history[0]["complete"]


def test_training_for_minutes_instead_of_epochs(app: App, cifar10) -> None:
    # The budget covers the first step's tracing and each epoch's validation: on a 2-core AVX2 CPU (an AMD
    # EPYC) 5 s and 6 s (10,000 test images). 15 s and 1,000 test images leave several epochs to training.
    app.session._data = cifar10.subset(None, 1000)
    panel, seen = app.train, set()
    panel.form.preset.value = "fast"
    panel.form.limit.value = 1000
    panel.form.minutes.value = 0.25
    assert panel.form.epochs.disabled  # the minutes rule while they are set
    config = panel.form.config()
    assert (config.minutes, config.epochs) == (0.25, None)
    click(panel.start_button)
    while panel.trainer is None or panel.trainer.state in ("ready", "running"):
        seen.add(panel.status.value)
        time.sleep(0.02)
    wait_for(lambda: panel.start_button.disabled is False, what="the Start button")
    assert any(re.match(r"epoch \d+ · \d+% of 0.25 minutes · batch", s) for s in seen), seen
    assert panel.progress.epoch_bar.description == "Time" and panel.progress.epoch_bar.max == 100
    result = panel.trainer.result
    assert result.status == "finished" and len(result.history) > 1
    assert panel.status.value.startswith(f"finished after {epochs_text(result.epochs)}")
    assert "for 0.25 minutes more" in panel.continue_note.value
    panel.form.minutes.value = 0
    assert not panel.form.epochs.disabled and panel.form.config().epochs == panel.form.epochs.value


def test_continue_appends_to_the_model_in_hand(app: App) -> None:
    train(app, epochs=1, limit=1000)
    click(app.train.continue_button)
    wait_for(
        lambda: (
            app.train.trainer is not None
            and app.train.trainer.state == "finished"
            and not app.train.start_button.disabled
        ),
        what="continue",
    )
    assert [h["epoch"] for h in app.train.result.history] == [1, 2]
    assert max(app.train.progress.loss_train.mark.x) > 1  # the curve went on past the first epoch


def test_save_browse_load_and_classify(app: App, cifar10_dir: Path) -> None:
    train(app, epochs=1, limit=1000)
    panel = app.train
    panel.save_name.value = "cnn"
    panel.save_tags.value = "data=jpeg, who=test"
    panel.save_notes.value = "<b>not bold</b> & <script>alert(1)</script>"
    click(panel.save_button)
    wait_for(lambda: panel.saved.value.startswith("saved as"), what="the save")
    assert panel.saved.value == "saved as cnn:1"

    models = app.models
    wait_for(lambda: models.page is not None and models.page.total == 1, what="the list")
    rows = [c for c in models.table.children if "jc-models-row" in c._dom_classes]
    assert [r.description for r in rows] == ["cnn:1"]
    assert "data=jpeg, who=test" in texts(models.table)
    click(rows[0])
    assert models.selected_label.value == "selected: cnn:1"
    # Notes from the store are text: shown verbatim, never interpreted as HTML.
    assert models.notes_view.value == "<b>not bold</b> & <script>alert(1)</script>"
    assert "<b>" not in models.details.value or "&lt;" in models.details.value
    assert [m.labels[0] for m in models.curves.marks] == ["cnn:1 accuracy", "cnn:1 val accuracy"]

    app.session.model = None
    told = app.session.model_changed
    click(models.load_button)
    # set_model assigns the model first and tells the tabs last (model_changed): wait for the telling.
    wait_for(lambda: app.session.model_changed is not told, what="the load")
    assert app.session.model is not None and app.session.record.ref == "cnn:1"
    assert app.classify.model_label.value.startswith("model: cnn:1 (test accuracy")

    cat = (cifar10_dir / "test" / "cat" / "0000.jpg").read_bytes()
    app.classify.classify([cat, b"not an image", cat], ["cat.jpg", "broken.png", "again.jpg"]).join(60)
    cards = app.classify.results.children
    assert len(cards) == 3
    first, broken, again = (texts(card) for card in cards)
    # The name, three labels, and the correction row ("wrong? it is [label] keep", its status empty).
    assert first[0] == "cat.jpg" and len(first) == 6 and first[4:] == ["wrong? it is", ""]
    assert broken[0] == "broken.png" and "broken.png" in broken[1]
    assert again[1:] == first[1:]  # the same picture, the same answer
    assert app.classify.errors.value == ""


def test_models_tab_edits_aliases_and_deletes_with_confirmation(app: App, tmp_path: Path) -> None:
    store = app.session.store()
    for _ in range(2):
        store.save(tiny_model(), "m", tags={"a": "1"})
    models = app.models
    models.refresh().join(30)
    assert models.page.total == 2
    models.select(store.resolve("m:1"))
    models.alias.value = "prod"
    models.set_alias().join(30)
    assert store.resolve("m@prod").version == 1
    models.tags.value = "b=2"
    models.notes.value = "edited"
    models.save_edits().join(30)
    assert store.resolve("m:1").tags == {"b": "2"} and store.resolve("m:1").notes == "edited"
    click(models.delete_button)
    assert models.confirm_box.layout.display is None and store.list().total == 2  # nothing deleted yet
    click(models.cancel_button)
    assert models.confirm_box.layout.display == "none"
    click(models.delete_button)
    click(models.confirm_button)
    wait_for(lambda: models.selected_label.value == "deleted m:1", what="the delete")
    assert [r.ref for r in store.list().items] == ["m:2"]
    models.select(store.resolve("m:2"))
    models.compare_with.value = ""
    models.alias.value = "latest"
    models.set_alias().join(30)
    assert "reserved" in models.errors.value  # a refused alias is shown in the app


def test_classify_can_use_any_version_in_the_store(app: App, cifar10_dir: Path) -> None:
    store = app.session.store()
    store.save(tiny_model(), "stored", metadata={"test_accuracy": 0.5})
    app.classify.refresh_choices().join(30)
    assert app.classify.chooser.options[1] == ("stored:1 (test accuracy 0.5000)", "stored:1")
    assert app.classify.chooser.value == ""  # listing changes nothing
    app.classify.chooser.value = "stored:1"
    wait_for(lambda: app.session.record is not None, what="the load")
    assert app.session.record.ref == "stored:1"
    assert app.classify.model_label.value.startswith("model: stored:1")
    cat = (cifar10_dir / "test" / "cat" / "0000.jpg").read_bytes()
    app.classify.classify([cat], ["cat.jpg"]).join(60)
    assert len(texts(app.classify.results.children[0])) == 6  # the name, 3 labels, the correction row


def test_uploads_arrive_file_by_file_and_a_refused_one_is_named(app: App, cifar10_dir: Path) -> None:
    store = app.session.store()
    app.session.set_model(store.load(store.save(tiny_model(), "u").ref))
    cat = (cifar10_dir / "test" / "cat" / "0000.jpg").read_bytes()
    upload = app.classify.upload
    assert upload.max_bytes == 8 << 20  # no jupyter_cifar server here: tornado's 10 MiB default rules
    messages = [  # what the browser side sends for three chosen files, the second too large
        ({"kind": "file", "batch": "b1", "index": 2, "count": 3, "name": "c.jpg", "size": len(cat)}, [cat]),
        ({"kind": "file", "batch": "b1", "index": 1, "count": 3, "name": "big.png", "size": 9 << 20,
          "error": "big.png: 9.0 MB is over the 8.0 MB a kernel can receive"}, []),
        ({"kind": "file", "batch": "b1", "index": 0, "count": 3, "name": "a.jpg", "size": len(cat)}, [cat]),
    ]  # fmt: skip
    for content, buffers in messages[:2]:
        upload._handle_custom_msg(content, buffers)
    assert app.classify.results.children == ()  # nothing until every file of the batch is in
    upload._handle_custom_msg(*messages[2])
    wait_for(lambda: len(app.classify.results.children) == 3, what="the cards")
    a, big, c = (texts(card) for card in app.classify.results.children)
    assert a[0] == "a.jpg" and c[0] == "c.jpg" and a[1:] == c[1:] and len(a) == 6
    assert big == ["big.png", "big.png: 9.0 MB is over the 8.0 MB a kernel can receive"]


def test_errors_appear_in_the_app(app: App) -> None:
    click(app.classify.examples)  # no model yet
    assert "no model yet" in app.classify.errors.value
    click(app.train.save_button)  # nothing trained (the button is disabled; a stale click still reports)
    assert "nothing to save" in app.train.errors.value
    click(app.models.load_button)
    assert "select a version first" in app.models.errors.value


def test_a_bad_save_name_is_reported_with_the_rule_and_nothing_left_saving(app: App) -> None:
    panel = app.train
    train(app, epochs=1, limit=500)
    panel.save_name.value = "my first cifar"
    assert "is not a valid name" in panel.name_hint.value and "letters, digits" in panel.name_hint.value
    click(panel.save_button)
    assert "is not a valid name" in panel.errors.value and panel.saved.value == ""  # no "saving…"
    panel.save_name.value = "my-first-cifar"
    assert panel.name_hint.value == ""
    panel.save_tags.value, panel.save_notes.value = "data=jpeg", "first"
    click(panel.save_button)
    wait_for(lambda: panel.saved.value == "saved as my-first-cifar:1", what="the save")
    assert (panel.save_tags.value, panel.save_notes.value) == ("", "")  # not carried to the next run
    assert panel.errors.value == ""


# -- issue 19: what the app got wrong -------------------------------------------------------------------


def test_a_double_click_on_start_starts_one_training(app: App) -> None:
    panel = app.train
    panel.form.preset.value, panel.form.epochs.value, panel.form.limit.value = "tutorial", 1, 1000
    starts: list[dict] = []
    on_start = panel.progress.on_start
    panel.progress.on_start = lambda event: (starts.append(event), on_start(event))  # type: ignore[method-assign]
    click(panel.start_button)
    assert panel.start_button.disabled and panel.status.value == "loading CIFAR-10…"  # at once
    click(panel.start_button)  # the second click of a double click, before the first one's work is done
    wait_for(lambda: panel.trainer is not None and panel.trainer.state != "running", what="training")
    wait_for(lambda: not panel.start_button.disabled, what="the Start button")
    time.sleep(1)  # a second training, had it started, would have reported by now
    assert len(starts) == 1
    xs = list(panel.progress.loss_train.mark.x)
    assert xs == sorted(xs)  # one run: no zig-zag of two into the same curve


def test_continue_trains_the_model_in_hand_as_its_own_network_with_its_recipe(app: App) -> None:
    panel = app.train
    panel.form.preset.value = "tutorial"
    panel.form.learning_rate.value = 0.002  # a recipe of its own: not the preset's 0.001
    panel.form.epochs.value, panel.form.limit.value = 1, 1000
    click(panel.start_button)
    wait_for(lambda: panel.trainer is not None and panel.trainer.state != "running", what="training")
    wait_for(lambda: not panel.start_button.disabled, what="the Start button")
    assert "Continue trains the current model for 1 epoch more" in panel.continue_note.value
    assert "(it has had 1 epoch: tutorial trained here, 1 epoch, test accuracy" in panel.continue_note.value
    panel.form.preset.value = "fast"  # to look at another network: Continue must not take fast's settings
    assert panel.continue_button.disabled
    assert "as the tutorial network it is" in panel.continue_note.value
    panel.form.preset.value = "tutorial"  # the form shows the model's own recipe again, not the preset's
    assert (panel.form.batch_size.value, panel.form.learning_rate.value) == (32, 0.002)
    assert not panel.continue_button.disabled and "far from" not in panel.continue_note.value
    panel.form.learning_rate.value = 1.0
    assert "far from its own recipe: learning rate 1 (it was trained with 0.002)" in panel.continue_note.value
    panel.form.learning_rate.value = 0.002
    panel.form.epochs.value = 1
    click(panel.continue_button)
    wait_for(lambda: panel.trainer is not None and panel.trainer.state != "running", what="continue")
    wait_for(lambda: not panel.start_button.disabled, what="the Start button")
    config = panel.trainer.config
    assert (config.preset, config.batch_size, config.learning_rate) == ("tutorial", 32, 0.002)


def test_a_loaded_version_brings_its_recipe_into_the_form(app: App) -> None:
    panel = app.train
    train(app, epochs=1, limit=1000)
    panel.save_name.value = "tut"
    click(panel.save_button)
    wait_for(lambda: panel.saved.value == "saved as tut:1", what="the save")
    panel.form.preset.value = "fast"
    app.models.select(app.session.store().resolve("tut:1"))
    app.models.load().join(60)
    assert panel.form.preset.value == "tutorial" and panel.form.batch_size.value == 32
    assert not panel.continue_button.disabled and "tut:1" in panel.continue_note.value


def test_the_live_curve_keeps_the_first_epoch_after_ten(app: App) -> None:
    """Events as a 10-epoch run of 391 batches sends them: the first epoch keeps as many points as the
    last (it was one straight line once every other point had been dropped again and again)."""
    panel = app.train
    panel._on_event(
        {"type": "start", "epochs": 10, "initial_epoch": 0, "epochs_done": 0.0, "batches_per_epoch": 391,
         "architecture": "fast", "n_train": 50000, "seed": 0},
        panel.run,  # what the tab follows (none here): only its events are drawn
    )  # fmt: skip
    rng = np.random.default_rng(0)
    for epoch in range(1, 11):
        for batch in range(1, 392):
            loss = 2.3 / epoch + (0.5 if epoch == 1 and batch < 40 else 0) + rng.normal(0, 0.05)
            panel._on_event(
                {"type": "batch", "epoch": epoch, "batch": batch, "batches": 391, "loss": loss,
                 "accuracy": 0.5, "images_per_second": 1, "eta_seconds": 1},
                panel.run,
            )  # fmt: skip
    panel.progress.flush(force=True)
    xs = np.asarray(panel.progress.loss_train.mark.x)
    assert len(xs) <= MAX_POINTS
    per_epoch = np.histogram(xs, bins=10, range=(0, 10))[0]
    assert per_epoch.min() >= 0.8 * per_epoch.max(), per_epoch  # evenly spread over the whole run
    assert per_epoch[0] >= 20  # the first epoch is still drawn ...
    ys = np.asarray(panel.progress.loss_train.mark.y)
    bump, after = ys[(xs > 0.03) & (xs < 0.09)], ys[(xs > 0.3) & (xs < 1)]
    assert len(bump) and bump.mean() > after.mean() + 0.2  # ... with its early bump


def test_lineage_is_where_training_started_and_a_result_is_saved_once(app: App) -> None:
    panel, store = app.train, app.session.store
    train(app, epochs=1, limit=500)
    panel.save_name.value = "a"
    click(panel.save_button)
    wait_for(lambda: panel.saved.value == "saved as a:1", what="the save")
    click(panel.save_button)  # the same model again
    assert panel.saved.value.startswith("already saved as a:1")
    assert store().list(name="a").total == 1 and store().resolve("a:1").metadata["parent"] is None

    train(app, epochs=1, limit=500)  # a fresh network ...
    app.classify.refresh_choices().join(30)
    app.classify.chooser.value = "a:1"  # ... while another version is picked in Classify
    wait_for(lambda: app.session.record is not None and app.session.record.ref == "a:1", what="a:1")
    panel.save_name.value = "b"
    click(panel.save_button)
    wait_for(lambda: panel.saved.value == "saved as b:1", what="the save")
    assert store().resolve("b:1").metadata["parent"] is None  # not a:1: training did not start there

    app.models.select(store().resolve("a:1"))
    app.models.load().join(60)
    panel.form.epochs.value = 1
    click(panel.continue_button)
    wait_for(lambda: trained(panel), what="continue")
    panel.save_name.value = "a"
    click(panel.save_button)
    wait_for(lambda: panel.saved.value == "saved as a:2", what="the save")
    assert store().resolve("a:2").metadata["parent"] == "a:1"


def test_a_stopped_half_epoch_counts_as_the_part_it_was(app: App) -> None:
    panel = app.train
    form, progress = panel.form, panel.progress
    form.preset.value, form.epochs.value, form.limit.value = "tutorial", 3, 2000  # 63 batches an epoch
    click(panel.start_button)
    wait_for(lambda: (b := progress.batch) is not None and b["epoch"] == 2 and b["batch"] >= 20)
    click(panel.stop_button)
    wait_for(lambda: trained(panel), what="the stop")
    history = panel.result.history
    done = 1 + history[-1]["batches"] / 63
    assert not history[-1]["complete"] and 1.3 < done < 2
    assert panel.status.value.startswith(f"stopped after {done:.2f} epochs")
    assert app.session.model_label.startswith(f"tutorial trained here, {done:.2f} epochs")
    stopped_at = max(panel.progress.loss_train.mark.x)
    assert stopped_at == pytest.approx(done, abs=0.02)

    statuses: set[str] = set()
    panel.form.epochs.value = 1
    click(panel.continue_button)
    while not trained(panel):
        statuses.add(panel.status.value)
        time.sleep(0.02)
    shown = [f"{n:.2f}".rstrip("0").rstrip(".") for n in (done, done + 1)]  # 1.4, not 1.40
    assert any(s.startswith(f"epoch 1/1 ({shown[0]} → {shown[1]} epochs in all)") for s in statuses), statuses
    assert panel.status.value.startswith(f"finished after 1 epoch ({done + 1:.2f} epochs in all)")
    xs = list(panel.progress.loss_train.mark.x)
    assert xs == sorted(xs) and max(xs) == pytest.approx(done + 1, abs=0.02)
    later = [x for x in xs if x > stopped_at]
    assert later and later[0] - stopped_at < 0.1  # no gap where the stopped epoch's rest would have been
    assert list(panel.progress.acc_val.mark.x)[-1] == pytest.approx(done + 1, abs=0.01)
    panel.save_name.value = "half"
    click(panel.save_button)
    wait_for(lambda: panel.saved.value == "saved as half:1", what="the save")
    app.models.select(app.session.store().resolve("half:1"))
    details = app.models.details.value
    assert ">tutorial<" in details and f">{done + 1:.2f} epochs<" in details


def test_curves_stay_bounded() -> None:
    class Mark:
        def __init__(self) -> None:
            self.x: list[float] = []
            self.y: list[float] = []

        def hold_sync(self):
            import contextlib

            return contextlib.nullcontext()

    curve = Curve(Mark())  # type: ignore[arg-type]
    for i in range(10 * MAX_POINTS):
        curve.add(i, float(i))
    curve.flush()
    assert len(curve.mark.x) <= MAX_POINTS and curve.mark.x[-1] >= 9 * MAX_POINTS
    assert np.all(np.diff(curve.mark.x) > 0)


def test_progress_draws_each_batch_behind_the_running_means_where_the_model_is() -> None:
    """Keras reports an epoch's running mean; the curve shows each batch's own value, smoothed, on the
    model's epochs-of-training axis (a continued model's run starts where its history ended)."""

    class Run:
        state, stopping = "running", False

    progress = TrainingProgress()
    progress.follow(Run(), keep=False, prior=[{"loss": 2.0, "accuracy": 0.3, "val_loss": None}] * 2)
    progress.on_start(
        {"type": "start", "epochs": 1, "initial_epoch": 2, "epochs_done": 2.0, "batches_per_epoch": 4,
         "architecture": "fast", "n_train": 1000, "seed": 0}
    )  # fmt: skip
    assert progress.status.value.endswith("4 batches (seed 0)")  # an older job's event: no precision to name
    values = [1.0, 3.0, 2.0, 6.0]  # each batch's loss; Keras sends their running mean
    for batch, mean in enumerate(np.cumsum(values) / np.arange(1, 5), start=1):
        progress.on_batch(
            {"type": "batch", "epoch": 3, "batch": batch, "batches": 4, "loss": float(mean), "accuracy": None,
             "images_per_second": 100.0, "eta_seconds": 1.0}
        )  # fmt: skip
    progress.flush(force=True)
    smoothed, expected = None, []
    for value in values:
        smoothed = value if smoothed is None else 0.9 * smoothed + 0.1 * value
        expected.append(smoothed)
    # The prior history's two epochs first (one point each, at their ends), then this run's batches.
    np.testing.assert_allclose(progress.loss_train.mark.x, [1, 2, 2.25, 2.5, 2.75, 3])
    np.testing.assert_allclose(progress.loss_train.mark.y, [2.0, 2.0, *expected])
    assert len(progress.acc_train.mark.x) == 2  # no accuracy reported in this run: nothing drawn for it
    assert progress.status.value.startswith("epoch 1/1 (2 → 3 epochs in all) · batch 4/4")
    progress.on_epoch({"type": "epoch", "epoch": 3, "val_loss": 0.5, "val_accuracy": 0.8, "complete": True})
    progress.on_end()
    assert progress.ended_text("finished", None) == "finished after 1 epoch (3 epochs in all)"


def test_the_magic_and_its_unloading() -> None:
    from IPython.testing.globalipapp import get_ipython

    ip = get_ipython()
    ip.run_line_magic("load_ext", "jupyter_cifar")
    app = ip.run_line_magic("cifar", "--tab classify")
    assert isinstance(app, App) and app.tabs.selected_index == 1
    from IPython.core.error import UsageError

    with pytest.raises(UsageError, match="--tab"):  # shown to the person as a one-line usage error
        ip.run_line_magic("cifar", "--tab nope")
    ip.run_line_magic("unload_ext", "jupyter_cifar")
    assert "cifar" not in ip.magics_manager.magics["line"]
    assert "CifarMagics" not in ip.magics_manager.registry
    assert app.session._store is None  # the app it showed was closed


def test_a_training_that_cannot_start_says_why_and_gives_the_buttons_back(app: App) -> None:
    panel = app.train
    panel.form.preset.value = "tutorial"
    panel.form.limit.value = 100
    panel.form.batch_size.value = 500  # larger than the 100 training images
    click(panel.start_button)
    wait_for(lambda: "--batch-size" in panel.errors.value, what="the error")
    assert "larger than the 100 training images" in panel.errors.value
    wait_for(lambda: not panel.start_button.disabled, what="the Start button")
    assert panel.trainer is None and panel.status.value == "ready"


# -- text from other people is shown as text -----------------------------------------------------------

HOSTILE = '<img src=x onerror="window.pwned=1">'
TEX = "$\\href{javascript:window.pwned=1}{click}$"  # MathJax would typeset this in a Label or HTML


@pytest.fixture
def bare_app(tmp_path: Path):
    """The app on an empty store, with no dataset (none of these tests needs one)."""
    app = App(store=str(tmp_path / "store"))
    yield app
    app.close()


def widgets_under(root) -> list:
    out, stack = [], [root]
    while stack:
        node = stack.pop()
        out.append(node)
        stack.extend(getattr(node, "children", ()))
    return out


def markup_under(root) -> list[tuple[object, str]]:
    """Every value under ``root`` that the browser parses as HTML."""
    import ipywidgets as w

    found = []
    for widget in widgets_under(root):
        if isinstance(widget, w.HTML | w.HTMLMath):
            found.append((widget, widget.value))
        if getattr(widget, "description_allow_html", False):
            found.append((widget, widget.description))
    return found


def assert_shown_as_text(root, hostile: list[str]) -> None:
    """No hostile string reaches the page as markup or as TeX, wherever it is shown under ``root``."""
    import html
    from html.parser import HTMLParser

    from jupyter_cifar.widgets.common import NO_MATH

    class Tags(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.seen: list[tuple[str, list[tuple[str, str | None]]]] = []

        def handle_starttag(self, tag, attrs) -> None:
            self.seen.append((tag, attrs))

    from jupyter_cifar.widgets.common import STYLE

    for widget, markup in markup_under(root):
        if markup == STYLE:
            continue  # the app's own stylesheet: a constant, nobody's text
        parser = Tags()
        parser.feed(markup)
        for tag, attrs in parser.seen:
            assert tag in ("div", "span", "br", "a", "pre", "b"), (type(widget).__name__, markup[:300])
            assert not any(name.startswith("on") for name, _ in attrs), markup[:300]
        assert not any(text in markup for text in hostile if html.escape(text) != text), markup[:300]
        if markup:  # what a user gave is inside an element MathJax skips (a <pre> it skips anyway)
            assert markup.startswith(("<b>", "<pre")) or all(c in markup for c in NO_MATH), markup[:300]
    for widget in widgets_under(root):
        if type(widget).__name__ == "Label" and any(text in widget.value for text in hostile):
            assert set(NO_MATH) <= set(widget._dom_classes), widget.value


def test_names_notes_and_metadata_from_the_store_cannot_inject_html(bare_app: App, tmp_path: Path) -> None:
    """A version saved by someone else with hostile text in every field it has, shown in every tab."""
    import html

    from PIL import Image

    model_file = tmp_path / "m.keras"
    tiny_model().save(model_file)
    store = bare_app.session.store()
    metadata = {
        "saved_by": HOSTILE,
        "architecture": TEX,
        "preset": HOSTILE,
        "hyperparameters": {HOSTILE: TEX},
        "parent": HOSTILE,
        "test_accuracy": 0.5,
        "history": [{"epoch": 1, "accuracy": 0.5, "val_accuracy": 0.4}],
        "class_names": [f"{HOSTILE}{i}" for i in range(10)],
    }
    record = store.save_file(
        model_file, "hostile", metadata=metadata, tags={"k": HOSTILE, "t": TEX}, notes=HOSTILE + TEX
    )

    models = bare_app.models
    models.refresh().join(30)
    assert f"k={HOSTILE}, t={TEX}" in texts(models.table)  # the tags, verbatim, as text
    models.select(record)
    assert models.notes_view.value == HOSTILE + TEX and models.notes.value == HOSTILE + TEX
    assert html.escape(HOSTILE) in models.details.value and html.escape(TEX) in models.details.value
    models.compare_with.value = record.ref
    wait_for(lambda: models.compare is not None, what="the comparison")
    models.alias.value = HOSTILE  # refused: the error names it, escaped
    models.set_alias().join(30)
    assert "is not a valid alias" in models.errors.value

    classify = bare_app.classify
    classify.refresh_choices().join(30)
    classify.chooser.value = record.ref  # loads it: its class names come from the record
    wait_for(lambda: bare_app.session.record is not None, what="the load")
    picture = io.BytesIO()
    Image.new("RGB", (32, 32), "red").save(picture, "PNG")
    classify.classify([picture.getvalue(), b"junk"], [f"{HOSTILE}.png", f"{TEX}.jpg"]).join(60)
    good, bad = (texts(card) for card in classify.results.children)
    assert good[0] == f"{HOSTILE}.png" and all(line.startswith(HOSTILE) for line in good[1:])
    assert bad[0] == f"{TEX}.jpg" and TEX in bad[1]

    assert_shown_as_text(bare_app, [HOSTILE, TEX])


def test_metadata_of_unexpected_shapes_is_shown_not_trusted(bare_app: App, tmp_path: Path) -> None:
    """Metadata is any JSON a client sent: wrong types neither break the Models tab nor reach the engine."""
    model_file = tmp_path / "m.keras"
    tiny_model().save(model_file)
    store = bare_app.session.store()
    metadata = {
        "hyperparameters": [HOSTILE],
        "preset": "fast",
        "history": [{"epoch": 1, "accuracy": 0.5}, "junk", {"epoch": "two", "accuracy": 0.6}, {"epoch": 3}],
        "class_names": 5,
        "machine": {"cpu": HOSTILE, "ghz": "fast", "features": "avx2", "cores": [2], "gpus": 1},
        "kernels": [HOSTILE],
    }
    record = store.save_file(model_file, "odd", metadata=metadata)
    models = bare_app.models
    models.select(record)
    assert models.errors.value == ""
    # the points whose values are numbers, each where its row ends (row 3 of 4 holds "two" as its epoch)
    assert [list(m.x) for m in models.curves.marks] == [[1.0, 3.0]]
    assert ">fast<" in models.details.value and ">4 epochs<" in models.details.value
    assert "last run on" in models.details.value and "kernels" in models.details.value
    bare_app.session.set_model(store.load(record.ref), record=record)
    assert bare_app.session.class_names is None  # the CIFAR-10 names, not 5
    assert bare_app.session.history == []  # not a history training could continue from
    assert_shown_as_text(bare_app, [HOSTILE])


def test_thumbnails_get_the_decoders_protections(tmp_path: Path) -> None:
    """A thumbnail is decoded like the image it shows: only accepted formats, within the pixel bounds."""
    import io

    from PIL import Image

    from jupyter_cifar.widgets.classify import THUMBNAIL, _thumbnail

    photo = io.BytesIO()
    Image.new("RGB", (640, 480), (200, 30, 30)).save(photo, "JPEG")
    thumb = Image.open(io.BytesIO(_thumbnail(photo.getvalue()) or b""))
    # The whole photo (the model looks at all of it), its aspect kept, drawn at THUMBNAIL pixels wide from
    # twice as many (sharp on a high-density screen).
    assert (thumb.format, thumb.size) == ("PNG", (2 * THUMBNAIL, 2 * THUMBNAIL * 3 // 4))
    assert thumb.convert("RGB").getpixel((48, 48))[0] > 150  # the photo's red
    eps = io.BytesIO()
    Image.new("RGB", (8, 8)).save(eps, "EPS")  # a format Pillow opens but this package never does
    tall = io.BytesIO()
    Image.new("L", (1, 70_000)).save(tall, "PNG")  # over 65,535 pixels on a side
    for hostile in (eps.getvalue(), tall.getvalue(), b"not an image"):
        assert _thumbnail(hostile) is None


def test_classify_cards_follow_the_model_in_hand(app: App, cifar10_dir: Path) -> None:
    """Cards are never shown under another model's name: a model coming into hand classifies them again."""
    store = app.session.store()
    first, second = (
        store.save(tiny_model(name="first"), "first"),
        store.save(tiny_model(name="second"), "second"),
    )
    classify = app.classify
    app.session.set_model(store.load(first.ref), record=first)
    cat = (cifar10_dir / "test" / "cat" / "0000.jpg").read_bytes()
    classify.classify([cat, b"not an image"], ["cat.jpg", "broken.png"]).join(60)
    assert classify.results_by.value == "classified by first:1"
    before = classify.results.children
    app.session.set_model(store.load(second.ref), record=second)
    wait_for(lambda: classify.results_by.value == "classified by second:1", what="the cards made again")
    assert classify.results.children is not before and len(classify.results.children) == 2
    good, broken = classify.results.children
    assert (
        "jc-classify-error-card" in broken._dom_classes and "jc-classify-error-card" not in good._dom_classes
    )
    assert broken.layout.border.endswith("#d9534f")  # an error card looks like one


def test_example_cards_say_whether_the_model_was_right(app: App) -> None:
    train(app, epochs=1, limit=500)
    app.classify.classify_examples(count=8).join(30)
    wait_for(lambda: app.classify.results_by.value.startswith("classified by"), what="the examples")
    verdicts = [t for card in app.classify.results.children for t in texts(card) if t[:1] in "✓✗"]
    assert len(verdicts) == 8
    for card in app.classify.results.children:
        lines = texts(card)
        verdict = next(t for t in lines if t[:1] in "✓✗")
        top = lines[lines.index(verdict) + 1].rsplit(" ", 1)[0]  # the first label, without its share
        truth = verdict.split("it is a ")[1]
        assert verdict.startswith("✓ right") == (top == truth), lines


def test_models_search_as_you_type_by_tag_and_say_what_did_not_match(bare_app: App, tmp_path: Path) -> None:
    store = bare_app.session.store()
    for name, tags in (("cats", {"data": "jpeg"}), ("dogs", {"data": "png"}), ("birds", {"data": "jpeg"})):
        store.save(tiny_model(), name, tags=tags)
    models = bare_app.models
    models.refresh().join(30)
    assert models.page is not None and models.page.total == 3
    models.search.value = "do"  # no Enter: typing alone searches, once typing pauses
    wait_for(lambda: models.page.total == 1, timeout=10, what="search as you type")
    assert models.page.items[0].name == "dogs"
    models.search.value = "zebra"
    wait_for(lambda: models.page.total == 0, timeout=10, what="no match")
    assert models.page_label.value == "no version matches “zebra”"  # not "no models in the store yet"
    models.search.value = ""
    models.tag_filter.value = "data=jpeg"
    wait_for(lambda: models.page.total == 2, timeout=10, what="the tag filter")
    assert sorted(r.name for r in models.page.items) == ["birds", "cats"]
    models.tag_filter.value = "data=gif"
    wait_for(lambda: models.page.total == 0, timeout=10, what="no match")
    assert models.page_label.value == "no version matches data=gif"


def test_a_refresh_keeps_the_rows_it_finds_unchanged(bare_app: App) -> None:
    """A refresh that finds the same versions changes nothing on the page (a click made meanwhile lands
    on its row); a row whose text changed is drawn anew, and one that left is closed."""
    store = bare_app.session.store()
    for name in ("a", "b", "c"):
        store.save(tiny_model(), name)
    models = bare_app.models
    models.refresh().join(30)
    before = models.table.children
    rows = {c.description: c for c in before if "jc-models-row" in c._dom_classes}
    assert sorted(rows) == ["a:1", "b:1", "c:1"]
    models.refresh().join(30)
    assert models.table.children == before and all(
        x is y for x, y in zip(models.table.children, before, strict=True)
    )

    store.set_notes("a:1", "edited elsewhere")  # not in the row: the row stays, a click shows the new record
    store.set_tags("b:1", {"k": "v"})  # in the row: drawn anew
    store.delete("c:1")
    models.refresh().join(30)
    now = {c.description: c for c in models.table.children if "jc-models-row" in c._dom_classes}
    assert sorted(now) == ["a:1", "b:1"] and now["a:1"] is rows["a:1"] and now["b:1"] is not rows["b:1"]
    assert "k=v" in texts(models.table)
    assert rows["b:1"].comm is None and rows["c:1"].comm is None  # closed: no widget left behind
    assert now["a:1"].comm is not None
    click(now["a:1"])
    assert models.selected_label.value == "selected: a:1" and models.notes_view.value == "edited elsewhere"


def test_models_details_show_each_thing_once_and_compare_two_versions(bare_app: App, tmp_path: Path) -> None:
    store = bare_app.session.store()
    history = [
        {"epoch": 1, "loss": 1.5, "accuracy": 0.45, "val_loss": 1.3, "val_accuracy": 0.52, "complete": True},
        {"epoch": 2, "loss": 1.1, "accuracy": 0.61, "val_loss": 1.2, "val_accuracy": 0.58, "complete": True},
    ]
    meta = {
        "preset": "tutorial",
        "history": history,
        "hyperparameters": {"batch_size": 32, "learning_rate": 0.001},
    }
    # a: the precision it trained in, resolved; b: an older record, which kept only the setting asked for.
    a = store.save(
        tiny_model(),
        "a",
        notes="the notes",
        metadata={
            **meta,
            "test_accuracy": 0.58,
            "precision": "mixed_bfloat16",
            "machine": {
                "cpu": "Xeon, family 6 model 207",
                "ghz": 2.1,
                "features": ["avx512f", "amx_tile"],
                "cores": 2,
            },
            "kernels": {"block1_conv1": "oneDNN", "block3_conv1": "matmuls", "block3_conv2": "matmuls"},
        },
    )
    b = store.save(
        tiny_model(),
        "a",
        metadata={**meta, "hyperparameters": {"batch_size": 64, "learning_rate": 0.001, "precision": "auto"}},
    )
    models = bare_app.models
    models.refresh().join(30)
    models.select(a)
    assert "batch_size 32, learning_rate 0.001, precision mixed_bfloat16" in models.details.value
    # where it trained and how: the speed in its record is the speed of that machine
    assert ">Xeon, family 6 model 207 at 2.1 GHz (avx512f, amx_tile), 2 cores<" in models.details.value
    assert ">oneDNN: block1_conv1; matmuls: block3_conv1, block3_conv2<" in models.details.value
    models.alias.value = "prod"
    models.select(b)
    assert models.alias.value == ""  # one click cannot move "prod" onto another version unseen
    assert models.detail_box.children.count(models.notes) == 1 and "the notes" not in models.details.value
    assert [m.labels[0] for m in models.loss_curves.marks] == ["a:2 loss", "a:2 val loss"]
    assert models.curves.axes[1].tick_format == ".0%" and models.curves.axes[1].scale.max == 1
    # ticked at the whole epochs its rows end at, not at d3's 1.1, 1.2, ...
    assert [list(f.axes[0].tick_values) for f in (models.curves, models.loss_curves)] == [[1, 2], [1, 2]]
    assert "a:2 training" in models.legend.value and "a:2 validation" in models.legend.value
    models.compare_with.value = "a:1"
    # The comparison is drawn in the callback that sets it (another thread): wait for the table itself.
    wait_for(
        lambda: models.compare is not None and "a:1" in [c.value for c in models.comparison.children],
        what="the comparison",
    )
    rows = [c.value for c in models.comparison.children]
    assert rows[:3] == ["", "a:2", "a:1"]
    assert "precision auto" in models.details.value  # b's, as it was asked for
    at = rows.index("batch size")
    assert rows[at : at + 3] == ["batch size", "64", "32"]
    bold = {c.value for c in models.comparison.children if c.style.font_weight == "bold"}
    assert {"64", "32"} <= bold and "tutorial" not in bold  # what differs stands out
    assert rows[rows.index("test accuracy") + 2] == "0.5800"
    at = rows.index("precision")
    assert rows[at : at + 3] == ["precision", "auto", "mixed_bfloat16"]
    at = rows.index("last run on")
    assert rows[at : at + 3] == [
        "last run on",
        "-",
        "Xeon, family 6 model 207 at 2.1 GHz (avx512f, amx_tile), 2 cores",
    ]
    assert len(models.curves.marks) == 4 and len(models.loss_curves.marks) == 4


def test_without_a_download_route_the_file_comes_through_the_kernel(bare_app: App, monkeypatch) -> None:
    """Voilà (or any kernel not started by a server with the extension): no link to the API can work,
    so the page says why and offers the file through the kernel."""
    import base64

    monkeypatch.delenv("JUPYTER_CIFAR_SERVER_URL", raising=False)
    store = bare_app.session.store()
    record = store.save(tiny_model(), "dl")
    models = bare_app.models
    models.select(record)
    assert "not served by the Jupyter server" in models.downloads.download.value
    assert models.downloads.prepare.layout.display is None
    models.downloads.fetch().join(30)
    value = models.downloads.download.value
    assert 'download="dl-v1.keras"' in value and "data:application/octet-stream;base64," in value
    data = base64.b64decode(value.split("base64,")[1].split('"')[0])
    with store.open("dl:1") as reader:
        assert data == reader.read()


def test_figures_reach_the_page_only_while_their_tab_is_shown(
    cifar10_dir: Path, tmp_path: Path, cifar10
) -> None:
    """bqplot draws a figure in a hidden tab at zero size ("negative width" errors, wrong layout): the
    Train tab's figures, and a result that ends while another tab is shown, wait for their tab."""
    app = App(tab="classify", store=str(tmp_path / "store"), data=str(cifar10_dir))
    try:
        panel = app.train
        assert panel.progress.figure_row.children == ()  # the app opened on Classify
        app.tabs.selected_index = 0
        assert panel.progress.figure_row.children == (panel.progress.loss_fig, panel.progress.acc_fig)
        panel.form.preset.value, panel.form.epochs.value, panel.form.limit.value = "tutorial", 1, 500
        click(panel.start_button)
        app.tabs.selected_index = 1  # the person looks at Classify while it trains
        wait_for(lambda: trained(panel), what="training")
        assert panel.result_label.value.startswith("test accuracy")  # text is shown at once ...
        assert (
            panel.result_box.children == () and panel.result_box.layout.display == "none"
        )  # ... figures wait
        app.tabs.selected_index = 0
        assert len(panel.result_box.children) == 3 and panel.result_box.layout.display is None
    finally:
        app.close()


def test_continue_says_why_a_model_cannot_be_trained_here(bare_app: App) -> None:
    """An imported model of other classes, or of another input size, is not continued: the note says why."""
    import keras

    panel = bare_app.train
    five = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(), keras.layers.Dense(5)])
    bare_app.session.set_model(five, label="five-classes")
    assert panel.continue_button.disabled
    note = panel.continue_note.value
    assert "cannot be trained here: it has 5 outputs, and CIFAR-10 has 10 classes" in note
    with pytest.raises(RuntimeError, match="five-classes cannot be trained here"):
        panel.continue_config()
    big = keras.Sequential([keras.Input((96, 96, 3)), keras.layers.Flatten(), keras.layers.Dense(10)])
    bare_app.session.set_model(big, label="big")
    assert panel.continue_button.disabled and "it takes (96, 96, 3) inputs" in panel.continue_note.value
    bare_app.session.set_model(tiny_model(), label="tiny")  # 32x32x3 in, 10 out: it can
    assert not panel.continue_button.disabled
