"""A real `jupyter server` process for the tests (see shared/notes/browser-e2e.md for the settings)."""

from __future__ import annotations

import http.client
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from mongod import PortTaken, check_port_taken, free_port, on_a_free_port, terminate

BASE_URL = "/a%40b/"  # awkward on purpose, as pytest-jupyter's


@dataclass
class JupyterServer:
    """`jupyter server` on loopback with the extension auto-enabled by its installed config."""

    root: Path
    store_uri: str
    port: int = field(default_factory=free_port)
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    extra: tuple[str, ...] = ()
    max_jobs: int = 0  # jobs only queue unless a test wants them run (each is a process training)
    env: dict[str, str] = field(default_factory=dict)
    ready_path: str = "jupyter-cifar/api/status"  # answered once the server (and extension) is up
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{BASE_URL}"

    @property
    def store_url(self) -> str:
        """What RemoteModelStore / --store takes."""
        return f"{self.url}?token={self.token}"

    def start(self, timeout: float = 60) -> JupyterServer:
        """Start it (again on another port if its own was taken meanwhile)."""
        return on_a_free_port(self, lambda: self._start(timeout))

    def _start(self, timeout: float) -> JupyterServer:
        for sub in ("config", "data", "runtime", "work"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "JUPYTER_CONFIG_DIR": str(self.root / "config"),
            "JUPYTER_DATA_DIR": str(self.root / "data"),
            "JUPYTER_RUNTIME_DIR": str(self.root / "runtime"),
            **self.env,
        }
        env.pop("JUPYTER_CIFAR_SERVER_URL", None)
        before = len(self.log())  # this start's lines come after it
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 (the process owns it)
        argv = [
            *(sys.executable, "-m", "jupyter_server", "--no-browser", "--allow-root"),
            *("--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0"),
            *(f"--ServerApp.base_url={BASE_URL}", f"--IdentityProvider.token={self.token}"),
            f"--ServerApp.root_dir={self.root / 'work'}",
            f"--CifarExtension.store_uri={self.store_uri}",
            f"--CifarExtension.max_jobs={self.max_jobs}",
            *self.extra,
        ]
        self.proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                check_port_taken(self.log()[before:])
                raise RuntimeError(f"jupyter server exited: {self.log()[-3000:]}")
            try:
                self.get(self.ready_path)
                return self
            except http.client.HTTPException as e:  # not HTTP: another process holds the port
                raise PortTaken(f"port {self.port}: {e!r}") from None
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)
        raise RuntimeError(f"jupyter server did not answer within {timeout} s: {self.log()[-3000:]}")

    def get(self, path: str, token: str | None = None) -> object:
        request = urllib.request.Request(
            self.url + path, headers={"Authorization": f"token {token or self.token}"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def log(self) -> str:
        path = self.root / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        terminate(self.proc)
        self.proc = None
