"""Requests that once got a 500 or a dropped connection get their documented 4xx (issue 18, point 6).

A real `jupyter server` process on each backend (the embedded store and a real MongoDB), with a 1 MB
upload limit. Every answer checked here is JSON ``{"error", "message"}`` with the documented status;
a property test then throws arbitrary JSON and query text at the writing and listing routes.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jupyterserver import JupyterServer
from storetools import tiny_model_file

LIMIT = 1_000_000


@pytest.fixture(scope="module", params=["local", "mongo"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[JupyterServer]:
    root = tmp_path_factory.mktemp(f"errors-{request.param}")
    (root / "tmp").mkdir()  # the server's TMPDIR: where uploads are staged
    if request.param == "local":
        store_uri = str(root / "models")
    else:
        store_uri = f"{request.getfixturevalue('mongod').uri}/server_errors"
    server = JupyterServer(
        root,
        store_uri=store_uri,
        extra=(f"--CifarExtension.max_upload_bytes={LIMIT}",),
        env={"TMPDIR": str(root / "tmp")},
    )
    server.start()
    with requests.Session() as http:
        http.headers["Authorization"] = f"token {server.token}"
        server.http = http  # type: ignore[attr-defined]
        model = tiny_model_file(root / "tiny.keras").read_bytes()
        server.model = model  # type: ignore[attr-defined]
        assert call(server, "POST", "models/m/versions", data=model).status_code == 201  # m:1 exists
        yield server
    server.stop()


def call(server: JupyterServer, method: str, path: str, **kwargs: Any) -> requests.Response:
    headers = kwargs.pop("headers", {})
    if "data" in kwargs and "Content-Type" not in headers:
        headers["Content-Type"] = "application/octet-stream"
    return server.http.request(  # type: ignore[attr-defined, no-any-return]
        method, f"{server.url}jupyter-cifar/api/{path}", headers=headers, timeout=60, **kwargs
    )


def call_json(server: JupyterServer, method: str, path: str, body: bytes | str) -> requests.Response:
    return call(server, method, path, data=body, headers={"Content-Type": "application/json"})


def documented(response: requests.Response, status: int, error: str, *words: str) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text[:300])
    body: dict[str, Any] = response.json()
    assert body["error"] == error and isinstance(body["message"], str), body
    for word in words:
        assert word in body["message"], body
    return body


def staged(server: JupyterServer) -> list[Path]:
    return [p for p in (server.root / "tmp").rglob("*") if p.is_file()]


def upload(server: JupyterServer) -> str:
    response = call(server, "POST", "uploads", data=server.model)  # type: ignore[attr-defined]
    assert response.status_code == 201
    return str(response.json()["upload_id"])


def chunks(total: int, size: int = 64 << 10) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        yield b"x" * min(size, total - sent)
        sent += size


# -- bodies over their limits ------------------------------------------------------------------------


def test_a_chunked_upload_over_the_limit_is_413_not_a_bare_400(server: JupyterServer) -> None:
    for path in ("uploads", "models/m/versions"):
        response = call(server, "POST", path, data=chunks(2 * LIMIT))  # no Content-Length: chunked
        assert response.request.headers.get("Transfer-Encoding") == "chunked"
        documented(response, 413, "too_large", str(LIMIT))
    assert call(server, "GET", "versions/m:1").status_code == 200  # the server goes on
    assert not [p for p in staged(server) if p.suffix == ".upload"]  # nothing half-received stays


def test_a_chunked_upload_within_the_limit_is_stored(server: JupyterServer) -> None:
    model: bytes = server.model  # type: ignore[attr-defined]
    response = call(server, "POST", "uploads", data=(model[i : i + 4096] for i in range(0, len(model), 4096)))
    assert response.status_code == 201 and response.json()["size"] == len(model)


@pytest.mark.parametrize("chunked", [False, True], ids=["declared", "chunked"])
def test_a_json_body_over_8_mib_is_413_with_an_answer(server: JupyterServer, chunked: bool) -> None:
    body = b'{"notes": "' + b"n" * (9 << 20) + b'"}'
    for method, path in (("POST", "models/m/versions"), ("PATCH", "versions/m:1")):
        data: Any = chunks(len(body)) if chunked and method == "POST" else body
        documented(call_json(server, method, path, data), 413, "too_large", str(8 << 20))


# -- what reached the store as a 500 -------------------------------------------------------------------


def test_a_search_holding_nul_is_400(server: JupyterServer) -> None:
    documented(call(server, "GET", "models?search=%00"), 400, "bad_parameter", "search")
    documented(call(server, "GET", "models?search=" + "a" * 1001), 400, "bad_parameter", "search")
    assert call(server, "GET", "models?search=%25_.*%5B").status_code == 200  # regex characters: fine


def test_metadata_a_backend_cannot_keep_is_400_on_every_backend(server: JupyterServer) -> None:
    cases = [
        ({"test_accuracy": 10**400}, "401-digit integer"),
        ({"test_accuracy": "0.9"}, "test_accuracy must be a number"),
        ({"steps": -(2**64)}, "64 bits"),
        ({"deep": json.loads("[" * 40 + "]" * 40)}, "deeper than"),
    ]
    for metadata, words in cases:
        spec = {"upload_id": upload(server), "metadata": metadata}
        documented(
            call_json(server, "POST", "models/m/versions", json.dumps(spec)), 400, "bad_parameter", words
        )
    versions = call(server, "GET", "models?name=m").json()["items"]
    assert [v["version"] for v in versions] == [1]  # nothing was stored


@pytest.mark.parametrize(
    ("method", "path"),
    [("PATCH", "versions/m:1"), ("PUT", "models/m/aliases/prod"), ("POST", "models/m/versions")],
)
def test_json_nested_100000_levels_deep_is_400(server: JupyterServer, method: str, path: str) -> None:
    body = '{"notes": ' + "[" * 100_000 + "]" * 100_000 + "}"
    documented(call_json(server, method, path, body), 400, "bad_parameter", "deeper than")


def test_an_upload_id_of_300_characters_is_400(server: JupyterServer) -> None:
    for upload_id in ("u" * 300, "../" * 10, "a/b"):
        body = json.dumps({"upload_id": upload_id})
        documented(call_json(server, "POST", "models/m/versions", body), 400, "bad_parameter", "upload_id")
    body = json.dumps({"upload_id": "u" * 64})  # well formed, never given: 404
    documented(call_json(server, "POST", "models/m/versions", body), 404, "not_found", "upload")


def test_saves_with_an_alias_racing_deletes_of_the_name_are_never_a_500(server: JupyterServer) -> None:
    """One thread saves with an alias, another deletes the whole model: each save is stored (201), or
    deleted before its alias could name it (409), never a 500 (the embedded store's foreign key)."""
    statuses: list[int] = []
    model: bytes = server.model  # type: ignore[attr-defined]
    done = threading.Event()

    def delete_all() -> None:
        while not done.is_set():
            response = call(server, "DELETE", "models/racing")
            assert response.status_code in (200, 404), response.text
            if response.status_code == 404:
                done.wait(0.002)

    deleter = threading.Thread(target=delete_all)
    deleter.start()
    try:
        for _ in range(40):
            response = call(server, "POST", "models/racing/versions?alias=prod", data=model)
            statuses.append(response.status_code)
            if response.status_code != 201:
                documented(response, 409, "conflict", "deleted by another request")
    finally:
        done.set()
        deleter.join()
    assert set(statuses) <= {201, 409} and 201 in statuses, statuses


# -- and it stays so -------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=30,
)
bodies = st.one_of(
    json_values.map(json.dumps),
    st.dictionaries(
        st.sampled_from(["tags", "notes", "version", "metadata", "upload_id", "aliases", "other"]),
        json_values,
        max_size=4,
    ).map(json.dumps),
    st.integers(1, 3000).map(lambda depth: '{"metadata": ' + "[" * depth + "]" * depth + "}"),
    st.text(max_size=40),
)
queries = st.dictionaries(
    st.sampled_from(["search", "name", "tag", "sort", "limit", "offset"]), st.text(max_size=30), max_size=4
)


def test_no_json_body_or_query_text_gets_a_server_error(server: JupyterServer) -> None:
    """Arbitrary JSON (deep, huge integers, any types) to every JSON route, arbitrary text to the list's
    query: a 2xx, or a 4xx as JSON {"error", "message"}, never a 5xx or a dropped connection."""
    routes = [("PATCH", "versions/m:1"), ("PUT", "models/m/aliases/prod"), ("POST", "models/p/versions")]

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(route=st.sampled_from(routes), body=bodies, query=queries)
    def run(route: tuple[str, str], body: str, query: dict[str, str]) -> None:
        method, path = route
        for response in (call_json(server, method, path, body), call(server, "GET", "models", params=query)):
            assert response.status_code < 500, (route, body[:200], query, response.text[:300])
            if response.status_code >= 400:
                error = response.json()
                assert set(error) >= {"error", "message"}, error

    run()
