"""Executors run jobs; the store says which (one contract, a backend per kind, as the stores have).

An executor holds no state of its own that matters: every :meth:`Executor.tick` it reads the store,
marks jobs whose process went silent as interrupted, and starts queued jobs while there is room. A
server restarted with jobs running finds them in the store, running, and leaves them be.

``local`` (the default) starts a process per job (``python -m jupyter_cifar.jobs.runner ID``) in a
session of its own, so that the job outlives the server that started it; at most ``max_jobs`` run at
once (0: jobs wait in the queue), in the order they were queued. The process reads the store from its
environment (``$JUPYTER_CIFAR_STORE``), never from the job.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from ..errors import JupyterCifarError
from ..store import ENV_STORE
from ..store.remote import ENV_SERVER_TOKEN, ENV_SERVER_URL
from .store import STALE_SECONDS, JobStore

log = logging.getLogger(__name__)

TICK_SECONDS = 1.0


class Executor(ABC):
    """Runs the store's queued jobs somewhere."""

    name = ""

    def __init__(self, jobs: JobStore, store_uri: str, *, stale: float = STALE_SECONDS) -> None:
        self.jobs = jobs
        self.store_uri = store_uri
        self.stale = stale
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def check(self) -> None:  # noqa: B027 (an executor that can be unreachable says so)
        """StoreUnavailable if jobs sent now could not reach where they run."""

    def describe(self) -> dict[str, Any]:
        """What a client may know: ``{"executor", "runs"}`` (runs: whether queued jobs are started)."""
        return {"executor": self.name, "runs": True}

    @abstractmethod
    def tick(self) -> None:
        """Look at the store once: mark silent jobs interrupted, start what may start."""

    def start(self, every: float = TICK_SECONDS) -> None:
        """Tick in a background thread until :meth:`close`."""

        def loop() -> None:
            while not self._stop.is_set():
                try:
                    self.tick()
                except JupyterCifarError as e:  # the store is down a moment: the next tick tries again
                    log.warning("jupyter_cifar jobs: %s", e)
                except Exception:
                    log.exception("jupyter_cifar jobs: the %s executor failed a tick", self.name)
                self._stop.wait(every)

        self._thread = threading.Thread(target=loop, name=f"jupyter-cifar-{self.name}-executor", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


class LocalExecutor(Executor):
    """A process per job on this machine, ``max_jobs`` at once (see the module's doc)."""

    name = "local"

    def __init__(
        self,
        jobs: JobStore,
        store_uri: str,
        *,
        max_jobs: int = 1,
        data_dir: str | None = None,
        stale: float = STALE_SECONDS,
        log_dir: Path | None = None,
    ) -> None:
        super().__init__(jobs, store_uri, stale=stale)
        self.max_jobs = max_jobs
        self.data_dir = data_dir
        self.log_dir = log_dir or Path(tempfile.gettempdir()) / "jupyter-cifar-jobs"
        self._children: dict[str, subprocess.Popen[bytes]] = {}  # started here, not yet reaped

    def describe(self) -> dict[str, Any]:
        return {"executor": self.name, "runs": self.max_jobs > 0, "max_jobs": self.max_jobs}

    def tick(self) -> None:
        self.jobs.mark_interrupted(self.stale)
        for job_id, proc in list(self._children.items()):
            if proc.poll() is not None:
                del self._children[job_id]
                # Gone before it claimed its job (a broken install, say): fail it, or it would be
                # started again at every tick.
                self.jobs.fail_queued(
                    job_id, f"its process ended (exit {proc.returncode}) before it ran: {self._tail(job_id)}"
                )
        _, running = self.jobs.list(("running", "stopping"), limit=1)
        queued = self.jobs.queued()
        # Started here but not yet claimed: they will run, so they take a place already.
        starting = {r.id for r in queued if r.id in self._children}
        room = self.max_jobs - running - len(starting)
        for record in queued:
            if room <= 0:
                break
            if record.id not in self._children:
                self._spawn(record.id)
                room -= 1

    def _spawn(self, job_id: str) -> None:
        env = {k: v for k, v in os.environ.items() if k not in (ENV_SERVER_URL, ENV_SERVER_TOKEN)}
        env[ENV_STORE] = self.store_uri
        if self.data_dir:
            env["JUPYTER_CIFAR_DATA"] = self.data_dir
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{job_id}.log", "ab") as out:
            self._children[job_id] = subprocess.Popen(
                [sys.executable, "-m", "jupyter_cifar.jobs.runner", job_id],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # not in the server's process group: it outlives the server
            )
        log.info("jupyter_cifar: job %s started (process %d)", job_id, self._children[job_id].pid)

    def _tail(self, job_id: str) -> str:
        try:
            lines = (self.log_dir / f"{job_id}.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        return lines[-1][-300:] if lines else "no output"
