"""The dask executor on a real Dask cluster on loopback (issue 14, point 2): `dask scheduler` and
`dask worker --nthreads 1` processes, the test's MongoDB as the store of the server and the workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from jupyterserver import JupyterServer
from mongod import free_port, terminate
from test_server_jobs import TINY, Api

pytestmark = pytest.mark.slow


class Cluster:
    def __init__(self, root: Path, store_uri: str, data: Path) -> None:
        self.root, self.store_uri, self.data = root, store_uri, data
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.scheduler = self._spawn(
            "scheduler", "scheduler", "--host", "127.0.0.1", "--port", str(self.port), "--no-dashboard"
        )

    def _spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "JUPYTER_CIFAR_STORE": self.store_uri,  # the workers' own configuration, not the jobs'
            "JUPYTER_CIFAR_DATA": str(self.data),
            "TF_CPP_MIN_LOG_LEVEL": "3",
        }
        env.pop("JUPYTER_CIFAR_SERVER_URL", None)
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 (the process owns it)
        dask = Path(sys.executable).with_name("dask")
        proc = subprocess.Popen([str(dask), *args], stdout=log, stderr=subprocess.STDOUT, env=env)
        self.procs.append(proc)
        return proc

    def worker(self, name: str) -> tuple[subprocess.Popen[bytes], str]:
        """A worker process (no nanny: killing it kills the worker); its address once registered."""
        from distributed import Client

        proc = self._spawn(
            name, "worker", self.address, "--nthreads", "1", "--no-nanny", "--no-dashboard",
            "--name", name, "--host", "127.0.0.1",
        )  # fmt: skip
        with Client(self.address, timeout=30, set_as_default=False) as client:
            deadline = time.monotonic() + 60
            while True:
                workers = client.scheduler_info()["workers"]
                found = [a for a, w in workers.items() if w.get("name") == name]
                if found:
                    return proc, found[0]
                assert proc.poll() is None and time.monotonic() < deadline, (
                    self.root / f"{name}.log"
                ).read_text()
                time.sleep(0.2)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            terminate(proc)


@pytest.fixture
def cluster(tmp_path: Path, mongo_uri: str, cifar10_dir: Path, cifar10) -> Any:
    cluster = Cluster(tmp_path, mongo_uri, cifar10_dir)
    yield cluster
    cluster.stop()


def dask_server(root: Path, store_uri: str, scheduler: str, *extra: str) -> JupyterServer:
    return JupyterServer(
        root, store_uri=store_uri,
        extra=("--CifarExtension.job_executor=dask", f"--CifarExtension.dask_scheduler={scheduler}", *extra),
    ).start()  # fmt: skip


def test_a_job_runs_on_a_dask_worker_and_stops_across_processes(cluster: Cluster, tmp_path: Path) -> None:
    _, address = cluster.worker("w1")
    server = dask_server(tmp_path / "server", cluster.store_uri, cluster.address)
    try:
        api = Api(server)
        job = api.submit(**TINY, save="on-dask")
        events = api.follow(job)
        assert events[-1]["type"] == "end" and events[-1]["status"] == "finished"
        record = api.job(job)
        assert (
            record["state"] == "finished" and record["model"] == "on-dask:1" and record["executor"] == "dask"
        )
        assert record["worker"]["address"] == address  # it ran there, not in the server

        long = api.submit(**{**TINY, "epochs": 30, "train_limit": 2000})
        api.wait_event(long, "batch")
        api("POST", f"jobs/{long}/stop")
        stopped = api.wait_state(long, ("stopped", "failed"), timeout=90)
        assert stopped["state"] == "stopped" and stopped["model"], stopped
    finally:
        server.stop()


def test_a_killed_worker_leaves_its_job_interrupted_never_run_twice_and_resumable(
    cluster: Cluster, tmp_path: Path
) -> None:
    first, _ = cluster.worker("w1")
    server = dask_server(
        tmp_path / "server", cluster.store_uri, cluster.address, "--CifarExtension.job_stale_seconds=4"
    )
    try:
        api = Api(server)
        job = api.submit(**{**TINY, "epochs": 4, "train_limit": 2000}, save="resumed-on-dask")
        api.wait_event(job, "epoch")
        time.sleep(1)  # its checkpoint follows the epoch's events
        first.send_signal(signal.SIGKILL)
        first.wait()
        api.wait_state(job, ("interrupted",), timeout=60)
        _, second = cluster.worker("w2")  # Dask runs the lost task again here: it must not train it
        time.sleep(8)
        record = api.job(job)
        assert record["state"] == "interrupted", record
        count = record["events"]
        time.sleep(2)
        assert api.job(job)["events"] == count  # nothing trains it meanwhile
        assert api("POST", f"jobs/{job}/resume").json()["state"] == "queued"
        done = api.wait_state(job, ("finished", "failed"), timeout=180)
        assert done["state"] == "finished" and done["worker"]["address"] == second, done
        version = api("GET", "versions/resumed-on-dask:1").json()
        assert [row["epoch"] for row in version["metadata"]["history"]] == [1, 2, 3, 4]
        assert api("GET", "models", params={"name": "resumed-on-dask"}).json()["total"] == 1
    finally:
        server.stop()


def test_a_scheduler_that_cannot_be_reached_is_503_naming_it(tmp_path: Path, mongo_uri: str) -> None:
    nowhere = f"tcp://127.0.0.1:{free_port()}"
    server = dask_server(tmp_path / "server", mongo_uri, nowhere)
    try:
        response = Api(server)("POST", "jobs", json=TINY)
        assert response.status_code == 503 and nowhere in response.json()["message"], response.text
    finally:
        server.stop()
