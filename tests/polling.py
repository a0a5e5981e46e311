"""Waiting in tests for what happens in other threads and processes."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(condition: Callable[[], object], timeout: float = 180, what: str = "condition") -> None:
    """Until ``condition()`` is true (every 50 ms); a failed assertion naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
