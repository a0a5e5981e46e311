"""Epochs of training read off a history: fractional where a run stopped mid-epoch, the same everywhere."""

from __future__ import annotations

import pytest

from jupyter_cifar.engine.history import epoch_ends, epochs_done, epochs_text


def row(epoch: int, batches: int, complete: bool, of: int | None = 100) -> dict:
    out = {"epoch": epoch, "batches": batches, "complete": complete}
    if of is not None:
        out["batches_per_epoch"] = of
    return out


def test_a_stopped_row_counts_as_the_part_of_an_epoch_it_ran() -> None:
    history = [row(1, 100, True), row(2, 53, False), row(3, 100, True), row(4, 100, True)]
    assert epochs_done(history) == 3.53
    assert epoch_ends(history) == [1, 1.53, 2.53, 3.53]  # a continued run goes on from 1.53, no gap


def test_histories_saved_before_rows_knew_their_epoch_size_take_it_from_complete_rows() -> None:
    assert epochs_done([row(1, 80, True, of=None), row(2, 20, False, of=None)]) == 1.25
    assert epochs_done([row(1, 20, False, of=None)]) == 1  # nothing to measure it by: a whole one
    assert epochs_done([{"epoch": 1}, {"epoch": 2}, "junk"]) == 3  # any other shape: one row, one epoch
    assert epochs_done([]) == 0


@pytest.mark.parametrize(
    ("epochs", "text"), [(1, "1 epoch"), (2, "2 epochs"), (1.53, "1.53 epochs"), (2.0, "2 epochs")]
)
def test_epochs_read_as_people_write_them(epochs: float, text: str) -> None:
    assert epochs_text(epochs) == text
