"""Where models live: one contract (:class:`ModelStore`), a backend per kind of URI.

    open_store()                                  see default_store_uri()
    open_store("/some/folder")                    the embedded store in that folder (or file:///...)
    open_store("mongodb://user:pw@host/db")       MongoDB: records in a collection, files in GridFS
    open_store("mongodb+srv://cluster.example/db")
    open_store("http://127.0.0.1:8888/?token=…")  the store of a Jupyter server with the extension

The scheme picks the backend here and nowhere else (``SCHEMES``); backends import their drivers lazily,
so choosing a store loads nothing it does not use.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from urllib.parse import unquote, urlencode, urlsplit

from ..errors import BadParameter
from .base import ModelStore
from .records import ModelRecord, Page, Query, Ref
from .uri import redacted

ENV_STORE = "JUPYTER_CIFAR_STORE"

#: URI scheme -> "module:Class" of the backend that serves it.
SCHEMES = {
    "file": "jupyter_cifar.store.local:LocalModelStore",
    "mongodb": "jupyter_cifar.store.mongo:MongoModelStore",
    "mongodb+srv": "jupyter_cifar.store.mongo:MongoModelStore",
    "http": "jupyter_cifar.store.remote:RemoteModelStore",
    "https": "jupyter_cifar.store.remote:RemoteModelStore",
}

__all__ = [
    "ENV_STORE",
    "SCHEMES",
    "ModelRecord",
    "ModelStore",
    "Page",
    "Query",
    "Ref",
    "default_store_uri",
    "open_store",
]


def default_store_uri() -> str:
    """The store to use when none is named, first found of:

    1. the Jupyter server that started this kernel (``$JUPYTER_CIFAR_SERVER_URL``, set by the extension):
       every kernel of a server shares its store, and its credentials stay in the server;
    2. ``$JUPYTER_CIFAR_STORE``;
    3. the embedded store under Jupyter's data dir.
    """
    from .remote import ENV_SERVER_TOKEN, ENV_SERVER_URL

    server = os.environ.get(ENV_SERVER_URL)
    if server:
        token = os.environ.get(ENV_SERVER_TOKEN, "")
        return f"{server}?{urlencode({'token': token})}" if token else server
    configured = os.environ.get(ENV_STORE)
    if configured:
        return configured
    from jupyter_core.paths import jupyter_data_dir

    return str(Path(jupyter_data_dir()) / "jupyter_cifar" / "models")


def store_class(uri: str) -> tuple[type[ModelStore], str]:
    """The backend class for a URI, and the argument to build it with."""
    scheme = urlsplit(uri).scheme.lower() if "://" in uri else "file"
    target = SCHEMES.get(scheme)
    if target is None:
        known = ", ".join(f"{s}://" for s in SCHEMES)
        raise BadParameter(
            "--store", f"{redacted(uri)}: unknown kind of store (use a folder path or {known})"
        )
    module, cls = target.split(":")
    klass = getattr(importlib.import_module(module), cls)
    if scheme == "file" and "://" in uri:
        uri = unquote(urlsplit(uri).path)
    return klass, uri


def open_store(uri: str | os.PathLike[str] | None = None) -> ModelStore:
    """The store a URI names (see the module's doc); ``None`` means :func:`default_store_uri`."""
    text = default_store_uri() if uri is None else os.fspath(uri)
    if not text:
        raise BadParameter("--store", "is empty")
    klass, argument = store_class(text)
    return klass(argument)  # type: ignore[call-arg]
