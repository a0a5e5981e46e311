"""Training for a time instead of epochs: the checks, the schedule on the clock, a real budgeted run."""

from __future__ import annotations

import json
import math
import time

import keras
import numpy as np
import pytest

from jupyter_cifar.engine import nets
from jupyter_cifar.engine.budget import MAX_MINUTES, check_minutes
from jupyter_cifar.engine.clock import STEPS, OnTheClock, new_clock
from jupyter_cifar.engine.modelfiles import load_model
from jupyter_cifar.engine.training import TrainConfig, Trainer
from jupyter_cifar.errors import BadParameter
from jupyter_cifar.jobs.records import JobSpec, describe_spec


@pytest.mark.parametrize("bad", [0, -1, math.nan, math.inf, True, "5", None, MAX_MINUTES + 1])
def test_minutes_must_be_a_positive_number(bad) -> None:
    with pytest.raises(BadParameter) as e:
        check_minutes(bad)
    assert e.value.param == "--minutes"


def test_minutes_or_epochs_not_both() -> None:
    config = TrainConfig(preset="fast", minutes=2.5).resolved()
    assert config.minutes == 2.5 and config.epochs is None  # no epoch count: the clock ends the run
    assert TrainConfig(preset="fast").resolved().epochs == 2
    with pytest.raises(BadParameter, match="either --epochs or --minutes") as e:
        TrainConfig(preset="fast", epochs=3, minutes=1).resolved()
    assert e.value.param == "--minutes"


def test_job_spec_checks_minutes() -> None:
    spec = JobSpec.from_json({"preset": "balanced", "minutes": 9})
    assert spec.minutes == 9.0 and spec.to_json()["minutes"] == 9.0
    assert describe_spec(spec.to_json()) == "balanced, 9 minutes"
    assert describe_spec({"preset": "fast", "minutes": 1}) == "fast, 1 minute"
    for bad, says in (
        ({"minutes": 0}, "more than 0"),
        ({"minutes": "10"}, "number of minutes"),
        ({"minutes": 5, "epochs": 2}, "not both"),
        ({"minutes": 5, "parent": "m:1", "photos": "mine"}, "fine-tuning"),
    ):
        with pytest.raises(BadParameter, match=says) as e:
            JobSpec.from_json(bad)
        assert e.value.param == "minutes"


def test_the_schedule_follows_the_clock_not_the_step() -> None:
    clock = new_clock()
    warmup = round(STEPS * 0.15)
    cosine = keras.optimizers.schedules.CosineDecay(
        0.1, STEPS - warmup, alpha=0.01, warmup_target=1.0, warmup_steps=warmup
    )
    schedule = OnTheClock(cosine, STEPS, clock)
    seen = []
    for spent in (0.0, 0.15, 0.575, 1.0, 1.5):
        clock.assign(spent)
        seen.append(float(schedule(step=3)))  # the step is ignored
    assert seen == pytest.approx([0.1, 1.0, 0.505, 0.01, 0.01], abs=1e-3)
    # A checkpoint keeps the inner schedule (a clock of its own, at 0, if loaded).
    again = OnTheClock.from_config(json.loads(json.dumps(schedule.get_config())))
    assert again.steps == STEPS and float(again(0)) == pytest.approx(0.1)


def test_a_traced_training_step_reads_the_clock_each_time() -> None:
    """The compiled step must see the clock's value now, not the one it was traced with."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    clock = new_clock()
    falling = keras.optimizers.schedules.PolynomialDecay(0.1, STEPS, 0.0)
    model.compile(optimizer=keras.optimizers.SGD(OnTheClock(falling, STEPS, clock)), loss="mse")
    x, y = np.ones((8, 4), np.float32), np.zeros((8, 1), np.float32)

    def step() -> float:
        before = model.get_weights()[0].copy()
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)
        return float(np.abs(model.get_weights()[0] - before).max())

    clock.assign(1.0)  # time up: a rate of 0
    assert step() == 0.0
    clock.assign(0.0)  # the same traced function, the full rate
    assert step() > 1e-3


def test_the_presets_optimizers_run_on_the_clock() -> None:
    clock = new_clock()
    optimizer = nets.make_optimizer(nets.get_preset("balanced"), 1.0, total_steps=50, clock=clock)
    assert isinstance(optimizer, keras.optimizers.MultiOptimizer)
    # SGD for the rest, SGD at 64x for BatchNorm's offsets, Muon for the kernels: each on the one clock
    inner = [o._learning_rate for o in optimizer._inner_optimizers]
    assert len(inner) == 3 and all(isinstance(s, OnTheClock) and s.clock is clock for s in inner), inner
    clock.assign(1.0)
    rates = sorted(float(s(0)) for s in inner)
    # at the end: Muon's linear decay at 0, SGD's cosine at its floor (1 % of the rate, 64x for offsets)
    assert rates == pytest.approx([0.0, 0.01, 0.64], abs=1e-4)


@pytest.mark.slow
def test_a_budgeted_run_trains_until_its_time_is_up(cifar10, tmp_path) -> None:
    data = cifar10.subset(2000, 500)
    checkpoint = tmp_path / "budget.keras"
    events: list[dict] = []
    first = tmp_path / "epoch1.keras"

    def keep_first_checkpoint(event: dict) -> None:  # written with the optimizer, before its event
        if event["type"] == "epoch" and event["epoch"] == 1:
            first.write_bytes(checkpoint.read_bytes())

    budget = 0.5  # minutes: 30 s of training, the first traced batch included (under load it takes 10 s)
    trainer = Trainer(data, TrainConfig(preset="fast", minutes=budget, seed=1, checkpoint=str(checkpoint)))
    trainer.subscribe(events.append)
    trainer.subscribe(keep_first_checkpoint)
    began = time.perf_counter()
    result = trainer.run()
    whole = time.perf_counter() - began

    assert result.status == "finished", result.error
    start = events[0]
    assert start["type"] == "start" and start["minutes"] == budget and start["epochs"] is None
    batches = [e for e in events if e["type"] == "batch"]
    done = [e["done"] for e in batches]
    assert done == sorted(done) and done[-1] >= 0.99  # the share of the time, to its end
    assert batches[-1]["eta_seconds"] < 1.0
    # The time ends it, not the preset's 2 epochs: more of them fit 30 s on 2,000 images (on the
    # Xeon; on a 2-core AVX2 CPU under the suite's load, 2, the second cut short), the last a part of one.
    rows = result.history
    assert len(rows) >= 2 and all(r["complete"] for r in rows[:-1])
    assert len(rows) > 2 or not rows[-1]["complete"]
    assert result.epochs == pytest.approx(sum(r["batches"] / r["batches_per_epoch"] for r in rows), abs=0.01)
    trained = sum(r["seconds"] for r in rows)
    assert trained < budget * 60 + 2 and whole > budget * 60, (trained, whole)
    # The last epoch's validation is of the final model, and it is the final evaluation.
    assert rows[-1]["val_accuracy"] == pytest.approx(result.evaluation.accuracy, abs=1e-6)
    assert result.evaluation.accuracy > 0.3, result.evaluation.accuracy  # chance: 0.1 (0.40 on AVX2 only)
    assert result.metadata()["hyperparameters"]["minutes"] == budget
    # A checkpoint names the schedule on the clock in its optimizer, and loads in safe mode.
    assert "OnTheClock" in _compile_config(first)
    assert load_model(first).count_params() == load_model(checkpoint).count_params()
    # The schedule came to its end with the time: Muon's rate at 0.
    assert float(trainer.clock.numpy()) == pytest.approx(1.0, abs=0.02)


def _compile_config(path) -> str:
    import zipfile

    with zipfile.ZipFile(path) as z:
        return json.dumps(json.loads(z.read("config.json")).get("compile_config"))
