"""How much training a model has had, read off its per-epoch history: one answer for every place.

A history row is one epoch of Keras ``fit`` as the trainer records it (``epoch``, ``batches``,
``batches_per_epoch``, ``complete``, losses and accuracies). A run stopped mid-epoch leaves a row that is
not ``complete``: it counts as the fraction of its batches that ran (1.53 epochs, not 2), and a run
continued from it starts there. Histories saved before rows carried ``batches_per_epoch`` take a
partial row's size from the complete rows beside it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def epoch_fractions(history: Sequence[Any]) -> list[float]:
    """How much of an epoch each row is: 1 for a complete one, the share of its batches otherwise."""
    sizes = [r.get("batches") for r in history if isinstance(r, dict) and r.get("complete")]
    usual = max((s for s in sizes if isinstance(s, int) and _count(s)), default=None)
    fractions = []
    for row in history:
        if not isinstance(row, dict) or row.get("complete", True) is not False:
            fractions.append(1.0)
            continue
        ran, of = row.get("batches"), row.get("batches_per_epoch", usual)
        fractions.append(min(1.0, ran / of) if _count(ran) and _count(of) else 1.0)  # type: ignore[operator]
    return fractions


def epochs_done(history: Sequence[Any]) -> float:
    """The epochs of training a history holds, fractional where a run was stopped mid-epoch."""
    return round(sum(epoch_fractions(history)), 2)


def epoch_ends(history: Sequence[Any]) -> list[float]:
    """Where each row ends on the epochs-done axis (1, 2, 2.53, 3.53, …): where its point is drawn."""
    ends, total = [], 0.0
    for fraction in epoch_fractions(history):
        total += fraction
        ends.append(round(total, 4))
    return ends


def epochs_text(epochs: float) -> str:
    """``1 epoch``, ``2 epochs``, ``1.53 epochs``."""
    if math.isclose(epochs, round(epochs), abs_tol=0.005):
        whole = round(epochs)
        return f"{whole} epoch" if whole == 1 else f"{whole} epochs"
    return f"{epochs:.2f} epochs"


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
