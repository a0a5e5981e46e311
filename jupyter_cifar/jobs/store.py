"""Jobs in the store beside the models: one contract (:class:`JobStore`), a backend per kind of store.

Everything a job is lives here, so that any process that can open the store (the server, a job's own
process, a Dask worker, a restarted server) sees the same truth. The logic is written once, on a few
primitives each backend makes atomic:

- ``_update(id, expect, changes)``: change a record only if its fields still hold what ``expect`` says
  (a compare-and-set: two processes claiming one job, a stop racing the end, a late heartbeat from a
  process that lost its job: exactly one wins);
- ``_append(id, owner, events)``: number events on from the last, for the process that owns the job;
- reading records and events, deleting, and one checkpoint file per job.

A job's process claims it (:meth:`JobStore.claim`) with a token of its own, heartbeats while it runs
(learning of a stop request in the answer), appends its events, replaces its checkpoint at each
epoch's end, and finishes it. A job whose heartbeat is older than ``stale`` seconds has lost its process:
:meth:`JobStore.mark_interrupted` says so, and :meth:`JobStore.resume` queues it again.
"""

from __future__ import annotations

import builtins
import socket
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from ..errors import BadParameter, Conflict, NotFound
from ..store.base import ModelStore
from ..store.records import MAX_INT, now_iso
from .records import ACTIVE, RESUMABLE, STATES, JobRecord, JobSpec, check_job_id, new_job_id

STALE_SECONDS = 30.0  # no heartbeat for this long: the job's process is gone
Expect = dict[str, Any]  # field -> value, or a tuple of allowed values


class JobStore(ABC):
    """Job records, their numbered events and their checkpoint, in a model store's home."""

    display = "jobs"

    # -- primitives ------------------------------------------------------------------------------
    @abstractmethod
    def _insert(self, record: JobRecord) -> None: ...

    @abstractmethod
    def _get(self, job_id: str) -> JobRecord | None: ...

    @abstractmethod
    def _list(
        self, states: Sequence[str], limit: int, offset: int
    ) -> tuple[builtins.list[JobRecord], int]: ...

    @abstractmethod
    def _update(self, job_id: str, expect: Expect, changes: dict[str, Any]) -> bool:
        """Apply ``changes`` to the record if it exists and matches ``expect``; whether it did."""

    @abstractmethod
    def _append(self, job_id: str, owner: str, events: Sequence[dict[str, Any]]) -> int | None:
        """Number ``events`` on from the record's ``events`` count and keep them, if ``owner`` owns the
        job; the new count, or None (it does not own the job)."""

    @abstractmethod
    def _events(self, job_id: str, after: int, limit: int) -> builtins.list[tuple[int, dict[str, Any]]]: ...

    @abstractmethod
    def _delete(self, job_id: str) -> bool:
        """Remove the record, its events and its checkpoint; whether the record was there."""

    @abstractmethod
    def _put_checkpoint(self, job_id: str, path: Path, epochs: int) -> None:
        """Keep ``path`` as the job's checkpoint, holding ``epochs`` history rows, in place of any other
        (the new one whole before the old one goes)."""

    @abstractmethod
    def _open_checkpoint(self, job_id: str) -> tuple[IO[bytes], int] | None:
        """The newest checkpoint and the history rows it holds, or None."""

    def close(self) -> None:  # noqa: B027 (optional)
        pass

    # -- the contract ----------------------------------------------------------------------------
    def create(self, spec: JobSpec, executor: str = "local") -> JobRecord:
        record = JobRecord(id=new_job_id(), state="queued", spec=spec, created=now_iso(), executor=executor)
        self._insert(record)
        return record

    def get(self, job_id: str) -> JobRecord:
        record = self._get(check_job_id(job_id))
        if record is None:
            raise NotFound(f"no job {job_id}")
        return record

    def list(
        self, states: Sequence[str] = (), limit: int = 50, offset: int = 0
    ) -> tuple[builtins.list[JobRecord], int]:
        """Jobs in these states (all if none), newest first, and how many match in all."""
        for state in states:
            if state not in STATES:
                raise BadParameter("state", f"{state!r} is not a job state ({', '.join(STATES)})")
        if not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise BadParameter("limit", f"must be a number from 1 to 1000 (got {limit!r})")
        if not isinstance(offset, int) or not 0 <= offset <= MAX_INT:
            raise BadParameter("offset", f"must be a number from 0 to {MAX_INT} (got {str(offset)[:40]})")
        return self._list(tuple(states), limit, offset)

    def queued(self) -> builtins.list[JobRecord]:
        """The jobs waiting to run, oldest first (the order they run in)."""
        jobs, _ = self._list(("queued",), 1000, 0)
        return sorted(jobs, key=lambda r: r.created)

    def claim(self, job_id: str, owner: str, worker: dict[str, Any] | None = None) -> JobRecord | None:
        """Take a queued job to run it: the record (now ``running``, owned by ``owner``), or None if it
        is not queued (another process took it, it was stopped or deleted)."""
        record = self.get(job_id)
        if record.state != "queued":
            return None
        changes = {
            "state": "running",
            "owner": owner,
            "worker": worker or {"host": socket.gethostname(), "pid": None, "address": None},
            "started": now_iso(),
            "heartbeat": time.time(),
            "attempt": record.attempt + 1,
            "error": None,
        }
        if not self._update(job_id, {"state": "queued", "attempt": record.attempt}, changes):
            return None
        return self.get(job_id)

    def beat(self, job_id: str, owner: str, progress: dict[str, Any] | None = None) -> bool:
        """The owner is alive (and how far it is): whether a stop was asked. ``Conflict`` if the job is
        no longer this owner's (it was marked interrupted and resumed elsewhere, or deleted)."""
        changes: dict[str, Any] = {"heartbeat": time.time()}
        if progress is not None:
            changes["progress"] = progress
        if not self._update(job_id, {"owner": owner, "state": ("running", "stopping")}, changes):
            raise Conflict(f"job {job_id} is no longer run by this process")
        return self.get(job_id).stop_requested

    def publish(self, job_id: str, owner: str, events: Sequence[dict[str, Any]]) -> int:
        """Keep events in order; the number of the last one. ``Conflict`` if the job is not the owner's."""
        if not events:
            return self.get(job_id).events
        count = self._append(job_id, owner, events)
        if count is None:
            raise Conflict(f"job {job_id} is no longer run by this process")
        return count

    def events(
        self, job_id: str, after: int = 0, limit: int = 1000
    ) -> builtins.list[tuple[int, dict[str, Any]]]:
        """Events numbered after ``after`` (0: from the first), in order, as ``(number, event)``."""
        check_job_id(job_id)
        if not isinstance(after, int) or after < 0:
            raise BadParameter("after", f"must be a number from 0 (got {after!r})")
        if not isinstance(limit, int) or not 1 <= limit <= 100_000:
            raise BadParameter("limit", f"must be a number from 1 to 100000 (got {limit!r})")
        return self._events(job_id, after, limit)

    def wait_events(
        self, job_id: str, after: int = 0, wait: float = 0.0, poll: float = 0.2
    ) -> tuple[builtins.list[tuple[int, dict[str, Any]]], str]:
        """Like :meth:`events`, waiting up to ``wait`` seconds for one when there is none yet (and the job
        has not ended); with the job's state, read before the events (a job publishes all its events
        before it ends, so an ended state means nothing comes after them)."""
        deadline = time.monotonic() + max(0.0, min(wait, 60.0))
        while True:
            state = self.get(job_id).state
            found = self.events(job_id, after)
            if found or time.monotonic() >= deadline or state not in ACTIVE:
                return found, state
            time.sleep(poll)

    def request_stop(self, job_id: str) -> JobRecord:
        """Stop a job: a queued one at once (``stopped``), a running one after its current batch."""
        for _ in range(5):  # a state changing meanwhile: look again
            record = self.get(job_id)
            if record.state == "queued":
                if self._update(job_id, {"state": "queued"}, {"state": "stopped", "ended": now_iso()}):
                    return self.get(job_id)
            elif record.state in ("running", "stopping"):
                if self._update(
                    job_id, {"state": ("running", "stopping")}, {"state": "stopping", "stop_requested": True}
                ):
                    return self.get(job_id)
            else:
                raise Conflict(f"job {job_id} is {record.state}: there is nothing to stop")
        raise Conflict(f"job {job_id} kept changing state; try again")

    def finish(
        self,
        job_id: str,
        owner: str,
        state: str,
        *,
        model: str | None = None,
        test_accuracy: float | None = None,
        error: str | None = None,
        progress: dict[str, Any] | None = None,
    ) -> JobRecord:
        """The owner's last word: how it ended, its model, and how far it got (the last heartbeat may be
        older than its last batch; a finished job got all the way)."""
        if state not in ("finished", "stopped", "failed"):
            raise ValueError(f"a job finishes as finished, stopped or failed, not {state!r}")
        final = dict(progress if progress is not None else self.get(job_id).progress)
        if state == "finished":
            final["fraction"] = 1.0
        changes = {
            "progress": final,
            "state": state,
            "ended": now_iso(),
            "model": model,
            "test_accuracy": test_accuracy,
            "error": error,
            "owner": None,
        }
        if not self._update(job_id, {"owner": owner, "state": ("running", "stopping")}, changes):
            raise Conflict(f"job {job_id} is no longer run by this process")
        return self.get(job_id)

    def fail_queued(self, job_id: str, error: str) -> bool:
        """A queued job that cannot run (its process could not start): failed, saying why. False if it is
        no longer queued (its process claimed it after all)."""
        return self._update(
            job_id, {"state": "queued"}, {"state": "failed", "ended": now_iso(), "error": error}
        )

    def mark_interrupted(self, stale: float = STALE_SECONDS) -> builtins.list[str]:
        """Jobs whose process stopped heartbeating ``stale`` seconds ago become ``interrupted``."""
        marked = []
        cutoff = time.time() - stale
        running, _ = self._list(("running", "stopping"), 1000, 0)
        for record in running:
            if record.heartbeat is not None and record.heartbeat < cutoff:
                changes = {
                    "state": "interrupted",
                    "ended": now_iso(),
                    "owner": None,
                    "error": f"its process stopped answering ({stale:.0f} s without a heartbeat)",
                }
                if self._update(record.id, {"owner": record.owner, "heartbeat": record.heartbeat}, changes):
                    marked.append(record.id)
        return marked

    def resume(self, job_id: str) -> JobRecord:
        """Queue an interrupted, stopped or failed job again: it goes on from its last checkpoint."""
        record = self.get(job_id)
        if record.state not in RESUMABLE:
            raise Conflict(f"job {job_id} is {record.state}: only {', '.join(RESUMABLE)} jobs resume")
        changes = {"state": "queued", "ended": None, "error": None, "stop_requested": False, "owner": None}
        if not self._update(job_id, {"state": record.state, "attempt": record.attempt}, changes):
            raise Conflict(f"job {job_id} changed meanwhile; try again")
        return self.get(job_id)

    def delete(self, job_id: str) -> JobRecord:
        """Remove a job that is not running: its record, events and checkpoint (never a saved model)."""
        record = self.get(job_id)
        if record.state in ("running", "stopping"):
            raise Conflict(f"job {job_id} is {record.state}: stop it first")
        if not self._delete(job_id):
            raise NotFound(f"no job {job_id}")
        return record

    def save_checkpoint(self, job_id: str, owner: str, path: Path, epochs: int) -> None:
        """The model at the end of history row ``epochs``: what a resume goes on from."""
        if self.get(job_id).owner != owner:
            raise Conflict(f"job {job_id} is no longer run by this process")
        self._put_checkpoint(job_id, path, epochs)

    @contextmanager
    def checkpoint(self, job_id: str) -> Iterator[tuple[IO[bytes], int] | None]:
        """The job's last checkpoint (a ``.keras`` file's bytes) and the history rows it holds, or None
        if it has none yet."""
        self.get(job_id)
        found = self._open_checkpoint(job_id)
        try:
            yield found
        finally:
            if found is not None:
                found[0].close()


def open_job_store(store: ModelStore) -> JobStore:
    """The jobs kept beside a model store's models: in its folder, or in its MongoDB database."""
    from ..store.local import LocalModelStore

    if isinstance(store, LocalModelStore):
        from .local import LocalJobStore

        return LocalJobStore(store.root)
    from ..store.mongo import MongoModelStore

    if isinstance(store, MongoModelStore):
        from .mongo import MongoJobStore

        return MongoJobStore(store)
    raise BadParameter("--store", f"{store.display}: jobs are kept in an embedded or a MongoDB store")
