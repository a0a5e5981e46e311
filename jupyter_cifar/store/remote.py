"""The store of a running Jupyter server, over its jupyter_cifar REST API.

Kernels started by a server with the extension use it (the server sets ``JUPYTER_CIFAR_SERVER_URL`` and
``JUPYTER_CIFAR_SERVER_TOKEN`` in their environment), and so can any script given the server's address:
``open_store("http://127.0.0.1:8888/?token=…")`` (or the token in ``$JUPYTER_TOKEN``). Model files
stream in both directions and are verified against their sha256 here, on arrival. Standard library
only: a kernel needs no HTTP client package for this.

The token goes to the configured origin (scheme, host and port) and nowhere else: urllib's own redirect
handling copies every header, ``Authorization`` included, to whatever host a ``Location`` names (from
https to http too), so a redirect is followed only within the origin and is otherwise an error naming
where it pointed.
"""

from __future__ import annotations

import builtins
import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any
from urllib.parse import SplitResult, parse_qs, quote, urlencode, urljoin, urlsplit, urlunsplit

from ..errors import (
    BadParameter,
    Conflict,
    ImageError,
    IntegrityError,
    ModelFileError,
    NotFound,
    StoreUnavailable,
)
from .base import ModelStore
from .records import CHUNK, GARBAGE_AGE_SECONDS, CheckReport, ModelRecord, Page, Query, Ref

ENV_SERVER_URL = "JUPYTER_CIFAR_SERVER_URL"
ENV_SERVER_TOKEN = "JUPYTER_CIFAR_SERVER_TOKEN"
API = "jupyter-cifar/api"


class RemoteModelStore(ModelStore):
    """A store served by a Jupyter server's jupyter_cifar extension."""

    def __init__(self, url: str, *, token: str | None = None, timeout: float = 30.0) -> None:
        super().__init__()
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BadParameter("--store", f"{url!r} is not an http(s):// address of a Jupyter server")
        query = parse_qs(parts.query)
        self.token = token or next(iter(query.get("token", [])), "") or os.environ.get("JUPYTER_TOKEN", "")
        base = parts.path if parts.path.endswith("/") else parts.path + "/"
        self.base = urlunsplit((parts.scheme, parts.netloc, base, "", ""))
        self.display = f"the Jupyter server at {self.base}"
        self.timeout = timeout
        self._opener = urllib.request.build_opener(_SameOriginRedirects(self.display, parts))

    # -- HTTP ------------------------------------------------------------------------------------
    def _url(self, path: str, params: list[tuple[str, str]] | None = None) -> str:
        return f"{self.base}{API}/{path}" + (f"?{urlencode(params)}" if params else "")

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: list[tuple[str, str]] | None = None,
        json_body: Any = None,
        data: IO[bytes] | None = None,
        size: int | None = None,
        stream: bool = False,
    ) -> Any:
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"token {self.token}"
        body: Any = None
        if json_body is not None:
            body = json.dumps(json_body).encode()
            headers["Content-Type"] = "application/json"
        elif data is not None:
            # An iterable of large chunks: http.client would send a file object 8 KiB at a time.
            body = iter(lambda: data.read(CHUNK), b"")
            headers["Content-Type"] = "application/octet-stream"
            headers["Content-Length"] = str(size)
        request = urllib.request.Request(self._url(path, params), data=body, method=method, headers=headers)
        try:
            response = self._opener.open(request, timeout=self.timeout)
        except urllib.error.HTTPError as e:
            raise self._error(e) from None
        except (TimeoutError, urllib.error.URLError, ConnectionError) as e:
            reason = getattr(e, "reason", e)
            raise StoreUnavailable(f"{self.display} is unreachable: {reason}") from None
        if stream:
            return response
        with response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def _error(self, e: urllib.error.HTTPError) -> Exception:
        try:
            body = json.loads(e.read() or b"{}")
        except ValueError:
            body = {}
        message = body.get("message") or e.reason
        if e.code == 400:
            if body.get("error") == "not_a_model":
                return ModelFileError(message)
            if body.get("error") == "not_an_image":
                name, _, problem = message.partition(": ")
                return ImageError(name, problem)
            return BadParameter(body.get("param") or "request", message.split(": ", 1)[-1])
        if e.code == 404:
            return NotFound(message)
        if e.code == 409:
            return IntegrityError(message) if body.get("error") == "integrity" else Conflict(message)
        if e.code == 413:
            return BadParameter("file", message)
        if e.code in (401, 403):
            return StoreUnavailable(f"{self.display} refused the request: not authorized (check the token)")
        return StoreUnavailable(f"{self.display} answered {e.code}: {message}")

    def status(self) -> dict[str, Any]:
        """The server's ``status``: its version, its store, whether it runs training jobs."""
        answer: dict[str, Any] = self._request("GET", "status")
        return answer

    # -- the contract ----------------------------------------------------------------------------
    def resolve(self, ref: str | Ref) -> ModelRecord:
        ref = Ref.parse(ref)
        return ModelRecord.from_json(self._request("GET", f"versions/{quote(str(ref), safe=':@')}"))

    get = resolve

    def _get(self, name: str, version: int | None) -> ModelRecord | None:
        try:
            return self.resolve(Ref(name, version=version))
        except NotFound:
            return None

    def _version_of_alias(self, name: str, alias: str) -> int | None:
        try:
            return self.resolve(Ref(name, alias=alias)).version
        except NotFound:
            return None

    def _list(self, query: Query) -> Page:
        params = [("sort", query.sort), ("limit", str(query.limit)), ("offset", str(query.offset))]
        if query.name is not None:
            params.append(("name", query.name))
        if query.search:
            params.append(("search", query.search))
        params += [("tag", f"{k}={v}") for k, v in query.tags.items()]
        page = self._request("GET", "models", params=params)
        return Page(
            [ModelRecord.from_json(r) for r in page["items"]], page["total"], page["offset"], page["limit"]
        )

    def save_file(
        self,
        path: str | os.PathLike[str],
        name: str,
        *,
        metadata: Any = None,
        tags: Any = None,
        notes: str = "",
        aliases: Any = (),
    ) -> ModelRecord:
        """Stream the file to the server, which checks and stores it."""
        self._check_save_arguments(name, tags, notes, aliases, metadata)
        path = Path(path)
        from ..engine.modelfiles import inspect_model_file

        inspect_model_file(path)  # refuse here what the server would refuse, before sending it
        size = path.stat().st_size
        with open(path, "rb") as f:
            upload = self._request("POST", "uploads", data=f, size=size)
        spec = {
            "upload_id": upload["upload_id"],
            "metadata": dict(metadata or {}),
            "tags": dict(tags or {}),
            "notes": notes,
            "aliases": list(aliases),
        }
        return ModelRecord.from_json(self._request("POST", f"models/{quote(name)}/versions", json_body=spec))

    def _insert_version(
        self, name: str, path: Path, sha256: str, size: int, fields: dict[str, Any]
    ) -> ModelRecord:
        raise NotImplementedError("RemoteModelStore saves through save_file")  # pragma: no cover

    def _open_file(self, record: ModelRecord) -> IO[bytes]:
        response: IO[bytes] = self._request(
            "GET", f"versions/{quote(record.ref, safe=':')}/file", stream=True
        )
        return response

    def _set_alias(self, name: str, alias: str, version: int) -> None:
        self._request("PUT", f"models/{quote(name)}/aliases/{quote(alias)}", json_body={"version": version})

    def _remove_alias(self, name: str, alias: str) -> bool:
        try:
            self._request("DELETE", f"models/{quote(name)}/aliases/{quote(alias)}")
        except NotFound:
            return False
        return True

    def _update(self, name: str, version: int, tags: dict[str, str | None] | None, notes: str | None) -> None:
        body: dict[str, Any] = {}
        if tags is not None:
            body["tags"] = tags
        if notes is not None:
            body["notes"] = notes
        self._request("PATCH", f"versions/{quote(name)}:{version}", json_body=body)

    def _delete_version(self, name: str, version: int) -> bool:
        try:
            self._request("DELETE", f"versions/{quote(name)}:{version}")
        except NotFound:
            return False
        return True

    def delete_model(self, name: str) -> builtins.list[ModelRecord]:
        result = self._request("DELETE", f"models/{quote(name)}")
        deleted = [ModelRecord.from_json(r) for r in result["deleted"]]
        for record in deleted:
            self._forget(record.sha256)
        return deleted

    def collect_garbage(self, max_age: float = GARBAGE_AGE_SECONDS) -> int:
        """The server collects its store's garbage; nothing is left half-written here."""
        return 0

    def check(self, repair: bool = False, grace: float = GARBAGE_AGE_SECONDS) -> CheckReport:
        """Not over HTTP: reading every stored file back through the API would prove little about the
        store behind it, and repairs belong to whoever holds that store."""
        raise BadParameter(
            "--store",
            f"{self.display}: a store is checked where its bytes are, not over HTTP; check the "
            "server's own store (its folder or mongodb:// URI)",
        )


def _origin(parts: SplitResult) -> tuple[str, str, int | None]:
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only within the configured origin: the token never leaves it."""

    def __init__(self, display: str, configured: SplitResult) -> None:
        self.display = display
        self.origin = _origin(configured)

    def redirect_request(
        self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str, headers: Any, newurl: str
    ) -> urllib.request.Request | None:
        target = urlsplit(urljoin(req.full_url, newurl))
        if _origin(target) != self.origin:
            fp.close()
            shown = urlunsplit((target.scheme, target.netloc.rpartition("@")[2], target.path, "", ""))
            scheme, host, port = self.origin
            raise StoreUnavailable(
                f"{self.display} answered {code} redirecting to {shown}: not followed, because the "
                f"token is only ever sent to {scheme}://{host}:{port} (give that address as the store "
                "if it is the server)"
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)
