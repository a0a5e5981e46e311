"""Training in a background thread, observed through plain events and driven by start/stop.

The kernel stays free while the epoch loop (:mod:`jupyter_cifar.engine.loop`: Keras' ``fit`` contract, one
``train_on_batch`` per prepared batch) runs in a thread; a callback turns Keras' hooks into JSON-ready
event dicts that listeners receive (the panels, the command line's progress bar, a test). Nothing here
prints, and nothing here knows about widgets, so the same trainer can later run in a worker process.

Events (``event["type"]``):

- ``start``: ``epochs`` (of this run; ``None`` when it trains for ``minutes`` instead), ``minutes``,
  ``initial_epoch`` (history rows before it), ``epochs_done`` (the training the model had before it,
  fractional: :mod:`jupyter_cifar.engine.history`), ``batches_per_epoch``, ``batch_size``, ``n_train``,
  ``n_test``, ``seed``, ...
- ``batch``: ``epoch``, ``batch``, ``batches``, ``loss``, ``accuracy`` (running means over the epoch),
  ``images_per_second``, ``eta_seconds``, ``done`` (the share of this run done: of its batches, or of its
  time)
- ``epoch``: one history row: ``epoch``, ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``,
  ``seconds``, ``batches``, ``batches_per_epoch``, ``complete``
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
from typing import Any

import keras
import numpy as np

from ..errors import BadParameter
from . import fastview
from .allocator import keep_freed_memory
from .batches import Batches
from .budget import check_backend, check_minutes
from .clock import new_clock
from .compilecache import use_jax_cache
from .data import Dataset
from .history import epochs_done
from .loop import fit_batches
from .nets import (
    DEFAULT_PRESET,
    as_float32,
    build_model,
    compute_policy,
    get_preset,
    inference_copy,
    init_from_data,
    with_precision,
)
from .precision import PRECISIONS, machine, resolve_precision
from .predict import Evaluation, evaluate_probabilities, predict_proba
from .progress import KerasHook, Progress
from .tta import tta_views, with_tta, without_tta

log = logging.getLogger(__name__)

Event = dict[str, Any]
Listener = Callable[[Event], None]
BUDGET_EPOCHS = 1000  # what a run with a time budget may reach before its time is up


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
    # None: the preset's ("auto": mixed_float16 on a GPU, mixed_bfloat16 on a CPU with AMX bf16 units,
    # else float32), or a Keras dtype policy name. A model trained in float16 is returned as float32.
    precision: str | None = None
    validate_each_epoch: bool = True  # False: only the final evaluation (saves a pass per epoch)
    # Train for this long instead of for epochs, the learning rates' schedules spread over the time
    # (:mod:`jupyter_cifar.engine.budget`); the last epoch is then a part of one. Not with ``epochs``.
    minutes: float | None = None

    def resolved(self) -> TrainConfig:
        """Preset defaults filled in; every value checked (``BadParameter`` names the flag)."""
        preset = get_preset(self.preset)
        epochs: int | None = preset.epochs if self.epochs is None else self.epochs
        batch_size = preset.batch_size if self.batch_size is None else self.batch_size
        _at_least(epochs, 1, "--epochs")
        minutes = self.minutes
        if minutes is not None:  # a budgeted run: no number of epochs
            minutes = check_minutes(minutes)
            if self.epochs is not None:
                raise BadParameter("--minutes", "give either --epochs or --minutes, not both")
            epochs = None
        _at_least(batch_size, 1, "--batch-size")
        lr = self.learning_rate
        if lr is None:
            # SGD presets: the rate follows the batch size (the linear scaling rule); Adam's stays.
            scale = batch_size / preset.batch_size if preset.optimizer == "sgd" else 1
            lr = preset.learning_rate * scale
        if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
            raise BadParameter("--learning-rate", f"must be a positive number (got {lr!r})")
        for value, flag in ((self.train_limit, "--train-limit"), (self.test_limit, "--test-limit")):
            if value is not None:
                _at_least(value, 1, flag)
        precision = preset.precision if self.precision is None else self.precision
        if precision not in PRECISIONS:
            raise BadParameter("--precision", f"must be one of {', '.join(PRECISIONS)} (got {precision!r})")
        seed = random.randrange(2**31) if self.seed is None else self.seed
        return replace(
            self,
            epochs=epochs,
            batch_size=batch_size,
            learning_rate=lr,
            seed=seed,
            precision=precision,
            minutes=minutes,
        )


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
    precision: str = "float32"  # the dtype policy training ran under ("auto" resolved)
    machine: dict[str, Any] = field(default_factory=dict)  # where it trained (precision.machine)
    kernels: dict[str, str] = field(default_factory=dict)  # how each 3x3 convolution trained (fastview)
    test_predicted: np.ndarray | None = None  # the class the final model gives each test image

    @property
    def epochs(self) -> int | float:
        """Epochs of training the model has had, fractional where a run was stopped mid-epoch."""
        done = epochs_done(self.history)
        return int(done) if done.is_integer() else done

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
            "precision": self.precision,
            "machine": self.machine,  # images_per_second means little without it
            "kernels": self.kernels,
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


def why_not_trainable(model: keras.Model, classes: int = 10) -> str | None:
    """Why ``model`` cannot be trained further on CIFAR-10 here (its outputs, its input size), or None."""
    outputs = model.output_shape[-1]
    if outputs != classes:
        return f"it has {outputs} outputs, and CIFAR-10 has {classes} classes to train it on"
    size = tuple(model.input_shape[1:])
    if size != (32, 32, 3):
        return f"it takes {size} inputs; training here feeds 32x32x3 images"
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
        asked = config or TrainConfig()
        self.config = asked.resolved()
        self.preset = get_preset(self.config.preset)
        self.data = data.subset(self.config.train_limit, self.config.test_limit, seed=0)
        if asked.batch_size is None and self.preset.min_steps:
            fits = max(16, len(self.data.x_train) // self.preset.min_steps)
            if fits < self.config.batch_size:  # type: ignore[operator]
                self.config = replace(asked, batch_size=fits, seed=self.config.seed).resolved()
        if self.config.batch_size > len(self.data.x_train):  # type: ignore[operator]
            raise BadParameter(
                "--batch-size",
                f"{self.config.batch_size} is larger than the {len(self.data.x_train)} training images",
            )
        if self.config.minutes is not None:
            check_backend()
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
        self._final: keras.Model | None = None  # the model as it is returned and saved
        self._tta = "none"  # the test-time augmentation the returned model gets (tta.TTA_VIEWS)
        self._last_epoch = 0
        self.policy = "float32"  # the dtype policy training ran under
        self.machine: dict[str, Any] = {}  # where it runs (precision.machine), and its kernels there
        self.kernels: dict[str, str] = {}
        self.clock: keras.Variable | None = None  # with a time budget: the share of it spent
        self.time_up = False

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
        counter = Progress(self)
        model = self.model
        try:
            use_jax_cache()  # under JAX, a second run loads its compiled steps instead of compiling them
            keep_freed_memory()  # each step reuses what the last one freed, instead of faulting it in again
            keras.utils.set_random_seed(self.config.seed)
            cfg, data = self.config, self.data
            assert cfg.batch_size is not None and cfg.seed is not None
            if cfg.minutes is not None:
                self.clock = new_clock()
            n_classes = len(data.class_names)
            self.policy = resolve_precision(cfg.precision or "auto")
            if self.model is None:
                model = build_model(cfg.preset, n_classes, precision=self.policy)
                init_from_data(model, data.x_train, seed=cfg.seed)
                self._tta = self.preset.tta
            else:
                self._tta = tta_views(self.model)  # a loaded test-time-augmented model trains its inside
                model = self._in_policy(without_tta(self.model))
            self.model = model
            batches = math.ceil(len(data.x_train) / cfg.batch_size)
            # A budgeted run goes on until its time is up (the hook stops it), at most this many epochs.
            epochs = cfg.epochs if cfg.epochs is not None else BUDGET_EPOCHS
            steps = batches * epochs
            one_hot = _compile(model, self, steps)
            fit_model = fastview.for_training(model, batch=cfg.batch_size)  # shares model's variables
            self.machine, self.kernels = machine(), fastview.kernels(fit_model)
            y = data.y_train.astype(np.int64)
            labels = np.eye(n_classes, dtype=np.float32)[y] if one_hot else y
            initial = len(self.history)
            self._last_epoch = initial + epochs
            self._publish(
                {
                    "type": "start",
                    "preset": cfg.preset,
                    "architecture": model.name,
                    "epochs": cfg.epochs,
                    "minutes": cfg.minutes,
                    "initial_epoch": initial,
                    "epochs_done": epochs_done(self.history),  # before this run: where its curve starts
                    "batches_per_epoch": batches,
                    "batch_size": cfg.batch_size,
                    "precision": self.policy,
                    "machine": self.machine,
                    "kernels": self.kernels,
                    "learning_rate": cfg.learning_rate,
                    "n_train": len(data.x_train),
                    "n_test": len(data.x_test),
                    "seed": cfg.seed,
                    "parent": self.parent,
                }
            )
            counter.begin(batches, epochs, cfg.batch_size)
            if not self._stop.is_set():
                hook = KerasHook(self, counter)
                batches_source = Batches(
                    data.x_train,
                    labels,
                    cfg.batch_size,
                    augment=self.preset.augment,
                    translate=self.preset.translate,
                    color=self.preset.color,
                    seed=cfg.seed,
                )
                try:
                    fit_batches(
                        fit_model,
                        batches_source,
                        epochs=initial + epochs,
                        initial_epoch=initial,
                        callbacks=[hook, *self._recipe_callbacks(model, steps)],
                    )
                finally:
                    batches_source.close()
            model = self.final_model()
            self.model = model
            evaluation, test_predicted = self._evaluate(model)
            pictures = evaluation.pictures(self.data.x_test)
            self._publish({"type": "evaluation", **evaluation.to_json(), "pictures": pictures})
            status = "stopped" if self._stop.is_set() else "finished"
            error = None
        except Exception as e:
            log.debug("training failed", exc_info=True)
            status, error, evaluation, test_predicted = "failed", f"{type(e).__name__}: {e}", None, None
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
            test_predicted=test_predicted,
            precision=self.policy,
            machine=self.machine,
            kernels=self.kernels,
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

    def _in_policy(self, model: keras.Model) -> keras.Model:
        """A loaded model, rebuilt to train in this run's precision (as a new one would: a model saved in
        float32 trains in bfloat16 where that is faster here, and the other way round), or in its own
        where it cannot be rebuilt."""
        try:
            return with_precision(model, self.policy)
        except ValueError as e:
            self.policy = compute_policy(model)
            log.warning("jupyter_cifar: %s; it trains in the precision it has, %s", e, self.policy)
            return model

    def _recipe_callbacks(self, model: keras.Model, total_steps: int) -> list[keras.callbacks.Callback]:
        """The preset's training-time pieces that live outside the model and its optimizer."""
        if not self.preset.lookahead:
            return []
        if self.clock is not None:
            raise BadParameter("--minutes", "lookahead's pull is planned in steps; train for epochs with it")
        from .lookahead import Lookahead

        floats = [v for v in model.variables if "float" in str(v.dtype)]  # the model's, not the view's
        return [Lookahead(floats, total_steps)]

    def final_model(self) -> keras.Model:
        """The trained model as it is returned and saved: float32, test-time-augmented if the preset is,
        not compiled.

        Made once, at the last epoch's end (so that epoch's validation already measures it) or when
        training ends early; validation results from before it are not reused for it.
        """
        if self._final is None:
            assert self.model is not None
            model = as_float32(self.model)
            if self._tta != "none":
                model = with_tta(model, self._tta)
            if model is not self.model:
                self._last_val = None
            else:  # the same predictions, without the optimizer: a saved model opens with plain Keras
                model = inference_copy(model)
            self._final = model
        return self._final

    def _validate(self, model: keras.Model, epoch: int) -> dict[str, float]:
        probs = predict_proba(model, self.data.x_test)
        self._last_val = (epoch, probs)
        y = self.data.y_test.astype(np.int64)
        p_true = np.clip(probs[np.arange(len(y)), y], 1e-7, 1.0)
        return {
            "val_loss": round(float(-np.log(p_true).mean()), 6),
            "val_accuracy": round(float((probs.argmax(axis=1) == y).mean()), 6),
        }

    def _evaluate(self, model: keras.Model) -> tuple[Evaluation, np.ndarray]:
        """The final evaluation and the class given to each test image, reusing the last epoch's
        validation pass when nothing changed since."""
        last = self._last_val
        if last is not None and self.history and last[0] == self.history[-1]["epoch"]:
            probs = last[1]
        else:
            probs = predict_proba(model, self.data.x_test)
        evaluation = evaluate_probabilities(probs, self.data.y_test, self.data.class_names)
        return evaluation, probs.argmax(axis=1)


def _compile(model: keras.Model, trainer: Trainer, total_steps: int) -> bool:
    from .nets import compile_for_training

    lr = trainer.config.learning_rate
    assert lr is not None
    return compile_for_training(model, trainer.preset, lr, total_steps, trainer.clock)
