"""A job's own process (issue 14, points 1 and 3): it trains, tells the store, saves its model once; a stop
reaches it through the store; killed with -9, its job is interrupted and a resume finishes it."""

from __future__ import annotations

import html
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from jupyter_cifar.engine.precision import machine, machine_text
from jupyter_cifar.jobs.records import JobSpec, describe_worker
from jupyter_cifar.jobs.runner import run_job
from jupyter_cifar.jobs.store import open_job_store
from jupyter_cifar.store import open_store
from jupyter_cifar.widgets.jobs import JobRow

pytestmark = pytest.mark.slow


@pytest.fixture
def store_uri(tmp_path: Path, cifar10) -> str:  # cifar10: the decoded cache, warmed once
    return str(tmp_path / "store")


def submit(store_uri: str, **fields) -> str:
    with open_store(store_uri) as models:
        jobs = open_job_store(models)
        return jobs.create(
            JobSpec.from_json({"preset": "tutorial", "epochs": 1, "train_limit": 500, **fields})
        ).id


def kill_after_epochs(store_uri: str, jobs, job: str, epochs: int) -> None:
    """Run the job in a process of its own and kill it (-9) once it has told the store of ``epochs``
    epochs (and, half a second later, their checkpoint)."""
    env = {**os.environ, "JUPYTER_CIFAR_STORE": store_uri, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen([sys.executable, "-m", "jupyter_cifar.jobs.runner", job], env=env)
    try:
        deadline = time.monotonic() + 120
        while sum(e["type"] == "epoch" for _, e in jobs.events(job)) < epochs:
            assert proc.poll() is None and time.monotonic() < deadline, f"no {epochs} epochs trained"
            time.sleep(0.05)
        time.sleep(0.5)  # its checkpoint follows the epoch's events
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()


def test_a_job_runs_to_its_end_and_its_model_is_saved_once(store_uri: str, cifar10_dir: Path) -> None:
    job = submit(
        store_uri,
        data=str(cifar10_dir),
        save="from-job",
        tags={"via": "job"},
        seed=7,
        precision="mixed_bfloat16",
    )
    assert run_job(store_uri, job) == "finished"
    assert run_job(store_uri, job) == ""  # not queued any more: nothing to do, nothing saved twice
    with open_store(store_uri) as models:
        jobs = open_job_store(models)
        record = jobs.get(job)
        assert record.state == "finished" and record.model == "from-job:1" and record.owner is None
        assert record.worker["pid"] == os.getpid() and record.worker["address"] is None
        assert record.worker["machine"] == machine()  # the CPU it trains on, its GPUs where it has some
        shown = record.to_json()
        assert shown["progress"] == 1.0 and 0 < shown["test_accuracy"] < 1
        where = f"on {socket.gethostname()}: {machine_text(machine())}"
        assert describe_worker(shown["worker"]) == where
        row = JobRow(shown, on_show=print, on_resume=print)  # the Train tab's jobs list: its title
        assert f' title="{html.escape(where)}">' in row.what.value and "· " + job[:6] in row.what.value
        events = jobs.events(job)
        assert [n for n, _ in events] == list(range(1, len(events) + 1))  # numbered, none lost
        kinds = [e["type"] for _, e in events]
        assert kinds[0] == "start" and kinds[-2:] == ["evaluation", "end"] and kinds.count("epoch") == 1
        saved = models.resolve("from-job")
        assert models.list(name="from-job").total == 1
        assert saved.metadata["job"] == job and saved.tags == {"via": "job"}
        # The spec's precision, not the tutorial's own float32, is what it trained in.
        assert saved.metadata["precision"] == events[0][1]["precision"] == "mixed_bfloat16"
        assert saved.test_accuracy == record.test_accuracy
        with jobs.checkpoint(job) as checkpoint:
            assert checkpoint is not None and checkpoint[0].read(2) == b"PK" and checkpoint[1] == 1


def test_a_stop_through_the_store_ends_it_within_a_batch_and_keeps_its_model(
    store_uri: str, cifar10_dir: Path
) -> None:
    # The first epoch long enough (625 batches, seconds) that the stop, brought back by the next heartbeat
    # (2 s), lands inside it rather than in its validation pass at the end.
    job = submit(store_uri, data=str(cifar10_dir), epochs=20, train_limit=20000)
    with open_store(store_uri) as models:
        jobs = open_job_store(models)

        def stop_when_training() -> None:
            while not any(e["type"] == "batch" for _, e in jobs.events(job)):
                time.sleep(0.05)
            jobs.request_stop(job)

        threading.Thread(target=stop_when_training, daemon=True).start()
        started = time.monotonic()
        assert run_job(store_uri, job) == "stopped"
        assert time.monotonic() - started < 60  # not 20 epochs
        record = jobs.get(job)
        assert record.state == "stopped" and record.model == f"job-{job}:1"
        epochs = [e for _, e in jobs.events(job) if e["type"] == "epoch"]
        assert len(epochs) <= 2 and not epochs[-1]["complete"]


def test_a_job_whose_process_is_killed_is_interrupted_and_a_resume_finishes_it(
    store_uri: str, cifar10_dir: Path
) -> None:
    job = submit(store_uri, data=str(cifar10_dir), epochs=3, train_limit=1000, save="resumed")
    with open_store(store_uri) as models:
        jobs = open_job_store(models)
        kill_after_epochs(store_uri, jobs, job, 1)
        assert jobs.get(job).state == "running"  # nobody knows yet ...
        assert jobs.mark_interrupted(stale=0) == [job]  # ... until its heartbeat is missed
        assert jobs.get(job).state == "interrupted"
        done_before = sum(e["type"] == "epoch" and e["complete"] for _, e in jobs.events(job))
        jobs.resume(job)
        assert run_job(store_uri, job) == "finished"
        record = jobs.get(job)
        assert record.attempt == 2 and record.model == "resumed:1"
        saved = models.resolve("resumed:1")
        history = saved.metadata["history"]
        assert [row["epoch"] for row in history] == list(range(1, 4))  # every epoch, in one version
        assert done_before >= 1 and models.list(name="resumed").total == 1


def test_a_resumed_job_with_a_time_budget_trains_for_the_time_it_has_left(
    store_uri: str, cifar10_dir: Path
) -> None:
    # A minute, and few test images (each epoch's validation is inside the budget, as is the first step's
    # tracing): on a 2-core AVX2 CPU under the suite's load, 30 s held only two epochs, the last cut short.
    limits, budget = {"train_limit": 1000, "test_limit": 500}, 1.0
    job = submit(store_uri, data=str(cifar10_dir), preset="fast", epochs=None, minutes=budget, **limits)
    with open_store(store_uri) as models:
        jobs = open_job_store(models)
        kill_after_epochs(store_uri, jobs, job, 2)
        jobs.mark_interrupted(stale=0)
        before = [e for _, e in jobs.events(job) if e["type"] == "epoch"]
        jobs.resume(job)
        assert run_job(store_uri, job) == "finished"
        starts = [e for _, e in jobs.events(job) if e["type"] == "start"]
        kept = starts[1]["initial_epoch"]  # the epochs its checkpoint held
        spent = sum(e["seconds"] for e in before if e["epoch"] <= kept) / 60
        assert kept >= 1 and starts[1]["epochs"] is None
        assert [s["minutes"] for s in starts] == [budget, pytest.approx(budget - spent, abs=1e-3)]
        history = models.resolve(f"job-{job}").metadata["history"]
        assert len(history) > starts[1]["initial_epoch"]  # it trained on from the checkpoint
