"""Live training curves over a whole run at bounded cost, on the epochs-of-training axis."""

from __future__ import annotations

import bqplot as bq
import numpy as np

from .common import epochs_figure, epochs_scales

MAX_POINTS = 400  # per curve: the whole run, averaged in buckets of equal width
TRAIN_COLOUR, VAL_COLOUR = "#1f77b4", "#ff7f0e"


class Curve:
    """One live line over a whole run at bounded cost.

    Points are averaged in buckets of an equal number of points; when there are more than
    ``max_points`` buckets, neighbours merge and the bucket width doubles. Every part of the run keeps
    the same resolution: after ten epochs the first looks as it did live, only coarser.
    """

    def __init__(self, mark: bq.Lines, max_points: int = MAX_POINTS) -> None:
        self.mark = mark
        self.max_points = max_points
        self.width = 1  # points per bucket
        self.buckets: list[list[float]] = []  # [sum of x, sum of y, count]
        self.dirty = False

    def add(self, x: float, y: float) -> None:
        if self.buckets and self.buckets[-1][2] < self.width:
            last = self.buckets[-1]
            last[0] += x
            last[1] += y
            last[2] += 1
        else:
            self.buckets.append([x, y, 1])
            if len(self.buckets) > self.max_points:
                pairs = [self.buckets[i : i + 2] for i in range(0, len(self.buckets), 2)]
                self.buckets = [[sum(b[k] for b in pair) for k in range(3)] for pair in pairs]
                self.width *= 2
        self.dirty = True

    @property
    def x(self) -> list[float]:
        return [b[0] / b[2] for b in self.buckets]

    @property
    def y(self) -> list[float]:
        return [b[1] / b[2] for b in self.buckets]

    def truncate(self, x_max: float) -> None:
        """Forget the points past ``x_max``: a resumed job goes on from its last checkpoint, and the
        part of an epoch its lost process had drawn is trained again."""
        kept = [b for b in self.buckets if b[0] / b[2] <= x_max + 1e-9]
        if len(kept) != len(self.buckets):
            self.buckets = kept
            self.dirty = True

    def clear(self) -> None:
        self.buckets, self.width = [], 1
        self.dirty = True

    def flush(self) -> None:
        if self.dirty:
            self.dirty = False
            with self.mark.hold_sync():
                self.mark.x = np.asarray(self.x, dtype=float)
                self.mark.y = np.asarray(self.y, dtype=float)


def loss_accuracy_figure(title: str, cls: str, metric: str) -> tuple[bq.Figure, Curve, Curve]:
    scales = epochs_scales(metric)
    train = bq.Lines(x=[], y=[], scales=scales, colors=[TRAIN_COLOUR], labels=["training"])
    val = bq.Lines(
        x=[], y=[], scales=scales, colors=[VAL_COLOUR], labels=["validation"], marker="circle", marker_size=24
    )
    fig = epochs_figure(title, metric, cls, [train, val], scales, height="280px", min_width="300px")
    return fig, Curve(train), Curve(val)
