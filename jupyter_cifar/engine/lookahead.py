"""airbench's lookahead: every few steps the weights are pulled back towards a slow average of themselves.

Every ``every`` steps the slow copy moves towards the weights, ``slow = d * slow + (1 - d) * weights``,
and the weights are set to it; ``d`` ramps from 0 (no pull at the start, when the weights should move
fast) to ``decay`` at the end as ``(step / total) ** power``, and on the last step the weights become the
slow copy itself. airbench94 uses every 5 steps, ``decay`` 0.95**5 and power 3, on every floating-point
variable of the network (BatchNorm's moving statistics included).

It is a Keras callback of the trainer, not part of the model or its optimizer: a saved model holds the
result, nothing of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np


def pull(step: int, total: int, decay: float, power: float) -> float:
    """The slow copy's weight ``d`` at ``step`` of ``total`` (1.0 at the last step: the weights become it)."""
    if step >= total:
        return 1.0
    return decay * (step / total) ** power


class Lookahead(keras.callbacks.Callback):
    """See the module. ``variables``: what to average (the trainer gives the model's floating-point ones:
    the loop trains a view of the model, whose variables are the model's)."""

    def __init__(
        self,
        variables: Sequence[Any],
        total_steps: int,
        *,
        every: int = 5,
        decay: float = 0.95**5,
        power: float = 3.0,
    ) -> None:
        super().__init__()
        if total_steps < 1 or every < 1 or not 0 <= decay < 1:
            raise ValueError(f"bad lookahead: {total_steps=}, {every=}, {decay=}")
        self.variables = list(variables)
        self.total, self.every, self.decay, self.power = total_steps, every, decay, power
        self.slow: list[np.ndarray] = []
        self.step = 0

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.slow = [np.array(keras.ops.convert_to_numpy(v), np.float32) for v in self.variables]
        self.step = 0

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.step += 1
        if self.step % self.every and self.step < self.total:
            return
        d = pull(self.step, self.total, self.decay, self.power)
        for slow, variable in zip(self.slow, self.variables, strict=True):
            now = np.asarray(keras.ops.convert_to_numpy(variable), np.float32)
            slow *= d
            slow += (1 - d) * now
            variable.assign(slow.astype(variable.dtype))
