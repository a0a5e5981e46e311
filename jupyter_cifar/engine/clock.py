"""The learning-rate schedule of a run with a time budget (:mod:`jupyter_cifar.engine.budget`).

:class:`OnTheClock` gives a schedule made for :data:`STEPS` steps ``clock * STEPS`` instead of the
optimizer's step; the trainer sets ``clock`` before each batch to the share of its time spent.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

STEPS = 10_000  # the steps the stretched schedules are made for: only their resolution


def new_clock() -> keras.Variable:
    """The share of the time spent, 0 to 1, that the trainer advances and the schedules read."""
    return keras.Variable(0.0, dtype="float32", trainable=False, name="time_spent")


@keras.saving.register_keras_serializable(package="jupyter_cifar")
class OnTheClock(keras.optimizers.schedules.LearningRateSchedule):
    """``schedule`` (made for ``steps`` steps) at ``clock * steps``, whatever the optimizer's step.

    A checkpoint's compile config holds the inner schedule and ``steps``; the clock is the run's, so one
    made from a config starts a clock of its own at 0.
    """

    def __init__(
        self,
        schedule: keras.optimizers.schedules.LearningRateSchedule,
        steps: int = STEPS,
        clock: keras.Variable | None = None,
    ) -> None:
        self.schedule = schedule
        self.steps = int(steps)
        self.clock = new_clock() if clock is None else clock

    def __call__(self, step: Any) -> Any:
        spent = ops.clip(ops.convert_to_tensor(self.clock, "float32"), 0.0, 1.0)
        return self.schedule(spent * float(self.steps))

    def get_config(self) -> dict[str, Any]:
        return {"schedule": keras.optimizers.schedules.serialize(self.schedule), "steps": self.steps}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> OnTheClock:
        schedule = keras.optimizers.schedules.deserialize(config["schedule"])
        return cls(schedule, config.get("steps", STEPS))
