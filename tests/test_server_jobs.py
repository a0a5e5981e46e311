"""Training jobs through a real `jupyter server` process and real job processes (issue 14, points 2-4).

The server runs jobs with the local executor (a process per job, ``max_jobs`` at once); they outlive it:
killed with -9 mid-job, the job goes on, and a restarted server shows it, streams its events and finds
its model saved once.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from jupyterserver import JupyterServer

from jupyter_cifar.jobs.store import open_job_store
from jupyter_cifar.store import open_store

pytestmark = pytest.mark.slow

TINY = {"preset": "tutorial", "epochs": 1, "train_limit": 500}


class Api:
    def __init__(self, server: JupyterServer) -> None:
        self.server = server
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"token {server.token}"

    def __call__(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        url = f"{self.server.url}jupyter-cifar/api/{path}"
        return self.http.request(method, url, timeout=90, **kwargs)

    def submit(self, **spec: Any) -> str:
        response = self("POST", "jobs", json=spec)
        assert response.status_code == 201, response.text
        assert response.json()["state"] == "queued"
        return str(response.json()["id"])

    def job(self, job: str) -> dict[str, Any]:
        response = self("GET", f"jobs/{job}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def follow(self, job: str, after: int = 0, timeout: float = 240) -> list[dict[str, Any]]:
        """Every event from ``after`` on, by long polls, until the job ends."""
        events: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            page = self("GET", f"jobs/{job}/events", params={"after": after, "wait": 10}).json()
            events += page["events"]
            after = page["last"]
            if page["state"] not in ("queued", "running", "stopping") and not page["events"]:
                return events
        raise AssertionError(f"job {job} did not end in {timeout} s: {self.job(job)}")

    def wait_event(self, job: str, kind: str, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while not any(e["type"] == kind for e in self("GET", f"jobs/{job}/events").json()["events"]):
            assert time.monotonic() < deadline, f"no {kind} event in {timeout} s: {self.job(job)}"
            time.sleep(0.2)

    def wait_state(self, job: str, states: tuple[str, ...], timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (record := self.job(job))["state"] not in states:
            assert time.monotonic() < deadline, record
            time.sleep(0.2)
        return record


@pytest.fixture
def server(jobs_server: JupyterServer) -> JupyterServer:
    return jobs_server


def test_a_job_runs_in_its_own_process_and_its_events_stream_to_a_watcher(server: JupyterServer) -> None:
    api = Api(server)
    job = api.submit(**TINY, save="from-server", tags={"via": "api"})
    events = api.follow(job)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))  # every event, in order
    assert events[0]["type"] == "start" and events[-1]["type"] == "end" and events[-1]["status"] == "finished"
    record = api.job(job)
    assert record["state"] == "finished" and record["model"] == "from-server:1" and record["progress"] == 1.0
    assert record["worker"]["pid"] not in (None, server.proc.pid) and record["worker"]["address"] is None
    version = api("GET", "versions/from-server:1").json()
    assert version["tags"] == {"via": "api"} and version["metadata"]["job"] == job
    assert version["test_accuracy"] == record["test_accuracy"]
    listed = api("GET", "jobs", params={"state": "finished"}).json()
    assert [j["id"] for j in listed["items"]] == [job] and listed["total"] == 1


def test_the_queue_runs_one_job_at_a_time_in_order_and_stop_ends_one(server: JupyterServer) -> None:
    api = Api(server)
    first = api.submit(**{**TINY, "epochs": 30, "train_limit": 2000})
    second = api.submit(**TINY)
    api.wait_state(first, ("running",))
    time.sleep(3)  # ticks pass: max_jobs 1 keeps the second one waiting
    assert api.job(second)["state"] == "queued"
    api.wait_event(first, "batch")
    assert api("POST", f"jobs/{first}/resume").status_code == 409  # running: nothing to resume
    assert api("DELETE", f"jobs/{first}").status_code == 409  # running: stop it first
    asked = time.monotonic()
    assert api("POST", f"jobs/{first}/stop").json()["state"] == "stopping"
    stopped = api.wait_state(first, ("stopped", "failed"), timeout=90)
    assert stopped["state"] == "stopped" and stopped["model"] == f"job-{first}:1", stopped
    assert time.monotonic() - asked < 60
    assert api("POST", f"jobs/{first}/stop").status_code == 409  # ended: nothing to stop
    done = api.wait_state(second, ("finished", "failed"), timeout=180)
    assert done["state"] == "finished" and done["started"] >= stopped["ended"]  # only after the first
    assert api("DELETE", f"jobs/{first}").status_code == 200
    assert api("GET", f"jobs/{first}").status_code == 404
    assert api("GET", "versions/" + f"job-{first}:1").status_code == 200  # its model stays


def test_bad_requests_get_their_documented_answers(server: JupyterServer) -> None:
    api = Api(server)
    response = api("POST", "jobs", json={"preset": "huge"})
    assert response.status_code == 400 and response.json()["param"] == "preset"
    response = api("POST", "jobs", json={"epochs": 5, "password": "x"})
    assert response.status_code == 400 and response.json()["param"] == "spec"
    assert api("GET", "jobs/not-a-job").status_code == 400
    assert api("GET", "jobs/0123456789abcdef").json()["error"] == "not_found"
    assert api("GET", "jobs", params={"state": "sleeping"}).status_code == 400
    assert api("GET", "jobs/0123456789abcdef/events", params={"after": -1}).status_code == 400


def test_a_job_outlives_its_server_killed_with_9(tmp_path: Path, cifar10_dir: Path, cifar10) -> None:
    store = str(tmp_path / "models")
    data = (f"--CifarExtension.data_dir={cifar10_dir}",)
    first = JupyterServer(tmp_path / "first", store_uri=store, max_jobs=1, extra=data).start()
    try:
        api = Api(first)
        job = api.submit(**{**TINY, "epochs": 4, "train_limit": 2000}, save="survivor")
        api.wait_event(job, "batch")
        seen = api.job(job)["events"]
    finally:
        assert first.proc is not None
        first.proc.send_signal(signal.SIGKILL)  # no clean-up code runs
        first.proc.wait()
    with open_store(store) as models:  # the job goes on without any server
        jobs = open_job_store(models)
        deadline = time.monotonic() + 60
        while jobs.get(job).events <= seen + 5:
            assert time.monotonic() < deadline, "the job stopped with its server"
            time.sleep(0.2)
        pid = jobs.get(job).worker["pid"]
        os.kill(pid, 0)  # its process, alive
    second = JupyterServer(tmp_path / "second", store_uri=store, max_jobs=1, extra=data).start()
    try:
        api = Api(second)
        assert api.job(job)["state"] in ("running", "finished")  # shown as it is, not "failed"
        events = api.follow(job)  # the whole history, then live until its end
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
        record = api.job(job)
        assert record["state"] == "finished" and record["model"] == "survivor:1"
        assert api("GET", "models", params={"name": "survivor"}).json()["total"] == 1  # saved once
    finally:
        second.stop()
