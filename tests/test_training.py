"""The trainer on real CIFAR-10 (small subsets): accuracy, events, stop, continue, seeds."""

from __future__ import annotations

import json
import statistics
import threading
from pathlib import Path

import numpy as np
import pytest

from jupyter_cifar.engine.modelfiles import load_model
from jupyter_cifar.engine.nets import compute_policy
from jupyter_cifar.engine.predict import predict_proba
from jupyter_cifar.engine.training import TrainConfig, Trainer, TrainResult
from jupyter_cifar.errors import BadParameter

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def small(cifar10):
    """5,000 training and 1,000 test images, class-balanced, from the JPEG copy."""
    return cifar10.subset(5000, 1000)


def _train(data, **config) -> tuple[TrainResult, list[dict]]:
    events: list[dict] = []
    trainer = Trainer(data, TrainConfig(**config))
    trainer.subscribe(events.append)
    return trainer.run(), events


@pytest.fixture(scope="module")
def tutorial_runs(small):
    return [_train(small, preset="tutorial", epochs=1, seed=seed)[0] for seed in (1, 2, 3)]


def test_tutorial_learns_in_one_epoch(tutorial_runs) -> None:
    accuracies = [r.evaluation.accuracy for r in tutorial_runs]
    assert all(r.status == "finished" and r.evaluation.n == 1000 for r in tutorial_runs)
    # Chance is 0.10; the tutorial network reaches about 0.3 after one epoch on 5,000 images.
    assert statistics.median(accuracies) > 0.30, accuracies


def test_default_preset_clearly_beats_tutorial(small, tutorial_runs) -> None:
    result, _ = _train(small, epochs=1, seed=1)
    assert result.config.preset == "fast"
    best_tutorial = max(r.evaluation.accuracy for r in tutorial_runs)
    assert result.evaluation.accuracy > best_tutorial + 0.05, (
        result.evaluation.accuracy,
        [r.evaluation.accuracy for r in tutorial_runs],
    )


def test_events_are_plain_json_and_complete(tutorial_runs, small) -> None:
    result, events = _train(small.subset(1000, 200), preset="tutorial", epochs=2, seed=4)
    for event in events:
        json.dumps(event, allow_nan=False)  # JSON-ready, as the panels and a worker process need
    kinds = [e["type"] for e in events]
    assert kinds[0] == "start" and kinds[-2:] == ["evaluation", "end"]
    batches = [e for e in events if e["type"] == "batch"]
    start = events[0]
    assert len(batches) == 2 * start["batches_per_epoch"]
    assert start["precision"] == result.precision == "float32"  # the tutorial preset's, named at the start
    assert all(e["images_per_second"] > 0 and e["loss"] > 0 for e in batches)
    # no estimate from the first batches (they trace the graph: it said 22:37, then 0:14), then one that falls
    assert [e["eta_seconds"] for e in batches[:2]] == [None, None]
    assert batches[-1]["eta_seconds"] < batches[3]["eta_seconds"]
    epochs = [e for e in events if e["type"] == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert all(e["complete"] and 0 <= e["val_accuracy"] <= 1 for e in epochs)
    assert events[-1] == {
        "type": "end",
        "status": "finished",
        "error": None,
        "seconds": pytest.approx(result.seconds, abs=1e-3),
        "images_per_second": pytest.approx(result.images_per_second, abs=0.1),
    }


def test_final_evaluation_has_per_class_and_confusion(small, tutorial_runs) -> None:
    ev = tutorial_runs[0].evaluation
    # The class the final model gives each test image comes with it (a fine-tuning's negative flips
    # read it instead of classifying the test set again).
    predicted = predict_proba(tutorial_runs[0].model, small.x_test).argmax(axis=1)
    np.testing.assert_array_equal(tutorial_runs[0].test_predicted, predicted)
    assert ev.accuracy == pytest.approx(float((predicted == small.y_test).mean()), abs=1e-6)
    confusion = np.array(ev.confusion)
    assert confusion.shape == (10, 10) and confusion.sum() == ev.n == 1000
    assert ev.accuracy == pytest.approx(np.trace(confusion) / ev.n, abs=1e-6)
    assert list(ev.per_class) == list(ev.class_names)
    assert ev.per_class["cat"] == pytest.approx(confusion[3, 3] / confusion[3].sum(), abs=1e-6)
    assert ev.worst and all(w["label"] != w["predicted"] for w in ev.worst)
    confidence = [w["probability"] for w in ev.worst]  # of the wrong answer: what the gallery shows
    assert confidence == sorted(confidence, reverse=True)  # the most confidently wrong first


def test_stop_during_an_epoch_ends_before_its_last_batch(small) -> None:
    trainer = Trainer(small, TrainConfig(preset="tutorial", epochs=3, seed=1))
    seen: list[dict] = []

    def on_event(event: dict) -> None:
        seen.append(event)
        if event["type"] == "batch" and event["batch"] == 5:
            trainer.stop()

    trainer.subscribe(on_event)
    assert trainer.start() is trainer
    result = trainer.wait(120)
    assert result is not None and result.status == "stopped" and trainer.state == "stopped"
    batches_per_epoch = seen[0]["batches_per_epoch"]
    # Stop was asked during batch 5: training ends with that batch, long before the epoch's last.
    assert max(e["batch"] for e in seen if e["type"] == "batch") == 5 < batches_per_epoch
    assert result.history == [
        {
            "epoch": 1,
            "loss": pytest.approx(result.history[0]["loss"]),
            "accuracy": pytest.approx(result.history[0]["accuracy"]),
            "val_loss": None,
            "val_accuracy": None,
            "seconds": pytest.approx(result.history[0]["seconds"]),
            "batches": 5,
            "batches_per_epoch": batches_per_epoch,
            "complete": False,
        }
    ]
    assert result.epochs == round(5 / batches_per_epoch, 2)  # the part of an epoch it was, not 1
    assert result.evaluation is not None and result.evaluation.n == 1000  # still evaluated


def test_training_runs_in_a_background_thread(small) -> None:
    threads: set[str] = set()
    trainer = Trainer(small.subset(640, 100), TrainConfig(preset="tutorial", epochs=1, seed=1))
    trainer.subscribe(lambda e: threads.add(threading.current_thread().name))
    trainer.start()
    assert trainer.state == "running"  # start() returned while the model trains
    with pytest.raises(RuntimeError, match="already been started"):
        trainer.start()
    assert trainer.wait(120) is not None
    assert threads == {"jupyter-cifar-train"}


def test_continue_training_appends_history_and_notes_parent(small, tmp_path: Path) -> None:
    data = small.subset(1000, 200)
    first, _ = _train(data, preset="tutorial", epochs=1, seed=1)
    path = tmp_path / "first.keras"
    first.model.save(path)
    loaded = load_model(path)
    trainer = Trainer(
        data,
        TrainConfig(preset="tutorial", epochs=2, seed=2),
        model=loaded,
        history=first.history,
        parent="first.keras",
    )
    events: list[dict] = []
    trainer.subscribe(events.append)
    second = trainer.run()
    assert second.status == "finished"
    assert [h["epoch"] for h in second.history] == [1, 2, 3]
    assert second.history[0] == first.history[0]
    assert events[0]["initial_epoch"] == 1 and events[0]["parent"] == "first.keras"
    assert second.metadata()["parent"] == "first.keras"
    # It really went on from the loaded weights: the first new epoch starts far below a fresh loss.
    assert second.history[1]["loss"] < first.history[0]["loss"]
    assert second.precision == "float32"  # the tutorial preset's


def test_a_model_trained_further_trains_in_the_precision_of_the_run(small, tmp_path: Path) -> None:
    """A loaded model is rebuilt in the run's precision (weights unchanged), as a new one would be built: a
    float32 model goes on in bfloat16 where that is asked for (or "auto" finds it faster), and back."""
    data = small.subset(1000, 200)
    first, _ = _train(data, preset="tutorial", epochs=1, seed=1)
    path = tmp_path / "first.keras"
    first.model.save(path)
    loaded = load_model(path)
    assert compute_policy(loaded) == "float32"
    trainer = Trainer(
        data,
        TrainConfig(preset="tutorial", epochs=1, seed=2, precision="mixed_bfloat16"),
        model=loaded,
        history=first.history,
    )
    events: list[dict] = []
    trainer.subscribe(events.append)
    second = trainer.run()
    assert second.status == "finished", second.error
    assert events[0]["precision"] == second.precision == second.metadata()["precision"] == "mixed_bfloat16"
    assert compute_policy(second.model) == "mixed_bfloat16"
    assert second.model.layers[-1].compute_dtype == "float32"  # the softmax stays float32
    assert second.history[1]["loss"] < first.history[0]["loss"]  # it went on from the loaded weights
    path = tmp_path / "second.keras"
    second.model.save(path)
    again = load_model(path)  # plain Keras in safe mode; it computes in what it was trained in
    assert compute_policy(again) == "mixed_bfloat16" and again.dtype_policy.name == "float32"
    third = Trainer(data, TrainConfig(preset="tutorial", epochs=1, seed=3), model=again).run()
    assert third.status == "finished" and third.precision == "float32"  # the tutorial's own, once more
    assert compute_policy(third.model) == "float32"


def test_a_seed_makes_a_run_repeatable(small) -> None:
    data = small.subset(1000, 200)
    a, _ = _train(data, preset="fast", epochs=1, seed=7)
    b, _ = _train(data, preset="fast", epochs=1, seed=7)
    c, _ = _train(data, preset="fast", epochs=1, seed=8)
    assert a.history[0]["loss"] == b.history[0]["loss"]
    assert a.evaluation.confusion == b.evaluation.confusion
    assert a.history[0]["loss"] != c.history[0]["loss"]


def test_checkpoint_is_rewritten_each_epoch(small, tmp_path: Path) -> None:
    checkpoint = tmp_path / "run.keras"
    stamps = []
    trainer = Trainer(
        small.subset(500, 100),
        TrainConfig(preset="tutorial", epochs=2, seed=1, checkpoint=str(checkpoint)),
    )
    trainer.subscribe(
        lambda e: stamps.append(checkpoint.stat().st_mtime_ns) if e["type"] == "epoch" else None
    )
    trainer.run()
    assert len(stamps) == 2 and stamps[0] < stamps[1]
    assert load_model(checkpoint).count_params() == trainer.model.count_params()


def test_metadata_is_json_ready(tutorial_runs) -> None:
    meta = tutorial_runs[0].metadata()
    json.dumps(meta, allow_nan=False)
    assert meta["architecture"] == "tutorial" and meta["input_shape"] == [32, 32, 3]
    assert meta["hyperparameters"]["seed"] == 1 and meta["hyperparameters"]["batch_size"] == 32
    assert meta["dataset"]["n_train"] == 5000 and len(meta["class_names"]) == 10
    assert meta["test_accuracy"] == tutorial_runs[0].evaluation.accuracy
    assert meta["precision"] == "float32"  # the tutorial's own; "auto" is resolved before it is kept


@pytest.mark.parametrize(
    ("config", "param"),
    [
        ({"epochs": 0}, "--epochs"),
        ({"batch_size": 0}, "--batch-size"),
        ({"batch_size": 6000}, "--batch-size"),  # larger than the 5,000 images
        ({"preset": "resnet9000"}, "--preset"),
        ({"learning_rate": -1.0}, "--learning-rate"),
        ({"train_limit": 0}, "--train-limit"),
    ],
)
def test_bad_parameters_name_themselves(small, config: dict, param: str) -> None:
    with pytest.raises(BadParameter) as err:
        Trainer(small, TrainConfig(**config))
    assert err.value.param == param and param in str(err.value)


def test_a_failure_in_training_is_reported_not_raised_in_the_thread(small) -> None:
    from jupyter_cifar.engine.nets import build_model

    wrong = build_model("tutorial", num_classes=3)  # labels go up to 9: the loss fails
    trainer = Trainer(small.subset(200, 50), TrainConfig(preset="tutorial", epochs=1), model=wrong)
    events: list[dict] = []
    trainer.subscribe(events.append)
    result = trainer.start().wait(120)
    assert result is not None and result.status == "failed" and result.error
    assert events[-1]["type"] == "end" and events[-1]["status"] == "failed"
