"""The server extension's REST API, in-process with pytest-jupyter under its awkward base URL `/a%40b/`."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from storetools import tiny_model_file
from tornado.httpclient import HTTPResponse

from jupyter_cifar.server.handlers import handlers
from jupyter_cifar.store import open_store

OPENAPI = json.loads((Path(__file__).parent.parent / "jupyter_cifar/server/openapi.json").read_text())


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "models"


@pytest.fixture
def jp_server_config(store_dir: Path) -> dict[str, Any]:
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_cifar": True}},
        "CifarExtension": {"store_uri": str(store_dir), "max_upload_bytes": 2_000_000},
    }


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_file(tmp_path_factory.mktemp("m") / "tiny.keras")


@pytest.fixture
def api(jp_fetch):
    """Calls the API; returns (status, JSON body or raw bytes, response)."""

    async def call(path: str, method: str = "GET", body: Any = None, **kwargs: Any):
        headers = kwargs.pop("headers", {})
        if isinstance(body, dict | list):
            body = json.dumps(body)
            headers.setdefault("Content-Type", "application/json")
        elif isinstance(body, bytes):
            headers.setdefault("Content-Type", "application/octet-stream")
        response: HTTPResponse = await jp_fetch(
            "jupyter-cifar", "api", *path.split("/"), method=method, body=body, headers=headers,
            raise_error=False, allow_nonstandard_methods=True, **kwargs,
        )  # fmt: skip
        content = response.body
        if response.headers.get("Content-Type", "").startswith("application/json") and content:
            content = json.loads(content)
        return response.code, content, response

    return call


async def create(api, model_file: Path, name: str = "cnn", **spec: Any) -> dict:
    status, upload, _ = await api("uploads", "POST", model_file.read_bytes())
    assert status == 201, upload
    status, record, _ = await api(
        f"models/{name}/versions", "POST", {"upload_id": upload["upload_id"], **spec}
    )
    assert status == 201, record
    return record


async def test_status_and_openapi(api) -> None:
    status, body, _ = await api("status")
    assert status == 200 and body["backend"] == "LocalModelStore"
    status, body, _ = await api("openapi.json")
    assert status == 200 and body == OPENAPI


async def test_the_whole_life_of_a_version(api, model_file: Path) -> None:
    first = await create(api, model_file, metadata={"test_accuracy": 0.7}, tags={"k": "v"}, notes="hi")
    assert (first["name"], first["version"], first["test_accuracy"]) == ("cnn", 1, 0.7)
    assert first["sha256"] == hashlib.sha256(model_file.read_bytes()).hexdigest()
    second = await create(api, model_file)
    assert second["version"] == 2
    status, page, _ = await api("models", params={"name": "cnn", "sort": "version"})
    assert status == 200 and [r["version"] for r in page["items"]] == [1, 2] and page["total"] == 2
    status, page, _ = await api("models", params={"tag": "k=v"})
    assert [r["version"] for r in page["items"]] == [1]
    status, record, _ = await api(
        "versions/cnn:1", "PATCH", {"tags": {"k": None, "new": "1"}, "notes": "edited"}
    )
    assert status == 200 and record["tags"] == {"new": "1"} and record["notes"] == "edited"
    status, record, _ = await api("models/cnn/aliases/prod", "PUT", {"version": 1})
    assert status == 200 and record["aliases"] == ["prod"]
    status, record, _ = await api("versions/cnn@prod")
    assert status == 200 and record["version"] == 1
    status, record, _ = await api("versions/cnn")
    assert record["version"] == 2
    status, content, response = await api("versions/cnn@prod/file")
    assert status == 200 and hashlib.sha256(content).hexdigest() == first["sha256"]
    assert response.headers["Content-Disposition"] == 'attachment; filename="cnn-v1.keras"'
    assert response.headers["ETag"] == f'"{first["sha256"]}"'
    status, _, _ = await api("models/cnn/aliases/prod", "DELETE")
    assert status == 204
    status, record, _ = await api("versions/cnn:2", "DELETE")
    assert status == 200 and record["version"] == 2
    status, body, _ = await api("models/cnn", "DELETE")
    assert status == 200 and [r["version"] for r in body["deleted"]] == [1]
    status, page, _ = await api("models")
    assert page["total"] == 0


async def test_a_version_from_the_raw_file_in_one_request(api, model_file: Path) -> None:
    status, record, response = await api(
        "models/direct/versions",
        "POST",
        model_file.read_bytes(),
        params={"tag": "a=b", "notes": "n", "alias": "x"},
    )
    assert status == 201, record
    assert record["tags"] == {"a": "b"} and record["notes"] == "n" and record["aliases"] == ["x"]
    assert response.headers["Location"].endswith("/jupyter-cifar/api/versions/direct:1")


@pytest.mark.parametrize(
    ("path", "method", "body", "status", "error"),
    [
        ("versions/nope", "GET", None, 404, "not_found"),
        ("versions/nope:3", "DELETE", None, 404, "not_found"),
        ("versions/bad name", "GET", None, 400, "bad_parameter"),
        ("versions/x:0", "GET", None, 400, "bad_parameter"),
        ("models", "GET", None, 400, "bad_parameter"),  # with ?sort=password below
        ("models/x/versions", "POST", {"upload_id": "nope"}, 404, "not_found"),
        ("models/x/versions", "POST", {"upload_id": 3}, 400, "bad_parameter"),
        ("models/x/versions", "POST", {"upload_id": "a", "extra": 1}, 400, "bad_parameter"),
        ("models/x/versions", "POST", [1, 2], 400, "bad_parameter"),
        ("models/x/aliases/prod", "PUT", {"version": "one"}, 400, "bad_parameter"),
        ("models/x/aliases/prod", "PUT", {"version": 1}, 404, "not_found"),
        ("models/x/aliases/prod", "DELETE", None, 404, "not_found"),
        ("models/x", "DELETE", None, 404, "not_found"),
        ("versions/x", "PATCH", {"color": "red"}, 400, "bad_parameter"),
        ("uploads", "POST", {"not": "bytes"}, 400, "bad_parameter"),
    ],
)
async def test_errors_are_json_with_the_right_code(api, path, method, body, status, error) -> None:
    params = {"sort": "password"} if path == "models" else None
    code, content, _ = await api(path, method, body, params=params)
    assert code == status, content
    assert content["error"] == error and content["message"]


async def test_bad_json_body(api) -> None:
    code, content, _ = await api(
        "versions/x", "PATCH", b"{not json", headers={"Content-Type": "application/json"}
    )
    assert code == 400 and "not JSON" in content["message"]


async def test_a_refused_version_keeps_its_upload_for_a_corrected_retry(api, model_file: Path) -> None:
    status, upload, _ = await api("uploads", "POST", model_file.read_bytes())
    assert status == 201
    for bad in ({"aliases": ["latest"]}, {"tags": {"bad key": "v"}}, {"notes": 3}, {"metadata": []}):
        code, content, _ = await api("models/m/versions", "POST", {"upload_id": upload["upload_id"], **bad})
        assert code == 400 and content["error"] == "bad_parameter", (bad, content)
    code, record, _ = await api("models/m/versions", "POST", {"upload_id": upload["upload_id"]})
    assert code == 201 and record["version"] == 1
    code, content, _ = await api("models/m/versions", "POST", {"upload_id": upload["upload_id"]})
    assert code == 404  # used once


async def test_a_file_that_is_not_a_model_is_refused(api, tmp_path: Path) -> None:
    text = tmp_path / "x.keras"
    text.write_text("hello")
    code, content, _ = await api("models/x/versions", "POST", text.read_bytes())
    assert code == 400 and content["error"] == "not_a_model"
    code, page, _ = await api("models")
    assert page["total"] == 0


async def test_an_upload_over_the_limit_is_413(api) -> None:
    code, content, _ = await api("uploads", "POST", b"\0" * 2_000_001)
    assert code == 413 and content["error"] == "too_large" and "2000000" in content["message"]


async def test_a_corrupt_file_is_409_not_a_wrong_model(api, model_file: Path, store_dir: Path) -> None:
    record = await create(api, model_file)
    with open_store(store_dir) as store:
        path = store.file_path(store.resolve("cnn"))  # type: ignore[attr-defined]
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    code, content, _ = await api("versions/cnn/file")
    assert code == 409 and content["error"] == "integrity" and record["name"] + ":1" in content["message"]


def _example_path(pattern: str) -> str:
    """A concrete path for a route's pattern."""
    path = re.sub(r"\(\?P<ref>[^)]*\)", "m:1", pattern)
    path = re.sub(r"\(\?P<alias>[^)]*\)", "prod", path)
    path = re.sub(r"\(\?P<job>[^)]*\)", JOB_ID, path)
    path = re.sub(r"\(\?P<photo>[^)]*\)", PHOTO_ID, path)
    return re.sub(r"\(\?P<name>[^)]*\)", "m", path)


JOB_ID = "0123456789abcdef"
PHOTO_ID = "0123456789abcdef0123456789abcdef"


def _routes() -> list[tuple[str, str]]:
    out = []
    for pattern, handler in handlers():
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            if method.lower() in handler.__dict__:
                out.append((_example_path(pattern), method))
    return out


def test_every_route_is_in_the_openapi_file_and_back() -> None:
    described = {
        (
            re.sub(
                r"\{(\w+)\}",
                lambda m: {"ref": "m:1", "name": "m", "alias": "prod", "job": JOB_ID, "photo": PHOTO_ID}[
                    m[1]
                ],
                path,
            ),
            method.upper(),
        )
        for path, item in OPENAPI["paths"].items()
        for method in item
    }
    assert set(_routes()) == described


def test_the_openapi_job_spec_is_the_one_the_server_reads() -> None:
    """Every field of a job's spec, and the values its enums allow, as the code has them (a field added
    to one and not the other failed schemathesis only, as a response that broke the schema)."""
    import dataclasses

    from jupyter_cifar.engine.nets import PRESETS
    from jupyter_cifar.engine.precision import PRECISIONS
    from jupyter_cifar.jobs.records import JobSpec

    schema = OPENAPI["components"]["schemas"]["JobSpec"]["properties"]
    assert set(schema) == {f.name for f in dataclasses.fields(JobSpec)}
    assert schema["preset"]["enum"] == list(PRESETS)
    assert schema["precision"]["enum"] == list(PRECISIONS)


@pytest.mark.parametrize(("path", "method"), _routes())
async def test_no_token_is_403_on_every_route(
    jp_serverapp, http_server_client, jp_base_url, path, method
) -> None:
    body = b"{}" if method in ("POST", "PUT", "PATCH") else None
    response = await http_server_client.fetch(
        f"{jp_base_url.rstrip('/')}{path}", method=method, body=body, raise_error=False
    )
    assert response.code == 403


async def test_the_kernel_token_opens_this_api_and_nothing_else(
    jp_serverapp, http_server_client, jp_base_url, model_file: Path
) -> None:
    token = jp_serverapp.web_app.settings["jupyter_cifar_kernel_token"]
    client = http_server_client
    base = jp_base_url
    auth = {"Authorization": f"token {token}"}
    response = await client.fetch(
        f"{base}jupyter-cifar/api/models/k/versions", method="POST", body=model_file.read_bytes(),
        headers={**auth, "Content-Type": "application/octet-stream"}, raise_error=False,
    )  # fmt: skip
    assert response.code == 201, response.body  # a write, with no XSRF cookie: token requests need none
    response = await client.fetch(f"{base}jupyter-cifar/api/models", headers=auth, raise_error=False)
    assert response.code == 200 and json.loads(response.body)["total"] == 1
    for other in ("api/contents", "api/kernels", "api/sessions", "api/terminals", "api/me"):
        response = await client.fetch(
            f"{base}{other}", headers=auth, raise_error=False, follow_redirects=False
        )
        assert response.code in (302, 403), (other, response.code)  # refused (or sent to log in)
    wrong = {"Authorization": f"token {token[:-2]}xx"}
    response = await client.fetch(f"{base}jupyter-cifar/api/models", headers=wrong, raise_error=False)
    assert response.code == 403


async def test_the_store_uri_never_reaches_a_client(api, store_dir: Path) -> None:
    # The status names the store for people; for MongoDB its display form hides the password.
    _, body, _ = await api("status")
    assert body["store"] == str(store_dir)


async def test_the_kernel_websocket_takes_photos_larger_than_tornados_default(jp_serverapp) -> None:
    # Widget uploads travel over the kernel websocket; tornado's 10 MiB default drops bigger ones silently.
    assert jp_serverapp.web_app.settings["websocket_max_message_size"] >= 512 * 1024 * 1024
