"""Running one job in this process: claim it, train it, tell the store everything, save its model once.

``python -m jupyter_cifar.jobs.runner JOB_ID`` is what the local executor starts (a process per job, in a
session of its own, so that the server may die and the job go on); a Dask worker calls
:func:`run_job` itself. The store comes from this process's own configuration (``--store``, else
``$JUPYTER_CIFAR_STORE``), never from the job's spec.

While the trainer runs, its events are published in order about five times a second, a heartbeat every
``HEARTBEAT_SECONDS`` carries the progress and brings back any stop request (the trainer then stops
after its current batch), and the checkpoint the trainer writes at each epoch's end replaces the job's
one. A job resumed after an interruption goes on from that checkpoint, to the epochs its spec asks (or
for the time its budget has left), as one model whose history holds every epoch.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from ..engine.precision import machine
from ..errors import Conflict, JupyterCifarError
from ..store import ENV_STORE, open_store
from ..store.base import ModelStore
from .records import JobRecord
from .store import JobStore, open_job_store

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 2.0
PUBLISH_SECONDS = 0.2


def run_job(store_uri: str, job_id: str, *, address: str | None = None) -> str:
    """Run one job to its end; its final state, or "" when it was not this process's to run (no longer
    queued: another process took it, or it was stopped or deleted)."""
    with open_store(store_uri) as models:
        jobs = open_job_store(models)
        try:
            owner = uuid.uuid4().hex
            # where it trains, as its run's start event and model say it (a job's speed is its worker's)
            worker = {
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "address": address,
                "machine": machine(),
            }
            record = jobs.claim(job_id, owner, worker)
            if record is None:
                return ""
            return _Run(models, jobs, record, owner).run()
        finally:
            jobs.close()


class _Run:
    def __init__(self, models: ModelStore, jobs: JobStore, record: JobRecord, owner: str) -> None:
        self.models, self.jobs, self.record, self.owner = models, jobs, record, owner
        self.pending: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.lost = False  # the job was taken from this process (interrupted and resumed elsewhere)
        self.stop_asked = threading.Event()
        self.trainer: Any = None
        self.plan: Any = None  # a fine-tuning's (spec.photos): it measures before and after
        self.progress: dict[str, Any] = {}

    def run(self) -> str:
        job = self.record
        # Heartbeats from the claim on: loading the data and Keras takes seconds, and a job silent
        # for the stale time is taken for dead.
        helpers = [threading.Thread(target=self._heartbeat, daemon=True)]
        helpers.append(threading.Thread(target=self._publisher, daemon=True))
        for thread in helpers:
            thread.start()
        try:
            with tempfile.TemporaryDirectory(prefix=f"jupyter-cifar-job-{job.id}-") as tmp:
                trainer = self._trainer(Path(tmp) / "checkpoint.keras")
                trainer.subscribe(self._on_event)
                self.trainer = trainer
                if self.stop_asked.is_set() or self.lost:
                    trainer.stop()  # asked before it began: it evaluates the model as it is, and ends
                result = trainer.run()  # here, in this thread: the process exists for it
                self.done.set()
                for thread in helpers:
                    thread.join()
                self._flush()
                if self.lost:
                    return "lost"
                if result.status == "failed" or result.evaluation is None:
                    return self._finish("failed", error=result.error or "training failed")
                metadata = self.plan.finish(result).metadata() if self.plan is not None else result.metadata()
                record = self.models.save(
                    result.model,
                    job.spec.save or f"job-{job.id}",
                    metadata={**metadata, "job": job.id},
                    tags=job.spec.tags,
                    notes=job.spec.notes,
                )
                return self._finish(result.status, model=record.ref, test_accuracy=result.evaluation.accuracy)
        except BaseException as e:  # a bad spec, data that cannot be read, a parent that is gone: say so
            self.done.set()
            for thread in helpers:
                thread.join()
            log.debug("job %s failed", job.id, exc_info=True)
            message = str(e) if isinstance(e, JupyterCifarError) else f"{type(e).__name__}: {e}"
            try:
                self._flush()
                self._finish("failed", error=message)
            except JupyterCifarError:
                pass
            if not isinstance(e, Exception):
                raise
            return "failed"

    def _trainer(self, checkpoint: Path) -> Any:
        """The trainer for this job: a new network, the parent version, or (resumed) its checkpoint."""
        from ..engine.data import load_cifar10
        from ..engine.modelfiles import load_model
        from ..engine.nets import DEFAULT_PRESET, get_preset
        from ..engine.training import TrainConfig, Trainer

        spec = self.record.spec
        data = load_cifar10(spec.data or os.environ.get("JUPYTER_CIFAR_DATA") or None)
        preset, model, history, parent = spec.preset, None, [], spec.parent
        parent_metadata: dict[str, Any] = {}
        if parent is not None:
            stored = self.models.resolve(parent)
            parent, parent_metadata = stored.ref, stored.metadata
            model = self.models.load(stored.ref)
            history = list(stored.metadata.get("history") or [])
            preset = preset or stored.metadata.get("preset")
        parent_model = model  # a resumed job trains its checkpoint; a fine-tuning measures this "before"
        epochs, minutes = spec.epochs, spec.minutes
        if spec.photos is not None and epochs is None:
            from ..photos.finetune import DEFAULT_EPOCHS

            epochs = DEFAULT_EPOCHS
        with self.jobs.checkpoint(self.record.id) as saved:
            if saved is not None:  # resumed: go on from the last checkpoint, with the rows it holds
                reader, held = saved
                resumed = checkpoint.with_name("resumed.keras")
                with open(resumed, "wb") as out:
                    shutil.copyfileobj(reader, out, 1 << 20)
                model = load_model(resumed)
                rows = {}  # this job's history rows by number: a re-run epoch's newest row wins
                for _, event in self.jobs.events(self.record.id):
                    if event.get("type") == "epoch":
                        rows[event["epoch"]] = {k: v for k, v in event.items() if k != "type"}
                own = [rows[n] for n in range(len(history) + 1, held + 1) if n in rows]
                history = history + own
                if minutes is not None:  # the time its budget has left by its epochs (a 20th at least)
                    spent = sum(row.get("seconds") or 0.0 for row in own) / 60
                    minutes = max(minutes / 20, minutes - spent)
                else:
                    ran = sum(1 for row in own if row.get("complete"))
                    total = epochs if epochs is not None else get_preset(preset or DEFAULT_PRESET).epochs
                    epochs = max(1, total - ran)
        config = TrainConfig(
            preset=preset or DEFAULT_PRESET,
            epochs=epochs,
            minutes=minutes,
            batch_size=spec.batch_size,
            learning_rate=spec.learning_rate,
            train_limit=spec.train_limit,
            test_limit=spec.test_limit,
            seed=spec.seed,
            precision=spec.precision,
            checkpoint=str(checkpoint),
        )
        self.checkpoint = checkpoint
        if spec.photos is not None:
            return self._finetuning(data, config, model, history, parent, parent_model, parent_metadata)
        return Trainer(data, config, model=model, history=history, parent=parent)

    def _finetuning(
        self,
        data: Any,
        config: Any,
        model: Any,
        history: list[Any],
        parent: str | None,
        parent_model: Any,
        parent_metadata: dict[str, Any],
    ) -> Any:
        """A fine-tuning job: its plan measures the parent version (``parent_model``, loaded once) "before"
        through its own views (a resumed job too), and the trainer goes on from ``model`` (the parent, or
        the checkpoint) for the epochs left."""
        from ..engine.views import stored_plan
        from ..photos.finetune import FinetunePlan
        from ..photos.labelled import set_photos
        from ..photos.store import open_photo_store

        spec = self.record.spec
        assert spec.photos is not None and parent is not None  # JobSpec.from_json checked both
        with open_photo_store(self.models) as photos:
            found = set_photos(photos, spec.photos)
        self.plan = FinetunePlan(
            parent_model, found, data, preset=config.preset, seed=spec.seed or 0,
            learning_rate=spec.learning_rate, test_limit=spec.test_limit, views=stored_plan(parent_metadata),
        )  # fmt: skip
        return self.plan.trainer(
            model, history=history, parent=parent, epochs=config.epochs, checkpoint=config.checkpoint
        )

    # -- called in the training thread -----------------------------------------------------------
    def _on_event(self, event: dict[str, Any]) -> None:
        # When it happened, for a watcher to know how late it hears of it (epoch seconds).
        with self.lock:
            self.pending.append({**event, "time": round(time.time(), 3)})
        kind = event["type"]
        if kind == "start":
            self.progress = {"epochs": event["epochs"], "epoch": 0, "fraction": 0.0}
        elif kind == "batch":
            done = event["done"]  # of this run's batches, or of its time
            self.progress = {
                **self.progress,
                "epoch": event["epoch"],
                "batch": event["batch"],
                "batches": event["batches"],
                "fraction": round(min(1.0, max(0.0, done)), 4),
                "images_per_second": event["images_per_second"],
                "eta_seconds": event["eta_seconds"],
            }
        elif kind == "epoch" and self.checkpoint.exists() and not self.lost:
            self._flush()  # the epoch's row before its checkpoint: a resume finds the rows it holds
            try:
                self.jobs.save_checkpoint(self.record.id, self.owner, self.checkpoint, event["epoch"])
            except Conflict:
                self._lose()

    # -- helper threads ----------------------------------------------------------------------------
    def _publisher(self) -> None:
        while not self.done.wait(PUBLISH_SECONDS):
            self._flush()

    def _heartbeat(self) -> None:
        while not self.done.wait(HEARTBEAT_SECONDS):
            try:
                if self.jobs.beat(self.record.id, self.owner, self.progress):
                    self.stop_asked.set()
                    if self.trainer is not None:
                        self.trainer.stop()
            except Conflict:
                self._lose()
            except JupyterCifarError as e:  # the store is down a moment: the next beat tries again
                log.info("job %s: heartbeat failed (%s)", self.record.id, e)

    def _flush(self) -> None:
        with self.lock:
            events, self.pending = self.pending, []
        if events and not self.lost:
            try:
                self.jobs.publish(self.record.id, self.owner, events)
            except Conflict:
                self._lose()

    def _lose(self) -> None:
        """The job is no longer this process's: stop training it, save nothing."""
        self.lost = True
        if self.trainer is not None:
            self.trainer.stop()

    def _finish(self, state: str, **result: Any) -> str:
        self.jobs.finish(self.record.id, self.owner, state, progress=self.progress, **result)
        return state


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jupyter_cifar.jobs.runner", description=__doc__)
    parser.add_argument("job", help="the job's id")
    parser.add_argument("--store", help=f"the store that keeps the job (default: ${ENV_STORE})")
    args = parser.parse_args(argv)
    store = args.store or os.environ.get(ENV_STORE)
    if not store:
        print(f"no store: give --store or set ${ENV_STORE}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    state = run_job(store, args.job)
    print(f"job {args.job}: {state or 'not run here (no longer queued)'}", file=sys.stderr)
    return 0 if state in ("finished", "stopped", "") else 1


if __name__ == "__main__":
    sys.exit(main())
