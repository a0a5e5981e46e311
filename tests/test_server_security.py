"""Hostile requests against a real `jupyter server` process with the extension (issue 7, point 3).

- **Cross-site writes (XSRF).** A browser logged in with the session cookie (logged in through Jupyter's
  own login form, the way a person is) visits another site, whose page posts a form to each writing
  route. Jupyter's real XSRF and origin checks refuse it with 403 and the store (records and files, and
  the staging folder uploads go to) is unchanged; the same request carrying the XSRF token succeeds, so
  the refusals are the check at work and not a broken route.
- **Hostile names and text.** Names with `../`, NUL, control characters, 10,000 characters, homoglyphs,
  bidi overrides or zero-width joiners are refused with 400 naming the parameter, wherever a name
  travels (path, query, JSON); notes and tag values with markup, bidi overrides and the like are stored
  and returned exactly as sent, or refused with 400 naming them; nothing appears outside the store.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
import requests
from jupyterserver import JupyterServer
from storetools import tiny_model_file

from jupyter_cifar.server.handlers import handlers

EVIL = "http://evil.example"
MODEL = object()  # a route's body: the model file's bytes
PHOTO = object()  # a route's body: a photo's bytes

# Every writing route, with a body that makes it succeed (the version 1 and alias 'prod' exist).
WRITES: list[tuple[str, str, Any]] = [
    ("POST", "uploads", MODEL),
    ("POST", "models/{name}/versions", MODEL),
    ("DELETE", "models/{name}", None),
    ("PUT", "models/{name}/aliases/prod", {"version": 2}),
    ("DELETE", "models/{name}/aliases/prod", None),
    ("PATCH", "versions/{name}:1", {"notes": "changed", "tags": {"k": "changed"}}),
    ("DELETE", "versions/{name}:1", None),
    ("POST", "jobs", {"preset": "tutorial", "epochs": 1, "train_limit": 500}),
    ("POST", "jobs/{job}/stop", None),
    ("POST", "jobs/{job}/resume", None),  # a stopped job (see make_job)
    ("DELETE", "jobs/{job}", None),
    ("POST", "photos?label=cat", PHOTO),
    ("DELETE", "photos/{photo}", None),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterServer]:
    root = tmp_path_factory.mktemp("server")
    (root / "tmp").mkdir()  # the server's TMPDIR: where uploads are staged
    server = JupyterServer(root, store_uri=str(root / "models"), env={"TMPDIR": str(root / "tmp")})
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def model_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return tiny_model_file(tmp_path_factory.mktemp("model") / "tiny.keras").read_bytes()


def photo_bytes(seed: int = 0) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def make_photo(server: JupyterServer) -> str:
    """A photo in my-photos (a new one each time: its bytes differ)."""
    import random

    response = with_token(server).post(
        api(server, "photos"), params={"label": "dog"}, data=photo_bytes(random.randrange(2**31))
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def api(server: JupyterServer, path: str) -> str:
    return f"{server.url}jupyter-cifar/api/{path}"


def with_token(server: JupyterServer) -> requests.Session:
    """What a script or a kernel uses: the token in a header (no cookie, no XSRF)."""
    session = requests.Session()
    session.headers["Authorization"] = f"token {server.token}"
    return session


def browser_login(server: JupyterServer) -> tuple[requests.Session, str]:
    """A browser's cookie jar after logging in through Jupyter's login form; and its XSRF token."""
    browser = requests.Session()
    assert browser.get(server.url + "login").status_code == 200  # sets the _xsrf cookie
    xsrf = browser.cookies["_xsrf"]
    response = browser.post(
        server.url + "login", data={"password": server.token, "_xsrf": xsrf}, allow_redirects=False
    )
    assert response.status_code == 302, response.text  # logged in: sent on to the app
    assert any(c.name.startswith("username-") for c in browser.cookies)  # the session cookie
    assert browser.get(api(server, "models")).status_code == 200  # the cookie alone reads
    return browser, xsrf


def make_model(server: JupyterServer, name: str, model_bytes: bytes) -> None:
    """Versions 1 and 2 of ``name``, alias 'prod' on 1, a tag and a note."""
    client = with_token(server)
    for _ in range(2):
        response = client.post(
            api(server, f"models/{name}/versions"),
            data=model_bytes,
            params={"tag": "k=v", "notes": "original"},
            headers={"Content-Type": "application/octet-stream"},
        )
        assert response.status_code == 201, response.text
    response = client.put(api(server, f"models/{name}/aliases/prod"), json={"version": 1})
    assert response.status_code == 200, response.text


def make_job(server: JupyterServer, stopped: bool) -> str:
    """A job that waits in the queue (this server runs none), or one stopped before it ran."""
    client = with_token(server)
    response = client.post(api(server, "jobs"), json={"preset": "tutorial", "epochs": 1})
    assert response.status_code == 201, response.text
    job = str(response.json()["id"])
    if stopped:
        assert client.post(api(server, f"jobs/{job}/stop")).json()["state"] == "stopped"
    return job


def snapshot(server: JupyterServer) -> dict[str, Any]:
    """Everything a write could change: every record and job, every stored file, every staged upload."""
    jobs = with_token(server).get(api(server, "jobs"), params={"limit": 1000}).json()["items"]
    photos = with_token(server).get(api(server, "photos"), params={"limit": 1000}).json()["items"]
    page = with_token(server).get(api(server, "models"), params={"limit": 1000}).json()
    files = sorted(str(p.relative_to(server.root)) for p in server.root.rglob("*") if p.is_file())
    return {
        "jobs": sorted(jobs, key=lambda j: j["id"]),
        "photos": sorted(photos, key=lambda p: p["id"]),
        "records": sorted(page["items"], key=lambda r: (r["name"], r["version"])),
        "stored": [f for f in files if f.startswith("models/")],
        "staged": [f for f in files if f.startswith("tmp/")],
    }


def cross_site_attempts(body: Any) -> list[tuple[str, dict[str, Any]]]:
    """The ways a page on another site can send this request with the victim's cookies, and no token."""
    form = {"version": "1", "notes": "pwned", "tags": "k=pwned"}
    data = body if isinstance(body, bytes) else json.dumps(body or {})
    elsewhere = {"Origin": EVIL, "Referer": EVIL + "/page"}
    guessed = "2|00000000|00000000000000000000000000000000|0"
    return [
        ("form from another site", {"data": form, "headers": elsewhere}),
        ("multipart form from another site", {"files": {"f": ("m.keras", data)}, "headers": elsewhere}),
        (
            "text/plain form from another site",
            {"data": data, "headers": {**elsewhere, "Content-Type": "text/plain"}},
        ),
        ("form from a sandboxed page (Origin: null)", {"data": form, "headers": {"Origin": "null"}}),
        ("form with no Origin or Referer (an older browser)", {"data": form}),
        (
            "form with a guessed XSRF token",
            {"data": {**form, "_xsrf": guessed}, "headers": {"X-XSRFToken": guessed}},
        ),
        (
            "the real body, same site, no XSRF token",
            {"data": data, "headers": {"Content-Type": "application/json"}},
        ),
    ]


def test_every_writing_route_is_tried() -> None:
    """A new writing route must join WRITES (and so the cross-site test) before this passes again."""
    writing = {
        (method, pattern.split("jupyter-cifar/api/")[1])
        for pattern, handler in handlers()
        for method in ("POST", "PUT", "PATCH", "DELETE")
        if method.lower() in handler.__dict__
    }
    tried = {
        (method, path.split("?")[0].replace("{name}:1", "(?P<ref>[^/]+)").replace("{job}", "(?P<job>[^/]+)")
         .replace("{name}", "(?P<name>[^/]+)").replace("/prod", "/(?P<alias>[^/]+)")
         .replace("{photo}", "(?P<photo>[^/]+)"))
        for method, path, _ in WRITES
    }  # fmt: skip
    assert writing == tried


@pytest.mark.parametrize(("method", "path", "body"), WRITES, ids=[f"{m} {p}" for m, p, _ in WRITES])
def test_a_cross_site_request_cannot_write(
    server: JupyterServer, model_bytes: bytes, method: str, path: str, body: Any
) -> None:
    name = "xsrf-" + "-".join(filter(str.isalpha, path.replace("{name}", "").split("/"))) + method.lower()
    make_model(server, name, model_bytes)
    job = make_job(server, stopped=path.endswith("/resume")) if "{job}" in path else ""
    photo = make_photo(server) if "{photo}" in path else ""
    url = api(server, path.format(name=name, job=job, photo=photo))
    browser, xsrf = browser_login(server)
    before = snapshot(server)
    real_body = model_bytes if body is MODEL else photo_bytes(7) if body is PHOTO else body
    for what, request in cross_site_attempts(real_body):
        response = browser.request(method, url, **request)
        assert response.status_code == 403, (what, response.status_code, response.text)
        assert response.json()["error"] == "forbidden", (what, response.text)
        assert snapshot(server) == before, what
    # The same browser with the token its own pages send: the route works, so the refusals above
    # were the XSRF check and not a broken route.
    headers = {"X-XSRFToken": xsrf, "Origin": server.url.split("/a%40b/")[0]}
    if body is MODEL or body is PHOTO:
        response = browser.request(
            method, url, data=real_body, headers={**headers, "Content-Type": "application/octet-stream"}
        )
    else:
        response = browser.request(method, url, json=body, headers=headers)
    assert response.status_code in (200, 201, 204), response.text
    assert snapshot(server) != before


def test_a_cross_origin_read_is_refused_too(server: JupyterServer) -> None:
    browser, _ = browser_login(server)
    response = browser.get(api(server, "models"), headers={"Origin": EVIL})
    assert response.status_code == 403 and EVIL in response.json()["message"]


# -- hostile names ---------------------------------------------------------------------------------

HOSTILE_NAMES = {
    "parent folders": "../../jc-escaped",
    "parent, backslashes": "..\\..\\jc-escaped",
    "dot-dot": "..",
    "absolute path": "/etc/jc-escaped",
    "NUL": "model\x00jc-escaped",
    "control characters": "model\x1b[31m\x07",
    "newline": "model\nX-Injected: 1",
    "10,000 characters": "m" * 10_000,
    "Cyrillic homoglyph": "m\u043edel",  # 'model' with a Cyrillic o
    "right-to-left override": "model\u202ekeras.exe",
    "zero-width joiner": "mo\u200ddel",
    "fullwidth letters": "\uff4d\uff4f\uff44\uff45\uff4c",  # 'model' in fullwidth letters
    "markup": "<img src=x onerror=alert(1)>",
    "space": "my model",
    "empty": "",
}


def encode(text: str) -> str:
    """Percent-encode every character a URL path could reinterpret, dots included."""
    return quote(text, safe="").replace(".", "%2E")


def name_places(server: JupyterServer, model: bytes, name: str) -> list[tuple[str, str, str, dict[str, Any]]]:
    """Every way a name, an alias or a tag key reaches the API: (where, method, URL, request).

    Where ends in "in the path" when the name is a segment of the URL's path.
    """
    octets = {"data": model, "headers": {"Content-Type": "application/octet-stream"}}
    new_version = api(server, "models/target/versions")
    segment = encode(name)
    return [
        ("model name in the path", "POST", api(server, f"models/{segment}/versions"), octets),
        ("REF in the path", "GET", api(server, f"versions/{segment}"), {}),
        (
            "REF with a version in the path",
            "PATCH",
            api(server, f"versions/{segment}:1"),
            {"json": {"notes": ""}},
        ),
        ("model to delete in the path", "DELETE", api(server, f"models/{segment}"), {}),
        (
            "alias in the path",
            "PUT",
            api(server, f"models/target/aliases/{segment}"),
            {"json": {"version": 1}},
        ),
        ("alias in the query", "POST", new_version, {**octets, "params": {"alias": name}}),
        ("alias in JSON", "POST", new_version, {"json": {"upload_id": "x", "aliases": [name]}}),
        ("tag key in the query", "POST", new_version, {**octets, "params": {"tag": f"{name}=v"}}),
        ("tag key in JSON", "PATCH", api(server, "versions/target:1"), {"json": {"tags": {name: "v"}}}),
        ("name filter", "GET", api(server, "models"), {"params": {"name": name}}),
    ]


def files_outside_the_store(server: JupyterServer) -> set[str]:
    ignored = ("models/", "server.log")
    return {
        str(p.relative_to(server.root))
        for p in server.root.rglob("*")
        if not str(p.relative_to(server.root)).startswith(ignored)
    }


def test_hostile_names_are_refused_everywhere_naming_the_problem(
    server: JupyterServer, model_bytes: bytes
) -> None:
    client = with_token(server)
    created = client.post(
        api(server, "models/target/versions"),
        data=model_bytes,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert created.status_code == 201, created.text
    outside = files_outside_the_store(server)
    before = snapshot(server)
    wrong = []
    for label, name in HOSTILE_NAMES.items():
        for where, method, url, request in name_places(server, model_bytes, name):
            response = client.request(method, url, **request)
            is_json = response.headers.get("Content-Type", "").startswith("application/json")
            body = response.json() if is_json else {}
            named = response.status_code == 400 and body.get("error") == "bad_parameter" and body.get("param")
            # A path segment that is empty or holds a '/' matches no route of this API: Jupyter's refusal
            # of an unknown path is as good. Everything else must be a 400 that names the parameter.
            elsewhere = where.endswith("in the path") and (name == "" or "/" in name)
            if not (named or (elsewhere and 400 <= response.status_code < 500)):
                wrong.append(f"{label} as {where}: {response.status_code} {response.text[:200]}")
    assert not wrong, "\n".join(wrong)
    assert snapshot(server) == before
    assert files_outside_the_store(server) == outside
    # The tests' common folder: an escape would land beside the server's root (no other test names a file so).
    assert not list(server.root.parent.rglob("*jc-escaped*"))


# -- hostile text ------------------------------------------------------------------------------------

HOSTILE_TEXT = {
    "script": "<script>alert(document.cookie)</script>",
    "img onerror": '<img src=x onerror="alert(1)">',
    "attribute breakout": "\"'><svg onload=alert(1)>",
    "TeX link": "$\\href{javascript:alert(1)}{click}$",
    "mixed scripts": "Latin, Кириллица, العربية, 中文, 😀, e\u0301",
    "bidi override": "notes\u202egnp.exe\u202c end",
    "zero-width": "zero\u200dwidth\u200bspace\ufeff",
    "whitespace": "  leading\tand trailing\r\nlines  ",
    "10,000 characters": "x" * 10_000,
}
# Notes keep any text but NUL; tag values refuse control characters other than tab and line ends.
CONTROL_TEXT = {"ANSI escape": "\x1b[31mred\x1b[0m", "bell and backspace": "ring\x07\x08"}


def test_hostile_notes_and_tags_come_back_exactly_as_sent(server: JupyterServer, model_bytes: bytes) -> None:
    client = with_token(server)
    for label, text in {**HOSTILE_TEXT, **CONTROL_TEXT}.items():
        # Notes through JSON, and through the query of a raw upload (tornado would have altered those).
        record = client.post(
            api(server, "models/text/versions"),
            data=model_bytes,
            params={"notes": text},
            headers={"Content-Type": "application/octet-stream"},
        ).json()
        assert record["notes"] == text, label
        ref = f"text:{record['version']}"
        patched = client.patch(api(server, f"versions/{ref}"), json={"notes": text[::-1]})
        assert patched.status_code == 200 and patched.json()["notes"] == text[::-1], label
        assert client.get(api(server, f"versions/{ref}")).json()["notes"] == text[::-1], label
        # Tag values: kept exactly, unless they hold control characters (refused, naming the tag).
        tagged = client.patch(api(server, f"versions/{ref}"), json={"tags": {"k": text[:1000]}})
        if label in CONTROL_TEXT:
            assert tagged.status_code == 400 and tagged.json()["param"] == "tag", label
        else:
            assert tagged.status_code == 200, (label, tagged.text)
            assert client.get(api(server, f"versions/{ref}")).json()["tags"] == {"k": text[:1000]}, label
            listed = client.get(api(server, "models"), params={"tag": f"k={text[:1000]}"}).json()
            assert [r["version"] for r in listed["items"]] == [record["version"]], label


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ('{"notes": "a\\u0000b"}', "notes"),
        ('{"notes": "lone \\ud800 surrogate"}', "body"),
        ('{"tags": {"k": "\\udfff"}}', "body"),
        ('{"notes": "' + "x" * 100_001 + '"}', "notes"),
        ('{"tags": {"k": "' + "x" * 1001 + '"}}', "tag"),
    ],
    ids=["NUL", "lone surrogate in notes", "lone surrogate in a tag", "notes too long", "tag too long"],
)
def test_text_no_store_can_keep_is_refused_naming_it(
    server: JupyterServer, model_bytes: bytes, body: str, param: str
) -> None:
    client = with_token(server)
    created = client.post(
        api(server, "models/refused/versions"),
        data=model_bytes,
        params={"notes": "kept"},
        headers={"Content-Type": "application/octet-stream"},
    ).json()
    ref = f"refused:{created['version']}"
    response = client.patch(
        api(server, f"versions/{ref}"), data=body.encode(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert response.json()["param"] == param
    assert client.get(api(server, f"versions/{ref}")).json()["notes"] == "kept"


def test_query_text_that_is_not_utf8_is_refused(server: JupyterServer, model_bytes: bytes) -> None:
    response = with_token(server).post(
        api(server, "models/bytes/versions") + "?notes=%FF%FE",
        data=model_bytes,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 400 and response.json()["param"] == "notes", response.text


def test_a_refused_upload_names_no_server_path(server: JupyterServer) -> None:
    response = with_token(server).post(
        api(server, "models/notamodel/versions"),
        data=b"PK\x03\x04 not really a zip",
        headers={"Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 400 and response.json()["error"] == "not_a_model"
    message = response.json()["message"]
    assert "the uploaded file" in message and str(server.root) not in message and "/tmp" not in message
