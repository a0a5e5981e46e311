"""The trainer's epoch loop: Keras' ``fit`` contract (its callbacks, ``stop_training``, running means of
the metrics over the epoch) driven one ``train_on_batch`` per prepared batch.

Why not ``fit`` itself: fed batches from Python (a ``PyDataset``), ``fit`` reads them under TensorFlow
through ``tf.data.Dataset.from_generator`` and two enqueuer threads, which take their share of a small
machine's cores from the step: on a 2-core AMD EPYC of family 25 model 1 (AVX2, no AVX-512), ``fast``
trained at 566-634 images/s through ``fit`` and 619-713 through this loop, freed memory kept in both
(:mod:`jupyter_cifar.engine.allocator`; ``benchmarks/train_loop.py``). And ``fit`` shuffles a
``PyDataset``'s batches once more, which the trainer's batches, shuffled as an epoch, do not need. The
batches are prepared in numpy a whole epoch ahead (:class:`jupyter_cifar.engine.batches.Batches`), so
nothing is lost by handing them over one at a time.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

import keras
import numpy as np

log = logging.getLogger(__name__)


class BatchSource(Protocol):
    """What the loop reads: ``len()`` batches of an epoch, each ``(x, y)``, and a turn to the next epoch."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]: ...

    def on_epoch_end(self) -> None: ...


def fit_batches(
    model: keras.Model,
    batches: BatchSource,
    *,
    epochs: int,
    initial_epoch: int = 0,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> dict[str, float]:
    """Train ``model`` (compiled) on ``batches`` for epochs ``initial_epoch`` to ``epochs`` (as ``fit``
    counts them), calling ``callbacks`` as ``fit`` does; the last logs. A callback ends training early by
    setting ``model.stop_training``, after the batch in progress."""
    hooks = keras.callbacks.CallbackList(list(callbacks), model=model)
    model.stop_training = False
    if len(batches) and initial_epoch < epochs:
        build_before_tracing(model, *batches[0])
    hooks.on_train_begin()
    logs: dict[str, float] = {}
    for epoch in range(initial_epoch, epochs):
        hooks.on_epoch_begin(epoch)
        means = RunningMeans()
        for step in range(len(batches)):
            hooks.on_train_batch_begin(step)
            x, y = batches[step]
            logs = means.add(model.train_on_batch(x, y, return_dict=True), len(x))
            hooks.on_train_batch_end(step, logs)
            if model.stop_training:
                break
        batches.on_epoch_end()
        hooks.on_epoch_end(epoch, dict(logs))
        if model.stop_training:
            break
    hooks.on_train_end(dict(logs))
    return logs


def build_before_tracing(model: keras.Model, x: np.ndarray, y: np.ndarray) -> None:
    """Create the optimizer's, the metrics' and the loss's variables before the first step is traced.

    Under TensorFlow with no distribution strategy, Keras 3 leaves them to the train step's first trace,
    and a ``tf.function`` that creates variables is traced twice over (once to create them, once to run):
    on a 2-core AMD EPYC (AVX2) the first step of Keras' ResNet50 at 32x32 took 39-41 s, 20-21 s with them
    made first, and ``fast``'s 3.2-3.6 s, 1.9-2.0 s (``benchmarks/first_step.py``). Keras builds them the
    same way itself under a distribution strategy (``_symbolic_build``, which it calls there from
    ``train_on_batch``); with no such method (another Keras), or where it cannot build this model, the
    first trace makes them as before.
    """
    build = getattr(model, "_symbolic_build", None)
    if keras.backend.backend() != "tensorflow" or build is None or model.optimizer is None:
        return
    try:
        build(data_batch=(x, y, None))
    except Exception:  # only time is lost: the step's first trace builds what is left, as it always did
        log.debug("the variables are left to the first step's trace", exc_info=True)


class RunningMeans:
    """The means over an epoch so far of each batch's logs, weighted by the batch's size (as ``fit``'s
    metrics give them: ``train_on_batch`` gives each batch's own)."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0

    def add(self, logs: dict[str, Any], size: int) -> dict[str, float]:
        self.count += size
        for name, value in logs.items():
            self.sums[name] = self.sums.get(name, 0.0) + float(value) * size
        return {name: total / self.count for name, total in self.sums.items()}
