"""REST handlers over the model store, under ``<base_url>jupyter-cifar/api/``.

Every verb is ``@web.authenticated`` and ``@authorized``. A request may also carry the kernel token (the
``Authorization: token …`` header) that the extension hands to the kernels it starts: that token opens this
API and nothing else of the server. A browser session (cookie) must send the XSRF token with every write,
as for all of Jupyter; a cross-site request is refused with 403 (Jupyter's own APIs answer 404). Errors are
translated in one place (:data:`ERRORS`, used by ``write_error``) into a status and a JSON body
``{"error", "message"}``; blocking store calls run in threads, off the event loop; model files stream in
both directions.

Text from a request reaches the store exactly as sent: query arguments are decoded here rather than by
tornado's ``get_argument``, which would turn control characters into spaces and strip whitespace (the
store then refuses what it cannot keep, naming it), and text that is not Unicode (a lone surrogate, which
JSON can spell) is refused before any store sees it.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import re
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from jupyter_server.auth.decorator import authorized
from jupyter_server.auth.identity import User
from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web
from tornado.iostream import StreamClosedError

from ..errors import (
    BadParameter,
    Conflict,
    ImageError,
    IntegrityError,
    ModelFileError,
    NotFound,
    StoreUnavailable,
)
from ..store.base import ModelStore
from ..store.records import (
    CHUNK,
    MAX_METADATA_DEPTH,
    Ref,
    check_alias,
    check_json_shape,
    check_name,
    check_notes,
    check_tags,
)

API = "/jupyter-cifar/api"
AUTH_RESOURCE = "jupyter_cifar"
OPENAPI = Path(__file__).with_name("openapi.json")
UPLOAD_TTL = 3600.0
MAX_JSON_BODY = 8 << 20
DRAIN_BYTES = 64 << 20  # read and dropped past a body's limit so that the client reads the 413
MAX_JSON_DEPTH = MAX_METADATA_DEPTH + 1  # a body holds the metadata one level down
_UPLOAD_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")

T = TypeVar("T")


class PayloadTooLarge(Exception):
    pass


#: exception type -> (HTTP status, error code). The first match wins: subclasses before bases.
ERRORS: list[tuple[type[BaseException], int, str]] = [
    (PayloadTooLarge, 413, "too_large"),
    (BadParameter, 400, "bad_parameter"),
    (ModelFileError, 400, "not_a_model"),
    (ImageError, 400, "not_an_image"),
    (NotFound, 404, "not_found"),
    (Conflict, 409, "conflict"),
    (IntegrityError, 409, "integrity"),
    (StoreUnavailable, 503, "store_unavailable"),
]


def classify_error(error: BaseException) -> tuple[int, str] | None:
    for kind, status, code in ERRORS:
        if isinstance(error, kind):
            return status, code
    return None


class CifarHandler(ExtensionHandlerMixin, APIHandler):
    """Shared by every route: the store, the kernel token, and the one error translation."""

    auth_resource = AUTH_RESOURCE

    @property
    def store(self) -> ModelStore:
        store: ModelStore = self.settings["jupyter_cifar_store"]
        return store

    def _kernel_token_matches(self) -> bool:
        expected: str = self.settings.get("jupyter_cifar_kernel_token") or ""
        scheme, _, token = self.request.headers.get("Authorization", "").partition(" ")
        return bool(expected) and scheme.lower() == "token" and hmac.compare_digest(token.strip(), expected)

    async def prepare(self) -> None:  # type: ignore[override]
        if self._kernel_token_matches():
            # A kernel of this server: this API only. Like Jupyter's own token requests, it needs no
            # XSRF or origin check (a page elsewhere cannot know the token); the Host check stays.
            if not self.check_host():
                raise web.HTTPError(403)
            self.current_user = self._jupyter_current_user = User(username="jupyter-cifar-kernel")
            return
        try:
            await super().prepare()
        except web.HTTPError as e:
            # jupyter_server answers a foreign Origin with 404; say what it is.
            if e.status_code == 404 and not self.check_origin():
                origin = self.request.headers.get("Origin", "")
                raise web.HTTPError(403, f"cross-origin request from {origin} refused") from None
            raise

    def check_xsrf_cookie(self) -> None:
        if self._kernel_token_matches():
            return None
        return super().check_xsrf_cookie()

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A blocking store call, in a thread."""
        return await asyncio.to_thread(fn, *args, **kwargs)

    def send_json(self, value: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(value))

    def read_json(self, body: bytes | None = None) -> dict[str, Any]:
        raw = self.request.body if body is None else body
        if len(raw) > MAX_JSON_BODY:
            raise PayloadTooLarge(f"the JSON body is {len(raw)} bytes; the limit is {MAX_JSON_BODY} bytes")
        try:
            value = json.loads(raw or b"{}")
        except RecursionError:
            raise BadParameter("body", f"nests deeper than {MAX_JSON_DEPTH} levels") from None
        except ValueError as e:
            raise BadParameter("body", f"is not JSON ({e})") from None
        if not isinstance(value, dict):
            raise BadParameter("body", "must be a JSON object")
        check_json_shape(value, "body", MAX_JSON_DEPTH)
        try:  # JSON may spell a lone surrogate ("\ud800"): not text any store can keep
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as e:
            bad = e.object[e.start : e.end]
            raise BadParameter("body", f"holds {bad!r}, a lone surrogate: not Unicode text") from None
        return value

    def query(self, name: str) -> list[str]:
        """Every value of a query argument, exactly as sent (strict UTF-8)."""
        values = []
        for raw in self.request.query_arguments.get(name, []):
            try:
                values.append(raw.decode("utf-8"))
            except UnicodeDecodeError:
                raise BadParameter(name, f"{raw[:40]!r}… is not UTF-8 text") from None
        return values

    def query_one(self, name: str, default: str | None = None) -> str | None:
        """The last value of a query argument as sent, or ``default``."""
        values = self.query(name)
        return values[-1] if values else default

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        known = classify_error(exc) if exc is not None else None
        if known is not None:
            status_code, code = known
            message = str(exc)
        elif isinstance(exc, web.HTTPError):
            code = {403: "forbidden", 404: "not_found", 405: "method_not_allowed"}.get(
                exc.status_code, "error"
            )
            message = exc.log_message or self._reason
        else:
            code, message = "internal", "internal error (see the server log)"
        self.set_status(status_code)
        self.set_header("Content-Type", "application/json")
        body: dict[str, Any] = {"error": code, "message": message}
        if isinstance(exc, BadParameter):
            body["param"] = exc.param
        self.finish(json.dumps(body))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if value is not None and classify_error(value) is not None:
            self.log.info("jupyter_cifar: %s %s: %s", self.request.method, self.request.path, value)
            return
        super().log_exception(typ, value, tb)


def _int_arg(handler: CifarHandler, name: str, default: int) -> int:
    raw = handler.query_one(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise BadParameter(name, f"must be a whole number (got {raw[:40]!r})") from None


def _tags_arg(values: list[str], param: str = "tag") -> dict[str, str]:
    tags = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep:
            raise BadParameter(param, f"{item!r}: write tags as KEY=VALUE")
        tags[key] = value
    return tags


class StatusHandler(CifarHandler):
    @web.authenticated
    @authorized(action="read")
    async def get(self) -> None:
        from .. import __version__

        executor = self.settings.get("jupyter_cifar_executor")
        self.send_json(
            {
                "version": __version__,
                "store": self.store.display,
                "backend": type(self.store).__name__,
                # Whether this server runs training jobs, and where (null: its store keeps none).
                "jobs": executor.describe() if executor is not None else None,
            }
        )


class OpenAPIHandler(CifarHandler):
    @web.authenticated
    @authorized(action="read")
    async def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(OPENAPI.read_bytes())


class ModelsHandler(CifarHandler):
    @web.authenticated
    @authorized(action="read")
    async def get(self) -> None:
        page = await self.run(
            self.store.list,
            name=self.query_one("name"),
            search=self.query_one("search"),
            tags=_tags_arg(self.query("tag")),
            sort=self.query_one("sort", "-created"),
            limit=_int_arg(self, "limit", 50),
            offset=_int_arg(self, "offset", 0),
        )
        self.send_json(page.to_json())


class ModelHandler(CifarHandler):
    @web.authenticated
    @authorized(action="write")
    async def delete(self, name: str) -> None:
        deleted = await self.run(self.store.delete_model, name)
        self.send_json({"deleted": [r.to_json() for r in deleted]})


class AliasHandler(CifarHandler):
    @web.authenticated
    @authorized(action="write")
    async def put(self, name: str, alias: str) -> None:
        body = self.read_json()
        version = body.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise BadParameter("version", f"must be a version number from 1 (got {version!r})")
        record = await self.run(self.store.set_alias, Ref(name, version=version), alias)
        self.send_json(record.to_json())

    @web.authenticated
    @authorized(action="write")
    async def delete(self, name: str, alias: str) -> None:
        await self.run(self.store.remove_alias, name, alias)
        self.set_status(204)
        self.finish()


class VersionHandler(CifarHandler):
    @web.authenticated
    @authorized(action="read")
    async def get(self, ref: str) -> None:
        record = await self.run(self.store.resolve, ref)
        self.send_json(record.to_json())

    @web.authenticated
    @authorized(action="write")
    async def patch(self, ref: str) -> None:
        body = self.read_json()
        unknown = set(body) - {"tags", "notes"}
        if unknown:
            raise BadParameter("body", f"unknown fields {sorted(unknown)} (give tags and/or notes)")
        record = await self.run(self.store.resolve, ref)
        if "tags" in body:
            if not isinstance(body["tags"], dict):
                raise BadParameter("tags", "must be an object of KEY: VALUE (null removes a tag)")
            record = await self.run(self.store.set_tags, record.ref, body["tags"])
        if "notes" in body:
            record = await self.run(self.store.set_notes, record.ref, body["notes"])
        self.send_json(record.to_json())

    @web.authenticated
    @authorized(action="write")
    async def delete(self, ref: str) -> None:
        record = await self.run(self.store.delete, ref)
        self.send_json(record.to_json())


class FileHandler(CifarHandler):
    """The version's ``.keras`` file, streamed; a plain link in the browser downloads it."""

    @web.authenticated
    @authorized(action="read")
    async def get(self, ref: str) -> None:
        record = await self.run(self.store.resolve, ref)
        reader = await self.run(self.store.reader, record)
        try:
            self.set_header("Content-Type", "application/octet-stream")
            self.set_header(
                "Content-Disposition", f'attachment; filename="{record.name}-v{record.version}.keras"'
            )
            self.set_header("Content-Length", str(record.size))
            self.set_header("ETag", f'"{record.sha256}"')
            self.set_header("X-Model-Ref", record.ref)
            # Hold the last chunk back until the whole file has been verified: a corrupt file never
            # arrives complete (the connection closes short of Content-Length instead).
            pending = await self.run(reader.read, CHUNK)
            while pending:
                chunk = await self.run(reader.read, CHUNK)
                self.write(pending)
                await self.flush()
                pending = chunk
            self.finish()
        except IntegrityError:
            if not self._headers_written:
                raise
            self.log.error("jupyter_cifar: %s is corrupt; download of %s cut short", record.ref, ref)
            self.request.connection.close()  # type: ignore[union-attr]
        except StreamClosedError:
            pass  # the client went away
        finally:
            await self.run(reader.close)


class _StreamedBody(CifarHandler):
    """Receives a request body into a staging file as it arrives, within the upload limit.

    A body over its limit (the upload limit for a file, :data:`MAX_JSON_BODY` for JSON) is answered 413
    with the JSON error. Up to :data:`DRAIN_BYTES` past the limit, the rest of the body is read and
    dropped first, so that the client, still sending, reads the answer (closing on unread bytes resets
    the connection, and the client sees no answer at all); beyond that the answer is sent at once and
    the connection closed, as nginx does. Tornado's own body limit would answer a chunked body with a
    bare 400, so the count is kept here.
    """

    staging: Path
    _file: Any = None
    _received = 0
    _over = False  # past the limit: what arrives is dropped, and the answer is 413

    async def prepare(self) -> None:  # type: ignore[override]
        await super().prepare()
        if not self.current_user:  # authenticate before accepting any body
            raise web.HTTPError(403)
        self._json = self.request.headers.get("Content-Type", "").split(";")[0].strip() == "application/json"
        self._limit = MAX_JSON_BODY if self._json else self.settings["jupyter_cifar_max_upload_bytes"]
        self.request.connection.set_max_body_size(sys.maxsize)  # type: ignore[union-attr]
        declared = self.request.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > self._limit:
            self._over = True
            if int(declared) > self._limit + DRAIN_BYTES:
                raise self._too_large(int(declared))
        self._chunks: list[bytes] = []
        if not self._json and not self._over:
            self.staging = _staging_dir(self.settings)
            fd, name = tempfile.mkstemp(dir=self.staging, suffix=".upload")
            self._path = Path(name)
            self._file = os.fdopen(fd, "wb")

    def _too_large(self, size: int | None = None) -> PayloadTooLarge:
        what = "JSON body" if self._json else "upload"
        size_text = f"{size} bytes" if size is not None else f"over {self._limit + DRAIN_BYTES} bytes"
        return PayloadTooLarge(f"the {what} is {size_text}; the limit is {self._limit} bytes")

    async def data_received(self, chunk: bytes) -> None:
        if self._finished:
            return  # answered already: the connection closes
        self._received += len(chunk)
        if self._received > self._limit and not self._over:
            self._over = True
            self._discard()
        if self._over:
            if self._received > self._limit + DRAIN_BYTES:  # answer now, and close
                self.send_error(413, exc_info=(PayloadTooLarge, self._too_large(), None))
            return
        if self._json:
            self._chunks.append(chunk)
        elif self._file is not None:
            await self.run(self._file.write, chunk)

    def _body(self) -> Path | None:
        """Once the body has arrived: the staging file (None: a JSON body); PayloadTooLarge if over."""
        if self._over:
            raise self._too_large(self._received)
        return self._finish_body()

    def _finish_body(self) -> Path | None:
        if self._file is not None:
            self._file.close()
            self._file = None
            return self._path
        return None

    def _discard(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        path = getattr(self, "_path", None)
        if path is not None:
            path.unlink(missing_ok=True)

    def on_connection_close(self) -> None:
        self._discard()

    def on_finish(self) -> None:
        if self._file is not None:  # a request that failed before using its body
            self._discard()


@web.stream_request_body
class UploadsHandler(_StreamedBody):
    """``POST`` a model file's bytes; refer to them by ``upload_id`` when creating a version."""

    @web.authenticated
    @authorized(action="write")
    async def post(self) -> None:
        if self._finished:
            return  # refused (413) while the body arrived
        path = self._body()
        if path is None:
            raise BadParameter("body", "send the model file's bytes (Content-Type: application/octet-stream)")
        upload_id = secrets.token_urlsafe(16)
        final = path.with_name(f"{upload_id}.keras")
        os.replace(path, final)
        self.send_json({"upload_id": upload_id, "size": final.stat().st_size}, 201)


@web.stream_request_body
class VersionsHandler(_StreamedBody):
    """``POST`` a new version: a JSON body naming an upload, or the model file's bytes themselves."""

    @web.authenticated
    @authorized(action="write")
    async def post(self, name: str) -> None:
        if self._finished:
            return  # refused (413) while the body arrived
        raw = self._body()  # the file itself (tags, notes, aliases in the query); None: a JSON body
        source: Path | None = None
        try:
            if raw is not None:
                spec: dict[str, Any] = {
                    "tags": _tags_arg(self.query("tag")),
                    "notes": self.query_one("notes", ""),
                    "aliases": self.query("alias"),
                }
            else:
                spec = self.read_json(b"".join(self._chunks))
            _check_version_spec(name, spec, raw=raw is not None)
            if raw is not None:
                source = raw.with_suffix(".keras")
                os.replace(raw, source)
            else:
                source = _upload(self.settings, spec["upload_id"])
            try:
                record = await self.run(
                    self.store.save_file,
                    source,
                    name,
                    metadata=spec.get("metadata") or {},
                    tags=spec.get("tags") or {},
                    notes=spec.get("notes") or "",
                    aliases=spec.get("aliases") or (),
                )
            except ModelFileError as e:  # its message names the staging file: a server path
                raise ModelFileError(str(e).replace(str(source), "the uploaded file")) from None
        finally:  # an upload is used once, stored or not (a request refused before is kept for a retry)
            for path in (raw, source):
                if path is not None:
                    path.unlink(missing_ok=True)
        self.set_header("Location", self.request.path.rsplit("/models/", 1)[0] + f"/versions/{record.ref}")
        self.send_json(record.to_json(), 201)


def _upload(settings: dict[str, Any], upload_id: str) -> Path:
    path = _staging_dir(settings) / f"{upload_id}.keras"
    if not path.exists():
        raise NotFound(f"no upload {upload_id!r} (uploads expire after {UPLOAD_TTL / 60:.0f} minutes)")
    return path


def _check_version_spec(name: str, spec: dict[str, Any], *, raw: bool) -> None:
    """Refuse a bad name, tag, note or alias before any upload is used: a corrected retry can use it."""
    if not raw:
        unknown = set(spec) - {"upload_id", "metadata", "tags", "notes", "aliases"}
        if unknown:
            raise BadParameter("body", f"unknown fields {sorted(unknown)}")
        upload_id = spec.get("upload_id")
        if not isinstance(upload_id, str) or not _UPLOAD_ID.fullmatch(upload_id):
            raise BadParameter("upload_id", "give the upload_id that POST uploads returned")
    for key, kind in (("metadata", dict), ("tags", dict), ("notes", str), ("aliases", list)):
        if spec.get(key) is not None and not isinstance(spec[key], kind):
            raise BadParameter(key, f"must be a JSON {'object' if kind is dict else kind.__name__}")
    check_name(name)
    check_tags(spec.get("tags") or {})
    check_notes(spec.get("notes") or "")
    for alias in spec.get("aliases") or ():
        check_alias(alias)


def _staging_dir(settings: dict[str, Any]) -> Path:
    """Where uploads wait to become versions; old ones are swept on each use."""
    path = settings.get("jupyter_cifar_staging")
    if path is None:
        path = Path(tempfile.mkdtemp(prefix="jupyter-cifar-uploads-"))
        settings["jupyter_cifar_staging"] = path
    cutoff = time.time() - UPLOAD_TTL
    for old in path.iterdir():
        try:
            if old.stat().st_mtime < cutoff:
                old.unlink()
        except FileNotFoundError:
            pass
    return Path(path)


_REF = r"(?P<ref>[^/]+)"
_NAME = r"(?P<name>[^/]+)"


def handlers() -> list[tuple[str, type[CifarHandler]]]:
    from .jobs_handlers import job_handlers  # they build on this module's CifarHandler
    from .photos_handlers import photo_handlers

    return [
        (f"{API}/status", StatusHandler),
        (f"{API}/openapi.json", OpenAPIHandler),
        (f"{API}/models", ModelsHandler),
        (f"{API}/uploads", UploadsHandler),
        (f"{API}/models/{_NAME}", ModelHandler),
        (f"{API}/models/{_NAME}/versions", VersionsHandler),
        (f"{API}/models/{_NAME}/aliases/(?P<alias>[^/]+)", AliasHandler),
        (f"{API}/versions/{_REF}", VersionHandler),
        (f"{API}/versions/{_REF}/file", FileHandler),
        *job_handlers(),
        *photo_handlers(),
    ]
