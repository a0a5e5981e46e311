"""``jupyter cifar train --detach`` and ``jupyter cifar jobs …`` against a real server running real jobs
(issue 14, point 5)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from jupyterserver import JupyterServer

from jupyter_cifar.engine.precision import machine, machine_text

pytestmark = pytest.mark.slow


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jupyter_cifar", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, cifar10_dir: Path, cifar10):
    root = tmp_path_factory.mktemp("cli-jobs")
    server = JupyterServer(
        root, store_uri=str(root / "models"), max_jobs=1, extra=(f"--CifarExtension.data_dir={cifar10_dir}",)
    ).start()
    yield server
    server.stop()


def test_detach_then_watch_a_job_to_its_model(server: JupyterServer) -> None:
    url = server.store_url
    recipe = ("--preset", "tutorial", "--epochs", "1", "--train-limit", "500")
    queued = cli(
        "train", *recipe, "--save", "cli-job", "--tag", "via=cli", "--detach", "--store", url, "--json"
    )
    assert queued.returncode == 0, queued.stderr
    detached = json.loads(queued.stdout)
    assert set(detached) == {"job", "state"} and detached["state"] == "queued"
    job = detached["job"]

    watched = cli("jobs", "watch", job, "--store", url, "--json")
    assert watched.returncode == 0, watched.stderr  # finished
    events = [json.loads(line) for line in watched.stdout.splitlines()]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["type"] == "start" and events[-1]["type"] == "end"

    shown = json.loads(cli("jobs", "show", job, "--store", url, "--json").stdout)
    assert shown["state"] == "finished" and shown["model"] == "cli-job:1"
    model = json.loads(cli("models", "show", "cli-job:1", "--store", url, "--json").stdout)
    assert model["tags"] == {"via": "cli"}
    listed = json.loads(cli("jobs", "list", "--state", "finished", "--store", url, "--json").stdout)
    assert job in [j["id"] for j in listed]
    text = cli("jobs", "list", "--store", url)
    assert f"{job}  finished" in text.stdout and "-> cli-job:1 (test accuracy" in text.stdout
    assert f", on {socket.gethostname()}: {machine_text(machine())} -> cli-job:1" in text.stdout  # its worker

    again = cli("jobs", "stop", job, "--store", url)
    assert again.returncode == 1 and f"job {job} is finished: there is nothing to stop" in again.stderr
    assert cli("jobs", "delete", job, "--store", url).returncode == 0
    gone = cli("jobs", "show", job, "--store", url)
    assert gone.returncode == 2 and f"no job {job}" in gone.stderr


def test_a_job_with_a_time_budget(server: JupyterServer) -> None:
    """``--minutes`` travels in the spec; the job trains until its time is up and says how far it got."""
    url = server.store_url
    recipe = ("--preset", "fast", "--minutes", "0.5", "--train-limit", "1000", "--test-limit", "200")
    queued = cli("train", *recipe, "--save", "budget-job", "--detach", "--store", url, "--json")
    assert queued.returncode == 0, queued.stderr
    job = json.loads(queued.stdout)["job"]
    watched = cli("jobs", "watch", job, "--store", url, "--json")
    assert watched.returncode == 0, watched.stderr
    events = [json.loads(line) for line in watched.stdout.splitlines()]
    assert events[0]["minutes"] == 0.5 and events[0]["epochs"] is None
    shown = json.loads(cli("jobs", "show", job, "--store", url, "--json").stdout)
    assert shown["spec"]["minutes"] == 0.5 and shown["state"] == "finished" and shown["progress"] == 1.0
    model = json.loads(cli("models", "show", "budget-job:1", "--store", url, "--json").stdout)
    rows = model["metadata"]["history"]
    assert len(rows) > 2 and all(row["complete"] for row in rows[:-1])  # more than fast's 2 epochs
    assert f"{job}  finished  fast, 0.5 minutes" in cli("jobs", "list", "--store", url).stdout


def test_a_stopped_job_watched_exits_1_and_bad_usage_exits_2(server: JupyterServer, tmp_path: Path) -> None:
    url = server.store_url
    queued = cli("train", "--preset", "tutorial", "--epochs", "1", "--detach", "--store", url, "--json")
    job = json.loads(queued.stdout)["job"]
    stopped = cli("jobs", "stop", job, "--store", url, "--json")
    assert stopped.returncode == 0 and json.loads(stopped.stdout)["state"] in ("stopped", "stopping")
    watched = cli("jobs", "watch", job, "--store", url)
    assert watched.returncode == 1 and f"{job}  stopped" in watched.stdout

    folder = cli("train", "--epochs", "1", "--detach", "--store", str(tmp_path / "store"))
    assert folder.returncode == 2 and "--detach" in folder.stderr and "Jupyter server" in folder.stderr
    bad = cli("jobs", "show", "not-a-job", "--store", url)
    assert bad.returncode == 2 and "16 hexadecimal digits" in bad.stderr
    # Jobs are kept in the store: its folder lists them without the server.
    listed = cli("jobs", "list", "--store", server.store_uri, "--json")
    assert listed.returncode == 0 and job in [j["id"] for j in json.loads(listed.stdout)]
