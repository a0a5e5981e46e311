"""The Models tab's download: the selected version as ``.keras``, ONNX, LiteRT or a SavedModel.

A ``.keras`` file is the stored file: a plain link to the server's download route where the page is
served by the Jupyter server that keeps the models, else (Voilà) fetched through the kernel and offered
as a ``data:`` link. The other formats are made in the kernel by
:func:`jupyter_cifar.engine.export.export_model`, which runs each export in its own runtime and offers it only
if it answers as the version does (the check is said beside the link); a SavedModel, a folder, comes as a
``.zip`` of it.
"""

from __future__ import annotations

import base64
import html
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import ipywidgets as w

from .common import NO_MATH, ErrorArea, button, guarded, in_background, label, text_html

if TYPE_CHECKING:
    from ..store.records import ModelRecord
    from .session import Session

#: The menu: (label, format).
FORMATS = [
    ("Keras (.keras)", "keras"),
    ("ONNX (.onnx)", "onnx"),
    ("LiteRT (.tflite)", "litert"),
    ("SavedModel (.zip)", "savedmodel"),
]
SUFFIX = {"keras": ".keras", "onnx": ".onnx", "litert": ".tflite", "savedmodel": ".zip"}


def download_href(ref: str) -> str | None:
    """A link the browser can follow to this server's download route (None outside a server)."""
    from ..store.remote import ENV_SERVER_URL

    server = os.environ.get(ENV_SERVER_URL)
    if not server:
        return None
    return f"{urlsplit(server).path}jupyter-cifar/api/versions/{quote(ref, safe=':@')}/file"


def filename(record: ModelRecord, fmt: str = "keras") -> str:
    return f"{record.name}-v{record.version}{SUFFIX[fmt]}"


def link(href: str, text: str, name: str = "") -> str:
    """A download link drawn as a button (it is one to press)."""
    style = (
        "display:inline-block;padding:4px 12px;border:1px solid #888;border-radius:3px;"
        "text-decoration:none;color:inherit;background:#f3f3f3"
    )
    download = f'download="{html.escape(name)}"' if name else "download"
    return (
        f'<a href="{html.escape(href)}" {download} class="{" ".join(NO_MATH)}" style="{style}">'
        f"⬇ {html.escape(text)}</a>"
    )


class DownloadBox(w.VBox):
    """[format ▾] [the link, or the button that prepares it] and what the export's check found."""

    def __init__(self, session: Session, errors: ErrorArea) -> None:
        super().__init__()
        self.session, self.errors = session, errors
        self.record: ModelRecord | None = None
        self.format = w.Dropdown(options=FORMATS, value="keras", layout=w.Layout(width="180px"))
        self.format.add_class("jc-models-format")
        self.format.observe(lambda _: self.show(self.record), names="value")
        self.download = w.HTML()
        self.download.add_class("jc-models-download")
        self.prepare = button(
            "Download", "jc-models-prepare-download", icon="download", tooltip="make the file in the kernel"
        )
        self.prepare.layout.display = "none"
        self.prepare.on_click(guarded(errors)(lambda _: self.fetch()))
        self.check = label("", "jc-models-export-check")
        self.children = [
            w.HBox([self.format, self.download, self.prepare], layout=w.Layout(align_items="center")),
            self.check,
        ]

    def show(self, record: ModelRecord | None) -> None:
        """What downloading ``record`` in the chosen format takes: a link, or a button to make one."""
        self.record = record
        self.check.value = ""
        if record is None:
            return
        fmt = self.format.value
        href = download_href(record.ref) if fmt == "keras" else None
        if href:
            self.download.value = link(href, f"Download {record.ref}.keras")
            self.prepare.layout.display = "none"
            return
        if fmt == "keras":  # Voilà, a plain kernel: no route of this extension to link to
            self.download.value = text_html(
                "This page is not served by the Jupyter server that keeps the models, so there is no "
                "link to the file: fetch it through the kernel instead."
            )
        else:
            self.download.value = text_html(
                f"made in this kernel, then checked: it must answer as {record.ref} does"
            )
        self.prepare.description = f"Download {filename(record, fmt)}"
        self.prepare.layout.display = None

    def fetch(self) -> threading.Thread:
        """Make the file in the kernel (the stored ``.keras``, or an export checked by its runtime) and
        offer it as a ``data:`` link to save."""
        record, fmt, session = self.record, self.format.value, self.session
        if record is None:
            raise RuntimeError("select a version first")
        self.check.value = f"making {filename(record, fmt)}…"

        def work() -> tuple[bytes, str]:
            if fmt == "keras":
                with session.store().open(record.ref) as reader:
                    return reader.read(), ""
            return _exported(session, record, fmt)

        def done(made: tuple[bytes, str]) -> None:
            data, said = made
            if self.record is record and self.format.value == fmt:
                url = "data:application/octet-stream;base64," + base64.b64encode(data).decode()
                self.download.value = link(url, f"Save {filename(record, fmt)}", name=filename(record, fmt))
                self.prepare.layout.display = "none"
                self.check.value = said or f"{record.ref} is ready: click the link to save it"

        def failed() -> Any:
            try:
                return work()
            except BaseException:
                self.check.value = ""
                raise

        return in_background(failed, done=done, errors=self.errors, busy=[self.prepare, self.format])


def _exported(session: Session, record: ModelRecord, fmt: str) -> tuple[bytes, str]:
    """The version exported in ``fmt`` and checked (on CIFAR-10 test images when the kernel has them)."""
    from ..engine.export import export_model

    loaded = session.loaded_data()
    images = loaded.x_test if loaded is not None else None
    with tempfile.TemporaryDirectory(prefix="jupyter-cifar-export-") as tmp:
        path = Path(tmp) / (f"{record.name}-v{record.version}" + ("" if fmt == "savedmodel" else SUFFIX[fmt]))
        check = export_model(session.store().load(record.ref), path, fmt, images=images)
        if fmt == "savedmodel":
            path = Path(shutil.make_archive(str(path), "zip", root_dir=path))
        data = path.read_bytes()
    said = (
        f"checked on {check.images} images by its own runtime: the same top-1 class on all, probabilities "
        f"within {check.max_difference:.1g}" + (f"; exported as {check.note}" if check.note else "")
    )
    return data, said
