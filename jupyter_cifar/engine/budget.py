"""Training for a length of time instead of a number of epochs, the learning rates' schedules fitted to it.

Ultralytics' ``time=`` re-plans its epochs and schedule after each epoch from their mean time;
Lightning's ``max_time`` stops where the schedule happens to be. Here the preset's schedules (warm-up,
then cosine or linear decay to their end values) are stretched over the time instead of the steps: each
is read at the share of the time spent (set by the trainer before every batch) instead of at the
optimizer's step. The warm-up takes the first 15 % of the time and the rates reach their end values when
it is up, however fast the machine runs meanwhile (these shared CPUs change speed twofold within
minutes, so a plan made from a first measurement would miss). The clock decides the number of steps, so
a budgeted run is not repeatable step for step even with a seed.

The schedule (:mod:`jupyter_cifar.engine.clock`) reads a variable that TensorFlow's traced step captures
by reference; a JAX-compiled step would see its first value as a constant, so a budget needs Keras'
TensorFlow backend (checked). This module imports no Keras: a job's spec is checked with it in the server.
"""

from __future__ import annotations

import math

from ..errors import BadParameter

MAX_MINUTES = 7 * 24 * 60


def check_minutes(minutes: object, flag: str = "--minutes") -> float:
    """``minutes`` as a float, or ``BadParameter`` naming ``flag``."""
    if isinstance(minutes, bool) or not isinstance(minutes, int | float) or not math.isfinite(minutes):
        raise BadParameter(flag, f"must be a number of minutes (got {str(minutes)[:40]!r})")
    if not 0 < minutes <= MAX_MINUTES:
        raise BadParameter(flag, f"must be more than 0 and at most {MAX_MINUTES} (a week; got {minutes!r})")
    return float(minutes)


def minutes_text(minutes: float) -> str:
    """ "1 minute", "2.5 minutes"."""
    number = f"{minutes:.2f}".rstrip("0").rstrip(".")
    return f"{number} minute" + ("s" if minutes != 1 else "")


def check_backend() -> None:
    """``BadParameter`` unless Keras runs on TensorFlow (see the module)."""
    import keras

    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise BadParameter(
            "--minutes", f"a time budget needs Keras' TensorFlow backend; Keras is running on {backend}"
        )
