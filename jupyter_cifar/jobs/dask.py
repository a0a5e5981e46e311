"""The ``dask`` executor: queued jobs go to an existing Dask distributed cluster as tasks.

Each worker runs :func:`run_on_worker`, which reads the store from the worker's own environment
(``$JUPYTER_CIFAR_STORE``, the same MongoDB the server uses) and runs the job there. What Dask does not
give comes from the store, as for the local executor:

- Dask keeps nothing across a scheduler restart: the store still has every job; a queued job whose task
  was lost is simply sent again.
- Dask cannot interrupt a running task: stop is the job's own (its heartbeat brings the request back,
  and the trainer stops after its current batch).
- Dask runs a task again when its worker dies: the new run finds the job no longer queued (its owner is
  the dead process) and returns at once, so no two copies ever train; the silent job becomes
  ``interrupted``, and ``resume`` queues it for a worker again.

``distributed`` is an optional extra (``pip install "jupyter_cifar[dask]"``).
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import StoreUnavailable
from ..store import ENV_STORE
from .executors import Executor
from .store import STALE_SECONDS, JobStore

CONNECT_SECONDS = 5.0


def run_on_worker(job_id: str) -> str:
    """The task a Dask worker runs: the job, with the worker's own store configuration."""
    from distributed import get_worker

    from .runner import run_job

    store = os.environ.get(ENV_STORE)
    if not store:
        raise RuntimeError(f"this Dask worker has no ${ENV_STORE}: start it with the store's URI set")
    return run_job(store, job_id, address=get_worker().address)


class DaskExecutor(Executor):
    name = "dask"

    def __init__(
        self, jobs: JobStore, store_uri: str, *, scheduler: str, stale: float = STALE_SECONDS
    ) -> None:
        super().__init__(jobs, store_uri, stale=stale)
        self.scheduler = scheduler
        self._client: Any = None
        self._tasks: dict[str, Any] = {}  # task key -> its future, while it may still claim its job

    def check(self) -> None:
        """StoreUnavailable naming the scheduler if it cannot be reached now."""
        self._connect()

    def _connect(self) -> Any:
        try:
            from distributed import Client
        except ImportError:
            raise StoreUnavailable(
                'the dask executor needs the distributed package: pip install "jupyter_cifar[dask]"'
            ) from None
        if self._client is not None and self._client.status == "running":
            return self._client
        try:
            self._client = Client(self.scheduler, timeout=CONNECT_SECONDS, set_as_default=False)
        except (OSError, TimeoutError) as e:
            self._client = None
            raise StoreUnavailable(f"the Dask scheduler at {self.scheduler} cannot be reached: {e}") from None
        return self._client

    def tick(self) -> None:
        self.jobs.mark_interrupted(self.stale)
        queued = self.jobs.queued()
        for key, future in list(self._tasks.items()):
            if future.done():
                del self._tasks[key]  # ran (or was lost with a scheduler: the job, still queued, goes again)
        if not queued:
            return
        client = self._connect()
        for record in queued:
            key = f"jupyter-cifar-job-{record.id}-{record.attempt}"
            if key not in self._tasks:
                self._tasks[key] = client.submit(run_on_worker, record.id, key=key, pure=False)

    def close(self) -> None:
        super().close()
        if self._client is not None:
            self._client.close()
            self._client = None
