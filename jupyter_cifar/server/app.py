"""The jupyter-server extension: it owns the model store and serves it at ``<base_url>jupyter-cifar/api/``.

The store (and any MongoDB credentials in its URI) stays in the server process. Kernels that this
server starts learn the API's address and a token that opens this API only from two environment
variables set at start (jupyter_server builds a kernel's environment from ``os.environ``); they reach the
store through :class:`~jupyter_cifar.store.remote.RemoteModelStore`. Nothing here imports TensorFlow.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jupyter_server.extension.application import ExtensionApp
from traitlets import Enum, Float, Int, TraitError, Type, Unicode, default, validate
from traitlets.config.loader import DeferredConfig

from ..errors import BadParameter
from ..jobs.executors import Executor
from ..jobs.store import JobStore
from ..photos.store import PhotoStore
from ..store import ENV_STORE, default_store_uri, store_class
from ..store.base import ModelStore
from ..store.remote import ENV_SERVER_TOKEN, ENV_SERVER_URL
from .handlers import handlers

ENV_DATA = "JUPYTER_CIFAR_DATA"


class CifarExtension(ExtensionApp):
    """Model store REST API for jupyter_cifar (configure as ``c.CifarExtension.<trait>``)."""

    name = "jupyter_cifar"
    load_other_extensions = True

    store_uri = Unicode(
        config=True,
        help=(
            "Where models are kept: a folder (the embedded store), or a mongodb:// or mongodb+srv:// "
            "URI. Default: $JUPYTER_CIFAR_STORE, else the embedded store under Jupyter's data dir. "
            "Credentials in the URI stay in the server: kernels and browsers reach the store through "
            "this extension's API."
        ),
    )
    store_class = Type(
        default_value=None,
        klass=ModelStore,
        allow_none=True,
        config=True,
        help="A ModelStore subclass to use instead of the one the store URI's scheme picks.",
    )
    data_dir = Unicode(
        config=True,
        help="The CIFAR-10 folder kernels use (exported to them as $JUPYTER_CIFAR_DATA). "
        "Default: $JUPYTER_CIFAR_DATA, else the official download.",
    )
    max_upload_bytes = Int(
        2 << 30,
        config=True,
        help="The largest model file that may be uploaded through the REST API, in bytes (larger: 413).",
    )
    max_jobs = Int(
        1,
        config=True,
        help="How many training jobs run at once on this machine (each in a process of its own, which "
        "outlives the server); the others wait in the queue in order. 0: jobs only queue.",
    )
    job_executor = Enum(
        ["local", "dask"],
        "local",
        config=True,
        help="Where training jobs run: 'local', a process per job on this machine (see max_jobs); "
        "'dask', an existing Dask distributed cluster (see dask_scheduler) whose workers have "
        "jupyter_cifar installed and $JUPYTER_CIFAR_STORE set to this server's MongoDB store.",
    )
    dask_scheduler = Unicode(
        "", config=True, help="The Dask scheduler's address for job_executor='dask', e.g. tcp://host:8786."
    )
    job_stale_seconds = Float(
        30.0,
        config=True,
        help="A running job whose process has not been heard from for this long is marked interrupted "
        "(its process or machine died); resume continues it from its last epoch.",
    )
    max_widget_upload_bytes = Int(
        512 << 20,
        config=True,
        help="The largest message a kernel's websocket accepts (tornado's websocket_max_message_size), "
        "raised from tornado's 10 MiB so that photos uploaded in the Classify tab arrive instead of "
        "silently vanishing. It is never lowered below what the server already allows.",
    )

    @default("store_uri")
    def _default_store_uri(self) -> str:
        return default_store_uri()

    @default("data_dir")
    def _default_data_dir(self) -> str:
        return os.environ.get(ENV_DATA, "")

    @validate("store_uri")
    def _check_store_uri(self, proposal: dict[str, Any]) -> str:
        uri = proposal["value"]
        if not uri:
            raise TraitError("CifarExtension.store_uri: is empty")
        try:
            store_class(uri)
        except Exception as e:
            raise TraitError(_store_problem(e)) from None
        return str(uri)

    @validate("data_dir")
    def _check_data_dir(self, proposal: dict[str, Any]) -> str:
        value = proposal["value"]
        if value and not Path(value).exists():
            raise TraitError(f"CifarExtension.data_dir: {value}: no such folder or file")
        return str(value)

    @validate("max_upload_bytes", "max_widget_upload_bytes")
    def _check_max_upload(self, proposal: dict[str, Any]) -> int:
        if proposal["value"] < 1:
            name = proposal["trait"].name
            raise TraitError(
                f"CifarExtension.{name}: must be a positive number of bytes (got {proposal['value']})"
            )
        return int(proposal["value"])

    @validate("job_stale_seconds")
    def _check_stale(self, proposal: dict[str, Any]) -> float:
        if not proposal["value"] >= 2:
            raise TraitError(f"CifarExtension.job_stale_seconds: must be 2 or more (got {proposal['value']})")
        return float(proposal["value"])

    @validate("max_jobs")
    def _check_max_jobs(self, proposal: dict[str, Any]) -> int:
        if proposal["value"] < 0:
            raise TraitError(f"CifarExtension.max_jobs: must be 0 or more (got {proposal['value']})")
        return int(proposal["value"])

    def _check_configuration(self) -> None:
        """Stop the server on a bad setting, naming it.

        traitlets only warns about a configured value its validator refuses, and goes on with the
        default: for a store that would quietly put models somewhere else. Re-applying each configured
        value raises the validator's error instead.
        """
        section = type(self).__name__
        configured = {**self.serverapp.config.get(section, {}), **self.config.get(section, {})}  # type: ignore[union-attr]
        names = (
            "store_uri",
            "data_dir",
            "max_upload_bytes",
            "max_widget_upload_bytes",
            "max_jobs",
            "store_class",
        )
        for name in names:
            if name in configured:
                value = configured[name]
                if isinstance(value, DeferredConfig):  # a command-line value, read as the trait reads it
                    value = value.get_value(self.traits()[name])
                try:
                    setattr(self, name, value)
                except (TraitError, TypeError, ValueError) as e:
                    message = str(e) if f"{type(self).__name__}." in str(e) else f"CifarExtension.{name}: {e}"
                    self.log.critical("jupyter_cifar: bad setting: %s", message)
                    raise SystemExit(f"jupyter_cifar: bad setting: {message}") from None

    def initialize_settings(self) -> None:
        self._check_configuration()
        if not self.store_uri:
            raise SystemExit("jupyter_cifar: bad setting: CifarExtension.store_uri is empty")
        try:
            klass, argument = store_class(self.store_uri)
            chosen: Any = self.store_class or klass
            self.store: ModelStore = chosen(argument)
        except Exception as e:  # jupyter_server would log it and go on serving without this API
            message = _store_problem(e)
            self.log.critical("jupyter_cifar: bad setting: %s", message)
            raise SystemExit(f"jupyter_cifar: bad setting: {message}") from None
        self.kernel_token = secrets.token_urlsafe(32)
        self.jobs = self._open_jobs()
        self.photos = self._open_photos()
        self.executor: Executor | None = self._executor(self.jobs) if self.jobs is not None else None
        self.settings.update(
            {
                "jupyter_cifar_store": self.store,
                "jupyter_cifar_jobs": self.jobs,
                "jupyter_cifar_photos": self.photos,
                "jupyter_cifar_executor": self.executor,  # started once the server listens
                "jupyter_cifar_kernel_token": self.kernel_token,
                "jupyter_cifar_max_upload_bytes": self.max_upload_bytes,
            }
        )
        assert self.serverapp is not None  # set when the server loads the extension
        web_settings = self.serverapp.web_app.settings
        current = web_settings.get("websocket_max_message_size", 10 * 1024 * 1024)
        web_settings["websocket_max_message_size"] = max(current, self.max_widget_upload_bytes)
        self.log.info(
            "jupyter_cifar: models are kept in %s; uploads of up to %d bytes, kernel messages of up to %d",
            self.store.display,
            self.max_upload_bytes,
            web_settings["websocket_max_message_size"],
        )

    def _open_jobs(self) -> JobStore | None:
        """The jobs beside the models (None where the store keeps none: a custom store class)."""
        from ..jobs.store import open_job_store

        try:
            return open_job_store(self.store)
        except BadParameter as e:
            self.log.info("jupyter_cifar: no training jobs: %s", e)
            return None

    def _open_photos(self) -> PhotoStore | None:
        """The photo sets beside the models (None where the store keeps none: a custom store class)."""
        from ..photos.store import open_photo_store

        try:
            return open_photo_store(self.store)
        except BadParameter as e:
            self.log.info("jupyter_cifar: no photo sets: %s", e)
            return None

    def _executor(self, jobs: JobStore) -> Executor:
        if self.job_executor == "dask":
            from ..jobs.dask import DaskExecutor

            if not self.dask_scheduler:
                raise SystemExit("jupyter_cifar: bad setting: CifarExtension.dask_scheduler is empty")
            return DaskExecutor(
                jobs, self.store_uri, scheduler=self.dask_scheduler, stale=self.job_stale_seconds
            )
        from ..jobs.executors import LocalExecutor

        data = str(Path(self.data_dir).absolute()) if self.data_dir else None
        return LocalExecutor(
            jobs, self.store_uri, max_jobs=self.max_jobs, data_dir=data, stale=self.job_stale_seconds
        )

    def initialize_handlers(self) -> None:
        self.handlers.extend(handlers())

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        """Once the server listens: tell the kernels it will start where the API is."""
        url = _loopback_url(serverapp)
        if url is None:
            return
        os.environ[ENV_SERVER_URL] = url
        os.environ[ENV_SERVER_TOKEN] = self.kernel_token
        os.environ.pop(ENV_STORE, None)  # kernels use the server's store, not a URI of their own
        if self.data_dir:
            os.environ[ENV_DATA] = str(Path(self.data_dir).absolute())
        if self.executor is not None:
            self.executor.start()

    async def stop_extension(self) -> None:
        for name in (ENV_SERVER_URL, ENV_SERVER_TOKEN):
            os.environ.pop(name, None)
        executor, jobs = getattr(self, "executor", None), getattr(self, "jobs", None)
        if executor is not None:
            executor.close()  # the jobs it started go on: they are not the server's children
        if jobs is not None:
            jobs.close()
        photos = getattr(self, "photos", None)
        if photos is not None:
            photos.close()
        store = getattr(self, "store", None)
        if store is not None:
            store.close()


def _store_problem(error: Exception) -> str:
    """A store's refusal of its URI, as the setting that gave it (the store names it ``--store``)."""
    return f"CifarExtension.store_uri: {str(error).removeprefix('--store: ')}"


def _loopback_url(serverapp: Any) -> str | None:
    """The server's own address as a kernel on this machine reaches it (None: a Unix socket)."""
    if getattr(serverapp, "sock", ""):
        return None
    ip = serverapp.ip
    host = "127.0.0.1" if ip in ("", "0.0.0.0", "*", "localhost") else ip
    if host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    scheme = urlsplit(serverapp.connection_url).scheme or "http"
    return f"{scheme}://{host}:{serverapp.port}{serverapp.base_url}"
