"""One contract for jobs, every backend: the embedded store and a real MongoDB (issue 14, point 1)."""

from __future__ import annotations

import multiprocessing
import threading
import time
from pathlib import Path

import pytest

from jupyter_cifar.errors import BadParameter, Conflict, NotFound
from jupyter_cifar.jobs.records import JobSpec, describe_worker
from jupyter_cifar.jobs.store import JobStore, open_job_store
from jupyter_cifar.store import open_store


@pytest.fixture(params=["local", "mongo"])
def store_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "store")
    return str(request.getfixturevalue("mongo_uri"))


@pytest.fixture
def jobs(store_uri: str):
    with open_store(store_uri) as models:
        store = open_job_store(models)
        yield store
        store.close()


def spec(**fields) -> JobSpec:
    return JobSpec.from_json({"preset": "tutorial", "epochs": 1, "train_limit": 500, **fields})


def running(jobs: JobStore, owner: str = "owner-1"):
    record = jobs.create(spec())
    claimed = jobs.claim(record.id, owner, {"host": "here", "pid": 1, "address": None})
    assert claimed is not None
    return claimed


def test_a_job_is_kept_with_its_spec_and_listed_newest_first(jobs: JobStore) -> None:
    first = jobs.create(spec(save="cnn", tags={"k": "v"}, notes="n", seed=3))
    second = jobs.create(spec(parent="cnn:1"))
    again = jobs.get(first.id)
    assert again.spec == first.spec and again.state == "queued" and again.spec.tags == {"k": "v"}
    shown = again.to_json()
    assert set(shown) >= {
        "id", "state", "spec", "epoch", "epochs", "progress", "images_per_second", "created", "started",
        "ended", "executor", "worker", "model", "test_accuracy", "error",
    }  # fmt: skip
    assert shown["spec"]["save"] == "cnn" and shown["state"] == "queued" and shown["progress"] == 0.0
    listed, total = jobs.list()
    assert [r.id for r in listed] == [second.id, first.id] and total == 2
    assert [r.id for r in jobs.queued()] == [first.id, second.id]  # the order they run in
    assert jobs.list(states=["running"]) == ([], 0)
    with pytest.raises(NotFound, match="no job"):
        jobs.get("0123456789abcdef")
    with pytest.raises(BadParameter, match="job"):
        jobs.get("../../etc")
    with pytest.raises(BadParameter, match="state"):
        jobs.list(states=["sleeping"])


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"preset": "huge"}, "preset"),
        ({"epochs": 0}, "epochs"),
        ({"epochs": True}, "epochs"),
        ({"batch_size": "32"}, "batch_size"),
        ({"learning_rate": -1}, "learning_rate"),
        ({"learning_rate": float("nan")}, "learning_rate"),
        ({"save": "no spaces please"}, "save"),
        ({"tags": {"bad key": "x"}}, "tag"),
        ({"parent": "../x"}, "REF"),
        ({"data": ""}, "data"),
        ({"precision": "float8"}, "precision"),
        ({"precision": ["float32"]}, "precision"),
        ({"password": "x"}, "spec"),
    ],
)
def test_a_bad_spec_is_refused_naming_the_field(fields: dict, param: str) -> None:
    with pytest.raises(BadParameter) as err:
        JobSpec.from_json({"preset": "tutorial", **fields})
    assert err.value.param == param, err.value


def test_one_claimer_wins_and_runs_it(jobs: JobStore) -> None:
    record = jobs.create(spec())
    won: list[str] = []

    def claim(owner: str) -> None:
        if jobs.claim(record.id, owner) is not None:
            won.append(owner)

    threads = [threading.Thread(target=claim, args=(f"owner-{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1
    now = jobs.get(record.id)
    assert now.state == "running" and now.owner == won[0] and now.attempt == 1 and now.started
    assert jobs.claim(record.id, "late") is None  # no longer queued


def _claim_all(uri: str, ids: list[str], owner: str) -> list[str]:
    with open_store(uri) as models:
        store = open_job_store(models)
        return [i for i in ids if store.claim(i, owner) is not None]


def test_processes_claiming_the_same_jobs_take_each_once(store_uri: str) -> None:
    with open_store(store_uri) as models:
        ids = [open_job_store(models).create(spec()).id for _ in range(12)]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        results = pool.starmap(_claim_all, [(store_uri, ids, f"p{i}") for i in range(4)])
    claimed = sorted(i for r in results for i in r)
    assert claimed == sorted(ids)  # every job once: none twice, none lost


def test_events_are_numbered_in_order_for_the_owner_only(jobs: JobStore) -> None:
    record = running(jobs)
    assert jobs.publish(record.id, "owner-1", [{"type": "start"}, {"type": "batch", "batch": 1}]) == 2
    assert jobs.publish(record.id, "owner-1", [{"type": "batch", "batch": 2}]) == 3
    assert [n for n, _ in jobs.events(record.id)] == [1, 2, 3]
    assert jobs.events(record.id, after=2) == [(3, {"type": "batch", "batch": 2})]
    assert jobs.get(record.id).events == 3
    with pytest.raises(Conflict):
        jobs.publish(record.id, "someone-else", [{"type": "batch"}])
    assert jobs.events(record.id, after=3) == []


def test_a_watcher_waits_for_the_next_event(jobs: JobStore) -> None:
    record = running(jobs)
    started = time.monotonic()
    assert jobs.wait_events(record.id, after=0, wait=0.5) == ([], "running")  # none: it waited, then said so
    assert time.monotonic() - started >= 0.45
    threading.Timer(0.3, lambda: jobs.publish(record.id, "owner-1", [{"type": "start"}])).start()
    started = time.monotonic()
    found, _ = jobs.wait_events(record.id, after=0, wait=10)
    assert found == [(1, {"type": "start"})] and time.monotonic() - started < 5  # at once when it came


def test_stop_reaches_the_owner_through_its_heartbeat(jobs: JobStore) -> None:
    record = running(jobs)
    assert jobs.beat(record.id, "owner-1", {"epoch": 1, "fraction": 0.5}) is False
    assert jobs.get(record.id).to_json()["progress"] == 0.5
    assert jobs.request_stop(record.id).state == "stopping"
    assert jobs.beat(record.id, "owner-1") is True
    done = jobs.finish(
        record.id, "owner-1", "stopped", model="cnn:1", test_accuracy=0.5, progress={"fraction": 0.6}
    )
    assert done.to_json()["progress"] == 0.6  # how far it got, said by its owner at the end
    assert (done.state, done.model, done.test_accuracy, done.owner) == ("stopped", "cnn:1", 0.5, None)
    with pytest.raises(Conflict, match="nothing to stop"):
        jobs.request_stop(record.id)
    queued = jobs.create(spec())
    assert jobs.request_stop(queued.id).state == "stopped"  # a queued job stops at once
    assert jobs.claim(queued.id, "owner-2") is None


def test_a_silent_owner_is_interrupted_and_the_job_resumes_elsewhere(jobs: JobStore) -> None:
    record = running(jobs)
    fresh = running(jobs, "owner-2")
    time.sleep(0.05)
    jobs.beat(fresh.id, "owner-2")
    assert jobs.mark_interrupted(stale=0.04) == [record.id]  # the one that stayed silent
    gone = jobs.get(record.id)
    assert gone.state == "interrupted" and "heartbeat" in gone.error
    with pytest.raises(Conflict):
        jobs.beat(record.id, "owner-1")  # it cannot come back as if nothing happened
    with pytest.raises(Conflict):
        jobs.finish(record.id, "owner-1", "finished")
    assert jobs.resume(record.id).state == "queued"
    again = jobs.claim(record.id, "owner-3")
    assert again is not None and again.attempt == 2 and again.owner == "owner-3"
    with pytest.raises(Conflict, match="only"):
        jobs.resume(record.id)  # running: nothing to resume


def test_delete_removes_the_record_its_events_and_checkpoint(jobs: JobStore, tmp_path: Path) -> None:
    record = running(jobs)
    jobs.publish(record.id, "owner-1", [{"type": "start"}])
    first, second = tmp_path / "a.keras", tmp_path / "b.keras"
    first.write_bytes(b"epoch one")
    second.write_bytes(b"epoch two, replacing one")
    jobs.save_checkpoint(record.id, "owner-1", first, 1)
    jobs.save_checkpoint(record.id, "owner-1", second, 2)
    with jobs.checkpoint(record.id) as found:
        assert found is not None
        reader, epochs = found
        assert reader.read() == b"epoch two, replacing one" and epochs == 2  # the rows it holds
    with pytest.raises(Conflict):
        jobs.save_checkpoint(record.id, "someone-else", first, 3)
    with pytest.raises(Conflict, match="stop it first"):
        jobs.delete(record.id)
    assert jobs.finish(record.id, "owner-1", "finished").to_json()["progress"] == 1.0  # all the way
    jobs.delete(record.id)
    with pytest.raises(NotFound):
        jobs.get(record.id)
    assert jobs.events(record.id) == []
    with pytest.raises(NotFound), jobs.checkpoint(record.id):
        pass
    with jobs.checkpoint(running(jobs).id) as found:
        assert found is None  # a job before its first epoch has none


def test_where_a_job_ran_is_said_from_its_worker_record() -> None:
    """Whatever JSON was stored as the worker: a field of the wrong shape is left out."""
    facts = {"cpu": "<b>CPU</b>", "cores": 2}
    assert describe_worker({"host": "box-7", "machine": facts}) == "on box-7: <b>CPU</b>, 2 cores"
    assert describe_worker({"host": 7, "machine": facts}) == "on <b>CPU</b>, 2 cores"
    for nothing in (None, "x", {"host": "box-7"}, {"host": "box-7", "machine": "fast"}):
        assert describe_worker(nothing) == ""
