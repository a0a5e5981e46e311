"""Following a job from its first event: what ``jobs watch`` prints and what the Train tab draws.

:func:`follow` yields a job's events in order, from its whole history (``after=0``) on, long-polling for
new ones until the job has ended and every event it published has been seen. :class:`JobFollower` runs
that in a thread and hands each event to its subscribers, as a :class:`~jupyter_cifar.engine.training.Trainer`
does: the Train tab draws a job exactly as it draws a training in its own kernel.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import JupyterCifarError, NotFound
from .client import JobClient
from .records import ENDED

log = logging.getLogger(__name__)

POLL_SECONDS = 10  # a long poll waits this long for an event at most
RETRY_SECONDS = 2.0  # after the server did not answer


def follow(
    client: JobClient,
    job_id: str,
    *,
    after: int = 0,
    wait: float = POLL_SECONDS,
    cancelled: Callable[[], bool] = lambda: False,
    on_state: Callable[[str], None] = lambda state: None,
) -> Iterator[dict[str, Any]]:
    """Every event of the job after ``after`` (each with its ``seq``), until it has ended (or
    ``cancelled()``); ``on_state`` hears the job's state at each answer."""
    while not cancelled():
        events, after, state = client.events(job_id, after, wait=wait)
        on_state(state)
        yield from events
        if not events and state in ENDED:
            return


class JobFollower:
    """A job seen from a kernel, shaped like a trainer: ``subscribe``, ``start``, ``stop``, ``state``.

    Subscribers get every event from the job's first (a re-attached kernel redraws the whole run), then
    each new one as the job publishes it; when the job has ended, ``on_ended`` gets its final JSON (its
    saved model, its test accuracy, or its error). A server that does not answer a moment is tried
    again; ``detach`` stops following, never the job.
    """

    def __init__(self, client: JobClient, job: dict[str, Any], *, wait: float = POLL_SECONDS) -> None:
        self.client = client
        self.job = job  # its JSON as last read
        self.id: str = job["id"]
        self.state: str = job["state"]
        self.wait = wait
        self.stop_asked = False
        self._subscribers: list[Callable[[dict[str, Any]], None]] = []
        self._ended: list[Callable[[dict[str, Any]], None]] = []
        self._detached = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def stopping(self) -> bool:
        return self.stop_asked or self.state == "stopping"

    def subscribe(self, callback: Callable[[dict[str, Any]], None]) -> None:
        self._subscribers.append(callback)

    def on_ended(self, callback: Callable[[dict[str, Any]], None]) -> None:
        self._ended.append(callback)

    def start(self) -> threading.Thread:
        self._thread = threading.Thread(target=self._run, name=f"jupyter-cifar-job-{self.id}", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self) -> None:
        """Ask the job to stop (it ends after its current batch, its model evaluated and saved)."""
        self.stop_asked = True
        self.job = self.client.stop(self.id)
        self.state = self.job["state"]

    def detach(self) -> None:
        self._detached.set()

    @property
    def detached(self) -> bool:
        return self._detached.is_set()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _set_state(self, state: str) -> None:
        self.state = state

    def _run(self) -> None:
        after = 0
        while not self.detached:
            try:
                for event in follow(
                    self.client,
                    self.id,
                    after=after,
                    wait=self.wait,
                    cancelled=self._detached.is_set,
                    on_state=self._set_state,
                ):
                    after = event["seq"]
                    if self.detached:
                        return
                    for callback in self._subscribers:
                        callback({k: v for k, v in event.items() if k != "seq"})
                if self.detached:
                    return
                self.job = self.client.get(self.id)
                self.state = self.job["state"]
                for callback in self._ended:
                    callback(self.job)
                return
            except NotFound as e:  # deleted meanwhile: nothing more will come
                self.state = "deleted"
                for callback in self._ended:
                    callback({**self.job, "state": "deleted", "error": str(e)})
                return
            except JupyterCifarError as e:  # the server restarting, the network: try again, from `after`
                log.info("following job %s: %s", self.id, e)
                if self._detached.wait(RETRY_SECONDS):
                    return
