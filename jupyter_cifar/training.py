"""Training in a background thread, observed through plain events and driven by start/stop.

The kernel stays free while Keras ``fit`` runs in a thread; a callback turns Keras' hooks into JSON-ready
event dicts that listeners receive (the panels, the command line's progress bar, a test). Nothing here
prints, and nothing here knows about widgets, so the same trainer can later run in a worker process.

Events (``event["type"]``):

- ``start``: ``epochs``, ``batches_per_epoch``, ``batch_size``, ``n_train``, ``n_test``, ``seed``, ...
- ``batch``: ``epoch``, ``batch``, ``batches``, ``loss``, ``accuracy`` (running means over the epoch),
  ``images_per_second``, ``eta_seconds``
- ``epoch``: one history row: ``epoch``, ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``,
  ``seconds``, ``batches``, ``complete``
- ``evaluation``: ``accuracy``, ``n``, ``per_class``, ``confusion``, ``worst``
- ``end``: ``status`` (``finished``, ``stopped`` or ``failed``), ``error``, ``seconds``,
  ``images_per_second``
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import keras
import numpy as np

from .data import Dataset
from .errors import BadParameter
from .nets import DEFAULT_PRESET, get_preset
from .predict import Evaluation, evaluate_probabilities, predict_proba

log = logging.getLogger(__name__)

Event = dict[str, Any]
Listener = Callable[[Event], None]


@dataclass(frozen=True)
class TrainConfig:
    """What to train and how; ``None`` means the preset's own value."""

    preset: str = DEFAULT_PRESET
    epochs: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    train_limit: int | None = None  # a class-balanced subset of the training images
    test_limit: int | None = None  # likewise for the validation / evaluation images
    seed: int | None = None  # None: a random seed, recorded so the run can be repeated
    checkpoint: str | None = None  # a .keras path rewritten at each epoch's end

    def resolved(self) -> TrainConfig:
        """Preset defaults filled in; every value checked (``BadParameter`` names the flag)."""
        preset = get_preset(self.preset)
        epochs = preset.epochs if self.epochs is None else self.epochs
        batch_size = preset.batch_size if self.batch_size is None else self.batch_size
        lr = preset.learning_rate if self.learning_rate is None else self.learning_rate
        _at_least(epochs, 1, "--epochs")
        _at_least(batch_size, 1, "--batch-size")
        if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
            raise BadParameter("--learning-rate", f"must be a positive number (got {lr!r})")
        for value, flag in ((self.train_limit, "--train-limit"), (self.test_limit, "--test-limit")):
            if value is not None:
                _at_least(value, 1, flag)
        seed = random.randrange(2**31) if self.seed is None else self.seed
        return replace(self, epochs=epochs, batch_size=batch_size, learning_rate=lr, seed=seed)


def _at_least(value: object, low: int, flag: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise BadParameter(flag, f"must be a whole number of at least {low} (got {value!r})")


@dataclass
class TrainResult:
    """What a run produced: the model, its whole history, and the final evaluation."""

    model: keras.Model
    status: str  # "finished" | "stopped" | "failed"
    config: TrainConfig
    history: list[dict[str, Any]]
    evaluation: Evaluation | None
    seconds: float
    images_seen: int
    images_per_second: float
    dataset: dict[str, Any] = field(default_factory=dict)
    parent: str | None = None
    error: str | None = None

    @property
    def epochs(self) -> int:
        return len(self.history)

    def metadata(self) -> dict[str, Any]:
        """JSON-ready facts worth keeping with the saved model (what a registry records)."""
        ev = self.evaluation
        return {
            "architecture": self.model.name,
            "preset": self.config.preset,
            "hyperparameters": {
                k: v for k, v in asdict(self.config).items() if k not in ("preset", "checkpoint")
            },
            "dataset": self.dataset,
            "history": self.history,
            "test_accuracy": ev.accuracy if ev else None,
            "per_class_accuracy": ev.per_class if ev else None,
            "class_names": list(self.dataset.get("class_names", [])),
            "input_shape": list(self.model.input_shape[1:]),
            "parent": self.parent,
            "status": self.status,
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.images_per_second, 1),
            "keras_version": keras.__version__,
            "backend": keras.backend.backend(),
            "backend_version": _backend_version(),
        }


def _backend_version() -> str | None:
    import importlib

    name = keras.backend.backend()
    try:
        return str(importlib.import_module(name).__version__)
    except (ImportError, AttributeError):
        return None


class Trainer:
    """Trains one model in a background thread.

    ``start()`` returns at once; ``stop()`` ends training after the batch in progress; ``wait()`` gives the
    :class:`TrainResult`. Pass ``model`` (and its ``history``) to continue training a loaded model: the
    new epochs are appended to that history and ``parent`` records where the model came from.
    """

    def __init__(
        self,
        data: Dataset,
        config: TrainConfig | None = None,
        *,
        model: keras.Model | None = None,
        history: Sequence[dict[str, Any]] = (),
        parent: str | None = None,
    ) -> None:
        self.config = (config or TrainConfig()).resolved()
        self.preset = get_preset(self.config.preset)
        self.data = data.subset(self.config.train_limit, self.config.test_limit, seed=0)
        if self.config.batch_size > len(self.data.x_train):  # type: ignore[operator]
            raise BadParameter(
                "--batch-size",
                f"{self.config.batch_size} is larger than the {len(self.data.x_train)} training images",
            )
        self.model = model
        self.history: list[dict[str, Any]] = [dict(h) for h in history]
        self.parent = parent
        self.state = "ready"  # ready -> running -> finished | stopped | failed
        self.result: TrainResult | None = None
        self._listeners: list[Listener] = []
        self._stop = threading.Event()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_val: tuple[int, np.ndarray] | None = None

    # -- observing -------------------------------------------------------------------------------
    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(event)`` (from the training thread) for every event; returns an unsubscribe."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _publish(self, event: Event) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:  # a broken listener must not kill the training
                log.exception("jupyter_cifar: a training listener failed")

    # -- driving ---------------------------------------------------------------------------------
    def start(self) -> Trainer:
        if self._thread is not None:
            raise RuntimeError("this trainer has already been started; make a new one to go on")
        self.state = "running"
        self._thread = threading.Thread(target=self._run, name="jupyter-cifar-train", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ask training to end after the current batch (then the model is still evaluated)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def wait(self, timeout: float | None = None) -> TrainResult | None:
        """The result once training has ended, or ``None`` if ``timeout`` passed first."""
        self._done.wait(timeout)
        return self.result

    def run(self) -> TrainResult:
        """Train in the calling thread (scripts); ``stop()`` from another thread still works."""
        self.state = "running"
        self._run()
        assert self.result is not None
        return self.result

    # -- the work --------------------------------------------------------------------------------
    def _run(self) -> None:
        start = time.perf_counter()
        counter = _Progress(self)
        model = self.model
        try:
            keras.utils.set_random_seed(self.config.seed)
            cfg, data = self.config, self.data
            assert cfg.epochs is not None and cfg.batch_size is not None
            model = self.model or self.preset.build(len(data.class_names))
            self.model = model
            batches = math.ceil(len(data.x_train) / cfg.batch_size)
            one_hot = _compile(model, self, batches * cfg.epochs)
            y = data.y_train.astype(np.int64)
            labels = np.eye(len(data.class_names), dtype=np.float32)[y] if one_hot else y
            initial = len(self.history)
            self._publish(
                {
                    "type": "start",
                    "preset": cfg.preset,
                    "architecture": model.name,
                    "epochs": cfg.epochs,
                    "initial_epoch": initial,
                    "batches_per_epoch": batches,
                    "batch_size": cfg.batch_size,
                    "learning_rate": cfg.learning_rate,
                    "n_train": len(data.x_train),
                    "n_test": len(data.x_test),
                    "seed": cfg.seed,
                    "parent": self.parent,
                }
            )
            counter.begin(batches, cfg.epochs, cfg.batch_size)
            if not self._stop.is_set():
                model.fit(
                    data.x_train,
                    labels,
                    batch_size=cfg.batch_size,
                    epochs=initial + cfg.epochs,
                    initial_epoch=initial,
                    shuffle=True,
                    verbose=0,
                    callbacks=[_KerasHook(self, counter)],
                )
            evaluation = self._evaluate(model)
            self._publish({"type": "evaluation", **evaluation.to_json()})
            status = "stopped" if self._stop.is_set() else "finished"
            error = None
        except Exception as e:
            log.debug("training failed", exc_info=True)
            status, error, evaluation = "failed", f"{type(e).__name__}: {e}", None
        seconds = time.perf_counter() - start
        self.result = TrainResult(
            model=model,
            status=status,
            config=self.config,
            history=self.history,
            evaluation=evaluation,
            seconds=seconds,
            images_seen=counter.images,
            images_per_second=counter.images / counter.train_seconds if counter.images else 0.0,
            dataset={**self.data.describe()},
            parent=self.parent,
            error=error,
        )
        self.state = status
        self._publish(
            {
                "type": "end",
                "status": status,
                "error": error,
                "seconds": round(seconds, 3),
                "images_per_second": round(self.result.images_per_second, 1),
            }
        )
        self._done.set()

    def _validate(self, model: keras.Model, epoch: int) -> dict[str, float]:
        probs = predict_proba(model, self.data.x_test)
        self._last_val = (epoch, probs)
        y = self.data.y_test.astype(np.int64)
        p_true = np.clip(probs[np.arange(len(y)), y], 1e-7, 1.0)
        return {
            "val_loss": round(float(-np.log(p_true).mean()), 6),
            "val_accuracy": round(float((probs.argmax(axis=1) == y).mean()), 6),
        }

    def _evaluate(self, model: keras.Model) -> Evaluation:
        """The final evaluation, reusing the last epoch's validation pass when nothing changed since."""
        last = self._last_val
        if last is not None and self.history and last[0] == self.history[-1]["epoch"]:
            probs = last[1]
        else:
            probs = predict_proba(model, self.data.x_test)
        return evaluate_probabilities(probs, self.data.y_test, self.data.class_names)


def _compile(model: keras.Model, trainer: Trainer, total_steps: int) -> bool:
    from .nets import compile_for_training

    lr = trainer.config.learning_rate
    assert lr is not None
    return compile_for_training(model, trainer.preset, lr, total_steps)


class _Progress:
    """Counts images and time; estimates speed (moving average) and the time left."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.images = 0
        self.train_seconds = 0.0
        self.rate = 0.0  # images/s, exponential moving average
        self.batches = self.epochs = self.batch_size = 0
        self.done_batches = 0

    def begin(self, batches: int, epochs: int, batch_size: int) -> None:
        self.batches, self.epochs, self.batch_size = batches, epochs, batch_size

    def batch(self, size: int, seconds: float) -> None:
        self.images += size
        self.train_seconds += seconds
        self.done_batches += 1
        now = size / seconds if seconds > 0 else 0.0
        # The first batches include graph tracing: start the average from the overall rate.
        self.rate = now if self.done_batches <= 2 else 0.9 * self.rate + 0.1 * now

    def eta(self) -> float:
        left = self.batches * self.epochs - self.done_batches
        return left * self.batch_size / self.rate if self.rate > 0 else float("nan")


class _KerasHook(keras.callbacks.Callback):
    """Turns Keras' callback hooks into trainer events, and honours a stop request between batches."""

    def __init__(self, trainer: Trainer, progress: _Progress) -> None:
        super().__init__()
        self.trainer = trainer
        self.progress = progress
        self.epoch_start = self.batch_start = 0.0
        self.epoch_batches = 0
        self.last_logs: dict[str, Any] = {}

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch_start = time.perf_counter()
        self.epoch_batches = 0

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self.batch_start = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        p, t = self.progress, self.trainer
        n_train = len(t.data.x_train)
        size = min(p.batch_size, n_train - batch * p.batch_size)
        p.batch(size, time.perf_counter() - self.batch_start)
        self.epoch_batches = batch + 1
        logs = logs or {}
        self.last_logs = logs
        t._publish(
            {
                "type": "batch",
                "epoch": len(t.history) + 1,
                "batch": batch + 1,
                "batches": p.batches,
                "loss": _num(logs.get("loss")),
                "accuracy": _num(logs.get("accuracy")),
                "images_per_second": round(p.rate, 1),
                "eta_seconds": _num(p.eta()),
            }
        )
        if t.stopping:
            self.model.stop_training = True

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        t, p = self.trainer, self.progress
        logs = logs or self.last_logs
        complete = self.epoch_batches == p.batches
        row: dict[str, Any] = {
            "epoch": len(t.history) + 1,
            "loss": _num(logs.get("loss")),
            "accuracy": _num(logs.get("accuracy")),
            "val_loss": None,
            "val_accuracy": None,
            "seconds": round(time.perf_counter() - self.epoch_start, 3),
            "batches": self.epoch_batches,
            "complete": complete,
        }
        t.history.append(row)
        if not t.stopping:
            row.update(t._validate(self.model, row["epoch"]))
        if t.config.checkpoint:
            from .modelfiles import save_model

            save_model(self.model, Path(t.config.checkpoint))
        t._publish({"type": "epoch", **row})


def _num(value: Any) -> float | None:
    """A finite float rounded for JSON, or None (JSON has no NaN)."""
    if value is None:
        return None
    f = float(value)
    return round(f, 6) if math.isfinite(f) else None
