"""RemoteModelStore's own duties: the token reaches the configured origin and no other.

Two plain HTTP servers on loopback stand in for a front end that redirects API calls: one answers every
request with a redirect, the other records what reaches it.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from jupyter_cifar.errors import StoreUnavailable
from jupyter_cifar.store.remote import RemoteModelStore, _SameOriginRedirects

RECORD = {
    "name": "m",
    "version": 1,
    "created": "2026-12-05T00:00:00+00:00",
    "sha256": "0" * 64,
    "size": 1,
    "aliases": [],
    "tags": {},
    "notes": "",
    "test_accuracy": None,
    "metadata": {},
}


@contextmanager
def http_server(answer) -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A loopback server whose every GET is ``answer(handler)``; yields its URL and the headers of
    each request it received."""
    seen: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append({"path": self.path, **{k.lower(): v for k, v in self.headers.items()}})
            answer(self)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", seen
    finally:
        server.shutdown()
        server.server_close()


def redirect_to(url: str):
    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(302)
        handler.send_header("Location", url + handler.path.lstrip("/"))
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return answer


def record(handler: BaseHTTPRequestHandler) -> None:
    body = json.dumps(RECORD).encode()
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def test_a_redirect_to_another_origin_is_refused_and_the_token_never_goes_there() -> None:
    with http_server(record) as (elsewhere, reached), http_server(redirect_to(elsewhere)) as (front, asked):
        store = RemoteModelStore(front + "?token=SECRET-TOKEN")
        with pytest.raises(StoreUnavailable) as err:
            store.resolve("m")
    message = str(err.value)
    assert "302" in message and elsewhere.rstrip("/") in message and "not followed" in message
    assert "SECRET-TOKEN" not in message
    assert asked and asked[0]["authorization"] == "token SECRET-TOKEN"  # the configured server has it
    assert reached == []  # the other origin heard nothing at all


def test_a_redirect_within_the_origin_is_followed_with_the_token() -> None:
    def answer(handler: BaseHTTPRequestHandler) -> None:
        if handler.path.startswith("/moved/"):
            record(handler)
        else:
            redirect_to("/moved/")(handler)

    with http_server(answer) as (url, seen):
        store = RemoteModelStore(url + "?token=SECRET-TOKEN")
        assert store.resolve("m").ref == "m:1"
    assert [s["path"].split("/")[1] for s in seen] == ["jupyter-cifar", "moved"]
    assert all(s["authorization"] == "token SECRET-TOKEN" for s in seen)


@pytest.mark.parametrize(
    ("configured", "location"),
    [
        ("https://jupyter.example/", "http://jupyter.example/jupyter-cifar/api/models"),  # a downgrade
        ("https://jupyter.example/", "https://jupyter.example:8443/jupyter-cifar/api/models"),
        ("https://jupyter.example/", "https://login.example/sso?next=/"),
        ("http://127.0.0.1:8888/", "http://localhost:8888/jupyter-cifar/api/models"),
        ("http://127.0.0.1:8888/", "//evil.example/steal"),  # scheme-relative
    ],
)
def test_every_redirect_off_the_origin_is_refused(configured: str, location: str) -> None:
    handler = _SameOriginRedirects("the Jupyter server", urlsplit(configured))
    request = urllib.request.Request(
        configured + "jupyter-cifar/api/models", headers={"Authorization": "token t"}
    )
    with pytest.raises(StoreUnavailable, match="not followed"):
        handler.redirect_request(request, _Closable(), 302, "Found", {}, location)


def test_a_redirect_to_the_same_origin_spelled_otherwise_is_followed() -> None:
    handler = _SameOriginRedirects("the Jupyter server", urlsplit("https://Jupyter.example/"))
    request = urllib.request.Request("https://jupyter.example/x", headers={"Authorization": "token t"})
    followed = handler.redirect_request(
        request, _Closable(), 301, "Moved", {}, "https://jupyter.example:443/y"
    )
    assert followed is not None and followed.full_url == "https://jupyter.example:443/y"


class _Closable:
    def close(self) -> None:
        pass
