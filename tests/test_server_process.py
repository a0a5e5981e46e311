"""Real `jupyter server` processes: models outlive sessions, kernels reach the store, the spec holds."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import psutil
import pytest
from jupyterserver import JupyterServer
from mongod import Mongod
from storetools import tiny_model

from jupyter_cifar.errors import StoreUnavailable
from jupyter_cifar.store import open_store
from jupyter_cifar.store.remote import ENV_SERVER_TOKEN, ENV_SERVER_URL, RemoteModelStore

pytestmark = pytest.mark.slow


def request(server: JupyterServer, path: str, method: str = "GET", token: str | None = None, body=None):
    headers = {"Authorization": f"token {token or server.token}"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(server.url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def test_models_outlive_the_server(tmp_path: Path, cifar10) -> None:
    store_dir = tmp_path / "models"
    images = cifar10.x_test[:32]
    first = JupyterServer(tmp_path / "one", store_uri=str(store_dir)).start()
    try:
        model = tiny_model()
        with RemoteModelStore(first.store_url) as store:
            saved = store.save(model, "survivor", metadata={"test_accuracy": 0.5})
        before = model.predict(images, verbose=0)
    finally:
        first.stop()
    second = JupyterServer(tmp_path / "two", store_uri=str(store_dir)).start()
    try:
        with RemoteModelStore(second.store_url) as store:
            listed = store.list().items
            assert [r.ref for r in listed] == ["survivor:1"] and listed[0].sha256 == saved.sha256
            after = store.load("survivor").predict(images, verbose=0)
    finally:
        second.stop()
    np.testing.assert_allclose(after, before, atol=1e-6)


def _kernel_environ(server: JupyterServer) -> dict[str, str]:
    """Start a kernel through the server's API and read its real process environment."""
    status, kernel = request(server, "api/kernels", "POST", body={"name": "python3"})
    assert status == 201, kernel
    assert server.proc is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for child in psutil.Process(server.proc.pid).children(recursive=True):
            try:
                if "ipykernel" in " ".join(child.cmdline()):
                    return child.environ()
            except psutil.Error:  # a process that ended meanwhile (or a zombie): not the kernel
                continue
        time.sleep(0.2)
    raise AssertionError("no kernel process appeared")


def test_kernels_learn_the_api_and_a_token_that_opens_it_only(jupyter_server: JupyterServer) -> None:
    env = _kernel_environ(jupyter_server)
    assert env[ENV_SERVER_URL] == jupyter_server.url
    token = env[ENV_SERVER_TOKEN]
    assert token and token != jupyter_server.token
    assert "JUPYTER_CIFAR_STORE" not in env
    assert request(jupyter_server, "jupyter-cifar/api/models", token=token)[0] == 200
    for other in ("api/contents", "api/kernels", "api/sessions"):
        assert request(jupyter_server, other, token=token)[0] == 403, other
    # In that kernel, the default store is the server's.
    with open_store(f"{env[ENV_SERVER_URL]}?token={token}") as store:
        assert isinstance(store, RemoteModelStore)
        store.list()


def test_mongodb_credentials_never_reach_a_kernel_or_a_client(tmp_path: Path) -> None:
    mongod = Mongod(tmp_path / "mongod").start()
    uri = f"mongodb://127.0.0.1:{mongod.port}/models?appname=secret-in-uri"
    server = JupyterServer(tmp_path / "server", store_uri=uri.replace("127.0.0.1", "u:hunter2@127.0.0.1"))
    try:
        server.start()
        env = _kernel_environ(server)
        assert not any("hunter2" in v for v in env.values())
        _, body = request(server, "jupyter-cifar/api/status")
        assert "hunter2" not in json.dumps(body)
        assert "hunter2" not in server.log()
    finally:
        server.stop()
        mongod.stop()


def test_mongodb_down_is_503_and_the_api_recovers_without_a_restart(tmp_path: Path, model_file_path) -> None:
    mongod = Mongod(tmp_path / "mongod").start()
    server = JupyterServer(tmp_path / "server", store_uri=f"{mongod.uri}/models").start()
    try:
        with RemoteModelStore(server.store_url) as store:
            store.save(model_file_path, "m")
            mongod.stop()
            status, body = request(server, "jupyter-cifar/api/models")
            assert status == 503 and body["error"] == "store_unavailable"
            assert f"127.0.0.1:{mongod.port}" in body["message"]
            with pytest.raises(StoreUnavailable):
                store.list()
            mongod.start()
            deadline = time.monotonic() + 60
            while (status := request(server, "jupyter-cifar/api/models")[0]) != 200:
                assert time.monotonic() < deadline, status
                time.sleep(0.5)
            assert [r.ref for r in store.list().items] == ["m:1"]
    finally:
        server.stop()
        mongod.stop()


@pytest.fixture(scope="module")
def model_file_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("m") / "tiny.keras"
    tiny_model().save(path)
    return path


def test_schemathesis_finds_no_server_error(jupyter_server: JupyterServer, model_file_path: Path) -> None:
    """Every operation of the OpenAPI file, fuzzed with a token: no 5xx, every response as described."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    with RemoteModelStore(jupyter_server.store_url) as store:
        store.save(model_file_path, "m", aliases=["prod"])  # something for the routes to find
    schema = schemathesis.openapi.from_path(
        Path(__file__).parent.parent / "jupyter_cifar/server/openapi.json"
    )
    schema.config.update(base_url=jupyter_server.url.rstrip("/"))
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    auth = {"Authorization": f"token {jupyter_server.token}"}
    failures: list[str] = []

    def fuzz(operation) -> None:
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=operation.as_strategy())
        def run(case) -> None:
            response = case.call(headers=auth)
            try:
                case.validate_response(response, checks=checks)
            except Exception as e:  # collect every operation's failures, then report them together
                failures.append(f"{operation.label}: {e}")

        run()

    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 25  # every route of the file
    for operation in operations:
        fuzz(operation)
    assert not failures, "\n".join(failures[:10])


@pytest.mark.parametrize(
    ("store_uri", "option", "reason"),
    [
        (
            "ftp://example/models",
            None,
            "CifarExtension.store_uri: ftp://example/models: unknown kind of store",
        ),
        (None, "--CifarExtension.max_upload_bytes=0", "CifarExtension.max_upload_bytes: must be a positive"),
        (None, "--CifarExtension.max_upload_bytes=lots", "CifarExtension.max_upload_bytes"),
        (
            None,
            "--CifarExtension.max_widget_upload_bytes=-1",
            "CifarExtension.max_widget_upload_bytes: must be",
        ),
        (
            None,
            "--CifarExtension.data_dir=/no/such/folder",
            "CifarExtension.data_dir: /no/such/folder: no such",
        ),
        # a password written unescaped: the server stops (it went on without the API), naming no secret
        (
            "mongodb://cifar:TopSec?ret99@127.0.0.1:1/jc",
            None,
            "CifarExtension.store_uri: mongodb://cifar:***@",
        ),
    ],
)
def test_a_bad_setting_stops_the_server_naming_it(
    tmp_path: Path, store_uri: str | None, option: str | None, reason: str
) -> None:
    server = JupyterServer(
        tmp_path, store_uri=store_uri or str(tmp_path / "models"), extra=(option,) if option else ()
    )
    with pytest.raises(RuntimeError) as err:
        server.start(timeout=60)
    server.stop()
    assert reason in str(err.value), str(err.value)[-2000:]
    assert "TopSec" not in server.log() and "ret99" not in server.log()


@pytest.mark.parametrize("where", ["command line", "config file"])
def test_upload_limits_work_from_the_command_line_and_a_config_file(
    tmp_path: Path, model_file_path: Path, where: str
) -> None:
    """The command line's values reach the extension as strings it reads later (traitlets' deferred
    config): they must be read as numbers, not refused (the server stopped) or ignored."""
    settings = {"max_upload_bytes": 1_000_000, "max_widget_upload_bytes": 30_000_000}
    extra: tuple[str, ...] = ()
    if where == "command line":
        extra = tuple(f"--CifarExtension.{k}={v}" for k, v in settings.items())
    else:
        (tmp_path / "config").mkdir()
        config = {"CifarExtension": settings}
        (tmp_path / "config" / "jupyter_server_config.json").write_text(json.dumps(config))
    server = JupyterServer(tmp_path, store_uri=str(tmp_path / "models"), extra=extra).start()
    try:
        assert "uploads of up to 1000000 bytes, kernel messages of up to 30000000" in server.log()
        with RemoteModelStore(server.store_url) as store:
            assert store.save(model_file_path, "small").version == 1  # under the limit: stored
        too_big = urllib.request.Request(
            server.url + "jupyter-cifar/api/uploads",
            data=b"x" * 1_000_001,
            headers={"Authorization": f"token {server.token}", "Content-Type": "application/octet-stream"},
        )
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(too_big, timeout=30)
        assert err.value.code == 413 and "1000000" in json.loads(err.value.read())["message"]
    finally:
        server.stop()
