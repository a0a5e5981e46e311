"""End-to-end harness: real `jupyter lab` / `jupyter notebook` / `voila` processes driven by real Chromium.

Everything here follows ../shared/notes/browser-e2e.md (facts checked on these machines):

- :class:`NotebookServer` starts one server process on loopback (free port, a token, temporary root and
  Jupyter config/data/runtime folders) and stops it with SIGTERM.
- :func:`launch_chromium` starts Debian's Chromium (never `playwright install`) with the arguments the
  notes list, DNS look-ups outside loopback refused.
- :class:`AppPage` wraps a Playwright page: it records page errors, console errors and every message
  that arrives on the page's kernel websockets (decoded from all three wire formats), and has the
  helpers the tests use: open a notebook, wait for the kernel, run all cells, restart the kernel, click
  and read widgets by CSS class, upload files, watch a live value on every animation frame, screenshots.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import secrets
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mongod import PortTaken, check_port_taken, free_port, on_a_free_port, terminate
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

CHROMIUM = os.environ.get("JUPYTER_CIFAR_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Nothing but loopback resolves: the tests must not depend on (or leak to) the outside.
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1 , EXCLUDE localhost",
]

# Page errors that have nothing to do with the app (see browser-e2e.md).
KNOWN_PAGE_ERRORS = (
    # Notebook 7, with or without widgets.
    re.compile(r"Cannot read properties of undefined \(reading 'schema'\)"),
)
# Console errors from the environment, not the app: offline CDN fonts (Voilà), favicons, the
# kernel websocket closing while a kernel restarts or the server stops.
KNOWN_CONSOLE_ERRORS = (
    re.compile(r"Failed to load resource: net::ERR_NAME_NOT_RESOLVED"),
    re.compile(r"Failed to load resource: the server responded with a status of 404"),
    re.compile(r"favicon", re.I),
    re.compile(r"WebSocket connection to .* failed", re.I),
    re.compile(r"fonts\.googleapis|ERR_NAME_NOT_RESOLVED", re.I),
    # Voilà loads Notebook 7's lab extension, which finds no @jupyterlab/docregistry to share there.
    re.compile(r"RUNTIME-012[\s\S]*@jupyterlab/docregistry"),
)

ServerKind = Literal["lab", "notebook", "voila"]


# --------------------------------------------------------------------------------------------- notebooks


def write_notebook(folder: Path, name: str, cells: Sequence[str]) -> Path:
    """A notebook ``folder/name.ipynb`` with one code cell per string, for the Python 3 kernel."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    path = folder / f"{name}.ipynb"
    nbformat.write(nb, path)
    return path


# ------------------------------------------------------------------------------------------------ server


@dataclass
class NotebookServer:
    """One `jupyter lab`, `jupyter notebook` or `voila` process on loopback.

    ``store_uri`` goes to the server extension (``--CifarExtension.store_uri``), which every kernel of a
    Jupyter server then uses; Voilà loads no server extension, so its kernels get ``JUPYTER_CIFAR_STORE``.
    ``data_dir`` is exported as ``JUPYTER_CIFAR_DATA``; ``JUPYTER_CIFAR_CACHE`` is inherited.
    """

    kind: ServerKind
    root: Path
    store_uri: str
    data_dir: Path | None = None
    notebook: str | None = None  # Voilà: the notebook it serves (a path relative to the work folder)
    extra: tuple[str, ...] = ()
    port: int = field(default_factory=free_port)
    token: str = field(default_factory=lambda: secrets.token_hex(16))
    proc: subprocess.Popen[bytes] | None = None
    started_s: float = 0.0  # how long start() took

    @property
    def work(self) -> Path:
        """The server's root folder: notebooks go here."""
        return self.root / "work"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def url(self, path: str = "") -> str:
        """``path`` on this server, with the token in the query (a browser's first visit)."""
        sep = "&" if "?" in path else "?"
        return f"{self.base}{path.lstrip('/')}{sep}token={self.token}"

    def notebook_url(self, name: str) -> str:
        """Where the browser opens notebook ``name`` (without .ipynb) in this kind of server."""
        if self.kind == "lab":
            # ?reset: not the workspace that an earlier page of this server left (other notebooks open).
            return self.url(f"lab/tree/{name}.ipynb?reset")
        if self.kind == "notebook":
            return self.url(f"notebooks/{name}.ipynb")
        return self.url("")  # Voilà serves its one notebook at the root

    def argv(self) -> list[str]:
        if self.kind == "voila":
            if not self.notebook:
                raise ValueError("a Voilà server needs the notebook it serves")
            return [
                *(sys.executable, "-m", "voila", self.notebook, "--no-browser"),
                *("--Voila.ip=127.0.0.1", f"--port={self.port}", "--Voila.port_retries=0"),
                *(f"--token={self.token}", "--progressive_rendering=True", "--show_tracebacks=True"),
                *self.extra,
            ]
        module, app = ("jupyterlab", "LabApp") if self.kind == "lab" else ("notebook", "JupyterNotebookApp")
        return [
            *(sys.executable, "-m", module, "--no-browser", "--allow-root"),
            *("--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0"),
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.work}",
            f"--{app}.expose_app_in_browser=True",
            # Offline and quiet: no update checks, no news feed.
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.news_url=None",
            f"--CifarExtension.store_uri={self.store_uri}",
            *self.extra,
        ]

    def environment(self) -> dict[str, str]:
        env = {
            **os.environ,
            "JUPYTER_CONFIG_DIR": str(self.root / "config"),
            "JUPYTER_DATA_DIR": str(self.root / "data"),
            "JUPYTER_RUNTIME_DIR": str(self.root / "runtime"),
            "JUPYTERLAB_WORKSPACES_DIR": str(self.root / "workspaces"),
            "PYTHONUNBUFFERED": "1",
        }
        for name in ("JUPYTER_CIFAR_SERVER_URL", "JUPYTER_CIFAR_SERVER_TOKEN", "JUPYTER_CIFAR_STORE"):
            env.pop(name, None)
        if self.data_dir is not None:
            env["JUPYTER_CIFAR_DATA"] = str(self.data_dir)
        if self.kind == "voila":
            env["JUPYTER_CIFAR_STORE"] = self.store_uri
        return env

    def start(self, timeout: float = 90) -> NotebookServer:
        """Start it (again on another port if its own was taken meanwhile)."""
        return on_a_free_port(self, lambda: self._start(timeout))

    def _start(self, timeout: float) -> NotebookServer:
        begin = time.monotonic()
        for sub in ("config", "data", "runtime", "work", "workspaces"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        if self.kind != "voila":
            self._write_user_settings()
        before = len(self.log())
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 (the process owns it)
        self.proc = subprocess.Popen(
            self.argv(), cwd=self.work, stdout=log, stderr=subprocess.STDOUT, env=self.environment()
        )
        deadline = begin + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                check_port_taken(self.log()[before:])
                raise RuntimeError(f"{self.kind} exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            if self._ready(before):
                self.started_s = time.monotonic() - begin
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.kind} did not answer within {timeout} s:\n{self.log()[-4000:]}")

    def _write_user_settings(self) -> None:
        """No news or update toasts (they would cover the app in screenshots, and look outside)."""
        folder = self.root / "config" / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "notification.jupyterlab-settings").write_text(
            json.dumps({"fetchNews": "false", "checkForUpdates": False})
        )

    def _ready(self, before: int = 0) -> bool:
        if self.kind == "voila":
            # Voilà has no /api/status, and its root runs the notebook: wait for its "running" line.
            log = self.log()[before:]
            return "Voil" in log and "is running at" in log
        try:
            self.get("api/status")
            return True
        except http.client.HTTPException as e:  # not HTTP: another process holds the port
            raise PortTaken(f"port {self.port}: {e!r}") from None
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def get(self, path: str) -> Any:
        """GET a JSON API path of a Jupyter server (``/api/kernels`` may answer 500 while a kernel starts)."""
        request = urllib.request.Request(self.base + path, headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def log(self) -> str:
        path = self.root / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        terminate(self.proc)
        self.proc = None


# ----------------------------------------------------------------------------------------------- browser


def launch_chromium(playwright: Any, **kwargs: Any) -> Any:
    """Debian's Chromium under Playwright; Playwright gives it a fresh, temporary profile."""
    if not Path(CHROMIUM).exists():
        raise FileNotFoundError(
            f"{CHROMIUM} not found: run .ci/install-browser.sh (apt-get install chromium)"
        )
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True, **kwargs)


@dataclass
class KernelMessage:
    """One message a kernel sent to the page (iopub, shell, ...), decoded from a websocket frame."""

    channel: str
    msg_type: str
    content: dict[str, Any]
    parent_msg_type: str
    at: float  # time.monotonic() when Playwright saw it

    def describe(self) -> str:
        if self.msg_type == "error":
            tb = "\n".join(self.content.get("traceback", []))
            tb = re.sub(r"\x1b\[[0-9;]*m", "", tb)  # ANSI colours
            what = f"{self.content.get('ename')}: {self.content.get('evalue')}"
            return f"{what} (after {self.parent_msg_type})\n{tb}"
        return f"{self.channel}/{self.msg_type}: {json.dumps(self.content)[:500]}"


def decode_kernel_frame(
    payload: str | bytes,
) -> tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]] | None:
    """(channel, header, parent_header, content) of a kernel websocket frame, or None if it is not one.

    Three wire formats: JSON text (the legacy protocol), the legacy binary format for messages with
    buffers (big-endian uint32 count and offsets, then the JSON), and jupyter_server's
    ``v1.kernel.websocket.jupyter.org`` (little-endian uint64 offsets, channel, header, parent, metadata,
    content, buffers).
    """
    try:
        if isinstance(payload, str):
            msg = json.loads(payload)
            return (
                msg.get("channel", ""),
                msg["header"],
                msg.get("parent_header") or {},
                msg.get("content") or {},
            )
        data = bytes(payload)
        if len(data) >= 8:
            count = int.from_bytes(data[:8], "little")
            if 6 <= count <= 1000 and len(data) >= 8 * (count + 1):
                offsets = [int.from_bytes(data[8 * (i + 1) : 8 * (i + 2)], "little") for i in range(count)]
                if offsets[0] == 8 * (count + 1) and offsets == sorted(offsets) and offsets[-1] <= len(data):
                    channel = data[offsets[0] : offsets[1]].decode()
                    header = json.loads(data[offsets[1] : offsets[2]])
                    parent = json.loads(data[offsets[2] : offsets[3]])
                    content = json.loads(data[offsets[4] : offsets[5]])
                    return channel, header, parent or {}, content or {}
        nbufs = struct.unpack("!i", data[:4])[0]
        offsets = list(struct.unpack("!" + "I" * nbufs, data[4 : 4 * (nbufs + 1)]))
        end = offsets[1] if nbufs > 1 else len(data)
        msg = json.loads(data[offsets[0] : end])
        return msg.get("channel", ""), msg["header"], msg.get("parent_header") or {}, msg.get("content") or {}
    except (ValueError, KeyError, TypeError, IndexError, struct.error, UnicodeDecodeError):
        return None


# Kept from every frame; everything else is only counted.
_KEPT = {"error", "stream", "execute_reply", "status"}


class AppPage:
    """A Playwright page with error collection and the helpers the end-to-end tests use."""

    def __init__(self, page: Any, screenshots: Path, name: str = "page") -> None:
        self.page = page
        self.screenshots = screenshots
        self.name = name
        self.page_errors: list[str] = []
        self.console_errors: list[str] = []
        self.kernel_messages: list[KernelMessage] = []
        self.comm_msgs: list[float] = []  # arrival times of widget (comm_msg) messages from kernels
        self.websockets: list[str] = []
        page.on("pageerror", lambda error: self.page_errors.append(f"{error.name}: {error.message}"))
        page.on("console", self._on_console)
        page.on("websocket", self._on_websocket)

    # ---------------------------------------------------------------------------- error collection

    def _on_console(self, message: Any) -> None:
        if message.type == "error":
            self.console_errors.append(message.text)

    def _on_websocket(self, ws: Any) -> None:
        self.websockets.append(ws.url)
        if "/kernels/" in ws.url:
            ws.on("framereceived", self._on_frame)
        elif "/voila/execution/" in ws.url:
            ws.on("framereceived", self._on_voila_frame)

    def _on_voila_frame(self, payload: str | bytes) -> None:
        """Voilà's progressive rendering sends each executed cell's outputs: keep its errors."""
        try:
            message = json.loads(payload)
            outputs = message["payload"]["output_cell"].get("outputs", [])
        except (ValueError, KeyError, TypeError, AttributeError):
            return
        now = time.monotonic()
        for output in outputs:
            if output.get("output_type") == "error":
                self.kernel_messages.append(KernelMessage("voila", "error", output, "execute_request", now))
            elif output.get("output_type") == "stream":
                self.kernel_messages.append(KernelMessage("voila", "stream", output, "execute_request", now))

    def _on_frame(self, payload: str | bytes) -> None:
        decoded = decode_kernel_frame(payload)
        if decoded is None:
            return
        channel, header, parent, content = decoded
        msg_type = header.get("msg_type", "")
        now = time.monotonic()
        if msg_type == "comm_msg":
            self.comm_msgs.append(now)
        if msg_type in _KEPT:
            self.kernel_messages.append(
                KernelMessage(channel, msg_type, content, parent.get("msg_type", ""), now)
            )

    @property
    def kernel_errors(self) -> list[KernelMessage]:
        """The kernel's ``error`` messages: exceptions in cells and in widget callbacks."""
        return [m for m in self.kernel_messages if m.msg_type == "error"]

    def stderr(self) -> str:
        return "".join(
            m.content.get("text", "")
            for m in self.kernel_messages
            if m.msg_type == "stream" and m.content.get("name") == "stderr"
        )

    def unexpected_page_errors(self, allow: Iterable[str] = ()) -> list[str]:
        patterns = [*KNOWN_PAGE_ERRORS, *(re.compile(a) for a in allow)]
        return [e for e in self.page_errors if not any(p.search(e) for p in patterns)]

    def unexpected_console_errors(self, allow: Iterable[str] = ()) -> list[str]:
        patterns = [*KNOWN_CONSOLE_ERRORS, *(re.compile(a) for a in allow)]
        return [e for e in self.console_errors if not any(p.search(e) for p in patterns)]

    def assert_clean(
        self, allow_page: Iterable[str] = (), allow_console: Iterable[str] | None = None
    ) -> None:
        """No kernel ``error`` message, no unexpected page error (and, if asked, no console error)."""
        problems = [f"kernel error: {m.describe()}" for m in self.kernel_errors]
        problems += [f"page error: {e}" for e in self.unexpected_page_errors(allow_page)]
        if allow_console is not None:
            problems += [f"console error: {e}" for e in self.unexpected_console_errors(allow_console)]
        assert not problems, "\n\n".join(problems)

    def report(self) -> str:
        """What was collected, for a failing test's message."""
        parts = [f"page errors: {self.page_errors}", f"console errors: {self.console_errors[-20:]}"]
        parts += [f"kernel error: {m.describe()}" for m in self.kernel_errors]
        stderr = self.stderr()
        if stderr:
            parts.append(f"kernel stderr (last 3000 chars):\n{stderr[-3000:]}")
        return "\n".join(parts)

    # ------------------------------------------------------------------------------- JupyterLab / Notebook 7

    def open(self, url: str, timeout: float = 60) -> None:
        self.page.goto(url, wait_until="domcontentloaded", timeout=timeout * 1000)

    def wait_notebook(self, timeout: float = 90) -> None:
        """A notebook is shown and its kernel is idle (run-all fails while the kernel starts)."""
        self.page.locator(".jp-Notebook .jp-Cell >> visible=true").first.wait_for(timeout=timeout * 1000)
        self.wait_kernel_idle(timeout)

    def wait_kernel_idle(self, timeout: float = 90) -> None:
        self.page.wait_for_function(
            """() => {
                const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
                const s = w && w.sessionContext && w.sessionContext.session;
                const k = s && s.kernel;
                return !!k && k.status === 'idle' && k.connectionStatus === 'connected';
            }""",
            timeout=timeout * 1000,
            polling=100,
        )

    def kernel_id(self) -> str:
        return str(
            self.page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.id")
        )

    def run_all(self) -> None:
        """Run every cell of the current notebook (the command's promise is not awaited on purpose)."""
        self.page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")

    def restart_kernel(self, timeout: float = 90) -> None:
        """Restart the notebook's kernel without the confirmation dialog, and wait until it is idle.

        ``SessionContext.restartKernel()`` is the dialog-free call under the ``kernelmenu:restart``
        command (which asks first); its promise settles once the kernel has restarted.
        """
        self.page.evaluate(
            """async () => {
                await window.jupyterapp.shell.currentWidget.sessionContext.restartKernel();
            }"""
        )
        self.wait_kernel_idle(timeout)

    def execution_counts(self) -> list[str]:
        """The input prompts' texts ("[1]:", "[*]:", "[ ]:"), one per cell."""
        return list(self.page.locator(".jp-Notebook .jp-Cell .jp-InputPrompt").all_inner_texts())

    # ------------------------------------------------------------------------------------------ widgets

    def sel(self, cls: str) -> str:
        """The CSS selector of a widget class (``jc-train-start`` or ``.jc-train-start``)."""
        return cls if cls.startswith((".", "#", "[")) or " " in cls else f".{cls}"

    def locator(self, cls: str) -> Any:
        return self.page.locator(self.sel(cls))

    def wait_visible(self, cls: str, timeout: float = 60) -> Any:
        loc = self.locator(cls).first
        loc.wait_for(state="visible", timeout=timeout * 1000)
        return loc

    def click(self, cls: str, timeout: float = 30) -> None:
        self.wait_visible(cls, timeout).click(timeout=timeout * 1000)

    def text(self, cls: str) -> str:
        """The visible text of the first element with this class ('' if none)."""
        loc = self.locator(cls)
        return str(loc.first.inner_text()) if loc.count() else ""

    def texts(self, cls: str) -> list[str]:
        return [str(t) for t in self.locator(cls).all_inner_texts()]

    def fill(self, cls: str, value: str | int | float, timeout: float = 30) -> None:
        """Type into a Text / IntText / FloatText widget and commit it (ipywidgets syncs on change/Enter)."""
        root = self.wait_visible(cls, timeout)
        field_ = (
            root
            if root.evaluate("e => e.matches('input, textarea')")
            else root.locator("input, textarea").first
        )
        field_.fill(str(value))
        field_.press("Enter")
        field_.evaluate("e => e.dispatchEvent(new Event('change', {bubbles: true}))")

    def select(self, cls: str, option: str, timeout: float = 30) -> str:
        """Choose an option of a Dropdown widget: the one whose label is ``option`` or starts with
        ``option`` and a colon or space (``"tutorial"`` picks ``"tutorial: The TensorFlow CNN …"``).
        Returns the chosen label."""
        root = self.wait_visible(cls, timeout)
        sel = root if root.evaluate("e => e.matches('select')") else root.locator("select").first
        labels = [str(t).strip() for t in sel.locator("option").all_inner_texts()]
        matches = [i for i, t in enumerate(labels) if t == option] or [
            i for i, t in enumerate(labels) if t.startswith((option + ":", option + " "))
        ]
        assert len(matches) == 1, f"{option!r} is not exactly one of the options of {cls}: {labels}"
        sel.select_option(index=matches[0])
        return labels[matches[0]]

    def input_value(self, cls: str) -> str:
        root = self.locator(cls).first
        field_ = (
            root
            if root.evaluate("e => e.matches('input, textarea, select')")
            else root.locator("input, textarea, select").first
        )
        return str(field_.input_value())

    def tab(self, title: str, within: str = "jc-app", timeout: float = 30) -> None:
        """Click a tab of an ipywidgets 8 Tab (a Lumino TabBar) by its title."""
        tab = self.page.locator(
            f"{self.sel(within)} .lm-TabBar-tab", has_text=re.compile(rf"^\s*{re.escape(title)}\s*$")
        )
        tab.first.click(timeout=timeout * 1000)
        self.page.wait_for_function(
            """([root, title]) => {
                const t = document.querySelector(root + ' .lm-TabBar-tab.lm-mod-current');
                return !!t && t.textContent.trim() === title;
            }""",
            arg=[self.sel(within), title],
            timeout=timeout * 1000,
        )

    def upload(self, cls: str, *paths: Path | str, timeout: float = 30) -> None:
        """Give files to an upload control through its button (its file input is hidden: use the
        chooser); the control's own button where it has one beside a drop zone."""
        button = f"{self.sel(cls)} button" if self.locator(f"{self.sel(cls)} button").count() else cls
        with self.page.expect_file_chooser(timeout=timeout * 1000) as chooser:
            self.click(button, timeout)
        chooser.value.set_files([str(p) for p in paths])

    def drop(self, cls: str, *paths: Path, mime: str = "image/jpeg", event: str = "drop") -> None:
        """Drop files onto an element, as a person dragging them from a file manager does (or, with
        ``event="paste"``, paste them into it, as after copying an image)."""
        files = [{"name": p.name, "data": list(p.read_bytes()), "type": mime} for p in paths]
        self.page.evaluate(
            """([selector, files, event]) => {
                const dt = new DataTransfer();
                for (const f of files) {
                    dt.items.add(new File([new Uint8Array(f.data)], f.name, {type: f.type}));
                }
                const zone = document.querySelector(selector);
                if (event === "paste") {
                    zone.dispatchEvent(new ClipboardEvent("paste", {clipboardData: dt, bubbles: true}));
                    return;
                }
                const how = {dataTransfer: dt, bubbles: true, cancelable: true};
                zone.dispatchEvent(new DragEvent("dragover", how));
                zone.dispatchEvent(new DragEvent("drop", how));
            }""",
            [self.sel(cls), files, event],
        )

    def wait_text(self, cls: str, pattern: str, timeout: float = 60, flags: str = "i") -> str:
        """Wait (every animation frame) until an element with this class has text matching ``pattern``."""
        handle = self.page.wait_for_function(
            """([sel, pattern, flags]) => {
                const re = new RegExp(pattern, flags);
                for (const e of document.querySelectorAll(sel)) {
                    const t = (e.innerText || e.textContent || '').trim();
                    if (re.test(t)) return t;
                }
                return false;
            }""",
            arg=[self.sel(cls), pattern, flags],
            timeout=timeout * 1000,
            polling="raf",
        )
        return str(handle.json_value())

    # --------------------------------------------------------------------------------- live values

    def watch(self, name: str, expression: str) -> None:
        """Record every distinct value of a JS expression, checked on every animation frame, in the page.

        ``expression`` is the body of a function returning a JSON-able value (``null``: nothing yet).
        """
        self.page.evaluate(
            """([name, body]) => {
                window.__jcWatch = window.__jcWatch || {};
                const w = window.__jcWatch[name] = {values: [], last: undefined, stop: false};
                const get = new Function(body);
                const tick = () => {
                    if (w.stop) return;
                    let v;
                    try { v = get(); } catch (e) { v = 'error: ' + e; }
                    const key = JSON.stringify(v);
                    if (v !== null && v !== undefined && key !== w.last) {
                        w.last = key;
                        w.values.push(v);
                    }
                    requestAnimationFrame(tick);
                };
                tick();
            }""",
            [name, expression],
        )

    def watched(self, name: str) -> list[Any]:
        return list(self.page.evaluate("(name) => (window.__jcWatch[name] || {values: []}).values", name))

    def unwatch(self, name: str) -> list[Any]:
        return list(
            self.page.evaluate(
                "(name) => { const w = window.__jcWatch[name]; w.stop = true; return w.values; }", name
            )
        )

    def wait_watched(self, name: str, count: int, timeout: float = 60) -> list[Any]:
        """Wait until ``count`` distinct values of a watched expression were seen."""
        self.page.wait_for_function(
            "([name, n]) => window.__jcWatch[name].values.length >= n",
            arg=[name, count],
            timeout=timeout * 1000,
            polling="raf",
        )
        return self.watched(name)

    def curve_points(self, cls: str) -> list[int]:
        """Points drawn by each Lines mark of a bqplot Figure with this class (one per path command)."""
        return list(self.page.evaluate(f"() => {{ {curve_points_js(self.sel(cls))} }}"))

    # ------------------------------------------------------------------------------------- screenshots

    def screenshot(self, name: str, cls: str | None = None) -> Path:
        """A PNG of the element with this class (else the page) in the screenshot folder."""
        self.screenshots.mkdir(parents=True, exist_ok=True)
        path = self.screenshots / f"{name}.png"
        if cls is None:
            self.page.screenshot(path=str(path))
            return path
        loc = self.locator(cls).first
        viewport = self.page.viewport_size
        box = loc.bounding_box()
        # An element taller than the window is only partly painted inside the notebook's scrolling
        # panel: make the window tall enough for all of it, then put it back.
        if box and viewport and box["height"] + 80 > viewport["height"]:
            self.page.set_viewport_size(
                {"width": viewport["width"], "height": int(min(box["height"] + 300, 6000))}
            )
            self.page.wait_for_timeout(500)
        try:
            loc.scroll_into_view_if_needed()
            self.page.wait_for_timeout(400)  # let bqplot finish its transitions
            loc.screenshot(path=str(path), animations="disabled")
        finally:
            if viewport and self.page.viewport_size != viewport:
                self.page.set_viewport_size(viewport)
                self.page.wait_for_timeout(200)
        return path


def curve_points_js(selector: str) -> str:
    """JS function body: the point count of each ``g.curve path.line`` in the first match of ``selector``."""
    return f"""
        const fig = document.querySelector({json.dumps(selector)});
        if (!fig) return [];
        return Array.from(fig.querySelectorAll('g.curve path.line')).map(p => {{
            const d = p.getAttribute('d') || '';
            return (d.match(/[MLCHVQSTA]/gi) || []).length;
        }});
    """


def wait_points(page: AppPage, cls: str, minimum: int = 1, timeout: float = 30) -> int:
    """Wait (every animation frame) until a bqplot Figure's Lines marks draw ``minimum`` points in all."""
    handle = page.page.wait_for_function(
        f"""() => {{ const n = (() => {{ {total_points_js(page.sel(cls))} }})();
                    return n !== null && n >= {int(minimum)} ? n : false; }}""",
        timeout=timeout * 1000,
        polling="raf",
    )
    return int(handle.json_value())


def total_points_js(selector: str) -> str:
    """JS function body: all Lines marks' points in the first match of ``selector`` (null: no figure yet)."""
    return f"""
        const counts = (() => {{ {curve_points_js(selector)} }})();
        return counts.length ? counts.reduce((a, b) => a + b, 0) : null;
    """


def text_js(selector: str) -> str:
    """JS function body: the trimmed text of the first match of ``selector`` (null: none)."""
    return f"""
        const e = document.querySelector({json.dumps(selector)});
        return e ? (e.innerText || e.textContent || '').trim() : null;
    """


# ------------------------------------------------------------------------------------------ the probe

# A notebook of plain widgets (no jupyter_cifar) that proves the harness itself: classes on widgets and
# on a bqplot Figure, a Tab, a curve that grows from a background thread, a FileUpload, and a button whose
# callback raises (the page must see that as a kernel `error` message).
PROBE_CELLS = [
    """\
import threading, time
import ipywidgets as w
import bqplot as bq

scales = {"x": bq.LinearScale(), "y": bq.LinearScale()}
line = bq.Lines(x=[], y=[], scales=scales)
figure = bq.Figure(
    marks=[line],
    axes=[bq.Axis(scale=scales["x"]), bq.Axis(scale=scales["y"], orientation="vertical")],
    layout=w.Layout(height="260px", width="480px"),
)
figure.add_class("jc-probe-figure")
button = w.Button(description="grow"); button.add_class("jc-probe")
status = w.Label("waiting"); status.add_class("jc-probe-status")
upload = w.FileUpload(multiple=True); upload.add_class("jc-probe-upload")
received = w.Label(""); received.add_class("jc-probe-received")
boom = w.Button(description="boom"); boom.add_class("jc-probe-boom")
app = w.Tab([w.VBox([button, status, figure]), w.VBox([upload, received, boom])])
app.titles = ("Grow", "Files")
app.add_class("jc-probe-app")

def grow():
    for i in range(1, 41):
        with line.hold_sync():
            line.x = list(range(i))
            line.y = [v * v for v in range(i)]
        status.value = f"step {i}/40"
        time.sleep(0.05)
    status.value = "finished"

button.on_click(lambda _: threading.Thread(target=grow, daemon=True).start())

def on_upload(change):
    received.value = ", ".join(
        f"{f['name']}:{f['size']}:{len(bytes(f['content']))}" for f in change["new"]
    )

upload.observe(on_upload, "value")

def explode(_):
    raise ValueError("probe boom")

boom.on_click(explode)
""",
    "app",
]


def run_probe_notebook(server: NotebookServer, page: AppPage, jpeg: Path, shot: str) -> None:
    """In a notebook front end (Lab, Notebook 7): write the probe notebook, open it, run it, drive it."""
    write_notebook(server.work, "probe", PROBE_CELLS)
    page.open(server.notebook_url("probe"))
    page.wait_notebook()
    page.run_all()
    exercise_probe(page, jpeg, shot=shot)


def exercise_probe(page: AppPage, jpeg: Path, shot: str | None = None) -> None:
    """Drive the probe notebook's widgets; raises AssertionError if the harness misses something."""
    page.wait_visible("jc-probe", timeout=90)
    page.watch("probe-points", total_points_js(".jc-probe-figure"))
    page.watch("probe-status", text_js(".jc-probe-status"))
    page.click("jc-probe")
    points = page.wait_watched("probe-points", 4, timeout=30)
    page.wait_text("jc-probe-status", r"^finished$", timeout=30)
    points = page.unwatch("probe-points")
    statuses = page.unwatch("probe-status")
    assert points == sorted(points) and len(set(points)) >= 4, points
    assert page.curve_points("jc-probe-figure") == [40], page.curve_points("jc-probe-figure")
    assert len([s for s in statuses if s.startswith("step")]) >= 3, statuses
    if shot:
        page.screenshot(shot, "jc-probe-app")

    page.tab("Files", within="jc-probe-app")
    page.upload("jc-probe-upload", jpeg)
    size = jpeg.stat().st_size
    page.wait_text("jc-probe-received", rf"^{re.escape(jpeg.name)}:{size}:{size}$", timeout=30)

    before = len(page.kernel_errors)
    page.click("jc-probe-boom")
    page.page.wait_for_timeout(100)
    deadline = time.monotonic() + 15
    while len(page.kernel_errors) == before and time.monotonic() < deadline:
        page.page.wait_for_timeout(100)
    errors = page.kernel_errors[before:]
    assert errors and errors[0].content.get("ename") == "ValueError", page.report()
    assert errors[0].content.get("evalue") == "probe boom", errors[0].describe()


# ------------------------------------------------------------------------------ driving the app itself

# The app's DOM contract: the classes below are given by the app with `widget.add_class`.
APP_CELLS = ["%load_ext jupyter_cifar", "%cifar"]
APP_OBJECT_CELLS = ["from jupyter_cifar import App\n\nApp()"]

RUNNING = r"^epoch \d+/\d+ · batch \d+/\d+"


def wait_app(page: AppPage, timeout: float = 120) -> None:
    """The app is shown (one of it), on its Train tab, ready."""
    page.wait_visible("jc-app", timeout)
    page.page.wait_for_function(
        "() => document.querySelectorAll('.jc-app').length === 1",
        timeout=timeout * 1000,
        polling="raf",
    )
    page.wait_visible("jc-train-start", timeout)


def open_app(page: AppPage, server: NotebookServer) -> None:
    """The app's notebook (``APP_CELLS``) written into the server's folder, opened in Lab and run: the app
    is ready on its Train tab."""
    write_notebook(server.work, "app", APP_CELLS)
    page.open(server.notebook_url("app"))
    page.wait_notebook()
    page.run_all()
    wait_app(page)


def app_errors(page: AppPage) -> list[str]:
    """The texts of the app's error areas that are not empty."""
    return [t for t in page.texts("jc-error") if t.strip()]


#: What JupyterLab itself logs when a page reloads, or its kernel restarts, while the kernel still had to
#: answer its request for a comm subshell (seen on a busy machine): Lab's, not the app's.
RELOAD_PAGE_ERRORS = ("Per comm-target subshell creation failed: Error: Canceled future",)


def assert_app_clean(page: AppPage, allow_page: tuple[str, ...] = ()) -> None:
    """Nothing in the app's error areas, no kernel `error` message, no unexpected page error."""
    assert not app_errors(page), f"the app shows errors: {app_errors(page)}\n{page.report()}"
    page.assert_clean(allow_page=allow_page)


def set_training(page: AppPage, preset: str, epochs: int, limit: int) -> None:
    page.tab("Train")
    page.select("jc-train-preset", preset)
    # The preset resets the epochs to its own: wait for that before typing ours.
    page.page.wait_for_timeout(300)
    page.fill("jc-train-epochs", epochs)
    page.fill("jc-train-limit", limit)
    for cls, value in (("jc-train-epochs", epochs), ("jc-train-limit", limit)):
        assert page.input_value(cls) == str(value), (cls, page.input_value(cls))
    page.page.wait_for_timeout(300)  # the values reach the kernel before Start is pressed


def wait_text_changes(page: AppPage, cls: str, before: str, timeout: float = 60) -> str:
    """Wait (every animation frame) until the text of an element with this class is not ``before``."""
    handle = page.page.wait_for_function(
        """([sel, before]) => {
            const e = document.querySelector(sel);
            const t = e ? (e.innerText || e.textContent || '').trim() : null;
            return t !== null && t !== before ? t : false;
        }""",
        arg=[page.sel(cls), before],
        timeout=timeout * 1000,
        polling="raf",
    )
    return str(handle.json_value())


def start_and_stop(page: AppPage, timeout: float = 180) -> tuple[float, str]:
    """Start, wait until batches run, press Stop: (seconds from Stop to "stopped…", that status)."""
    before = page.text("jc-train-status").strip()
    page.click("jc-train-start")
    wait_text_changes(page, "jc-train-status", before)
    page.wait_text("jc-train-status", RUNNING, timeout=timeout)
    page.click("jc-train-stop")
    pressed = time.monotonic()
    status = page.wait_text("jc-train-status", r"^stopped", timeout=60)
    return time.monotonic() - pressed, status


@dataclass
class TrainingSeen:
    """What the browser showed while a training ran (one entry per distinct state)."""

    states: list[dict[str, Any]]  # {"points": int | None, "status": str | None}
    status: str  # at the end
    result: str
    seconds: float

    def points_while_running(self) -> list[int]:
        """Distinct loss-curve point counts seen while the status said a batch was running."""
        seen: list[int] = []
        for state in self.states:
            points, status = state.get("points"), state.get("status") or ""
            if points and re.match(RUNNING, status) and points not in seen:
                seen.append(points)
        return seen

    def running_statuses(self) -> list[str]:
        return list(
            dict.fromkeys(s["status"] for s in self.states if re.match(RUNNING, s.get("status") or ""))
        )


def start_and_watch(page: AppPage, timeout: float = 300) -> TrainingSeen:
    """Press Start, record every drawn state of the loss curve and the status until "finished"."""
    page.watch(
        "training",
        f"""return {{points: (() => {{ {total_points_js(".jc-train-loss")} }})(),
                    status: (() => {{ {text_js(".jc-train-status")} }})()}};""",
    )
    before = page.text("jc-train-status").strip()
    begin = time.monotonic()
    page.click("jc-train-start")
    wait_text_changes(page, "jc-train-status", before, timeout=60)
    status = page.wait_text("jc-train-status", r"^(finished|stopped|failed)", timeout=timeout)
    seconds = time.monotonic() - begin
    states = page.unwatch("training")
    result = (
        page.wait_text("jc-train-result", r"test accuracy", timeout=30)
        if status.startswith("finished")
        else ""
    )
    return TrainingSeen(states, status, result, seconds)


def name_before_start(page: AppPage, name: str) -> None:
    """Where Start queues a job, what it saves as is given first (the Save button is hidden)."""
    assert page.page.locator(page.sel("jc-train-save")).first.is_hidden(), "not a job: Save is there"
    page.fill("jc-train-save-name", name)
    page.page.wait_for_timeout(200)


def save_model(page: AppPage, name: str, timeout: float = 60) -> str:
    """Type a name, press Save: the "saved as NAME:VERSION" text."""
    page.fill("jc-train-save-name", name)
    page.page.wait_for_timeout(200)
    page.click("jc-train-save")
    return page.wait_text("jc-train-saved", rf"^saved as {re.escape(name)}:\d+", timeout=timeout)


@dataclass
class Classified:
    file: str
    labels: list[str]  # top-k, e.g. ["cat 81.2%", "dog 10.0%", "frog 3.1%"]
    errors: list[str]
    model: str  # the Classify tab's model label when it was classified


def classify_upload(page: AppPage, *paths: Path, timeout: float = 120) -> list[Classified]:
    """Upload files in the Classify tab and wait until each has its labels (or its error)."""
    page.tab("Classify")
    page.page.evaluate(
        "() => { const r = document.querySelector('.jc-classify-results'); if (r) r.dataset.e2eOld = '1';"
        " document.querySelectorAll('.jc-classify-item').forEach(e => e.dataset.e2eOld = '1'); }"
    )
    page.upload("jc-classify-upload", *paths)
    page.page.wait_for_function(
        """(n) => {
            const items = Array.from(document.querySelectorAll('.jc-classify-item'))
                .filter(e => !e.dataset.e2eOld);
            return items.length === n && items.every(e =>
                e.querySelector('.jc-classify-error') ||
                (e.querySelector('.jc-classify-label') &&
                 e.querySelector('.jc-classify-label').textContent.trim()));
        }""",
        arg=len(paths),
        timeout=timeout * 1000,
        polling="raf",
    )
    found = page.page.evaluate(
        """() => Array.from(document.querySelectorAll('.jc-classify-item')).map(e => ({
            file: (e.querySelector('.jc-classify-file') || {textContent: ''}).textContent.trim(),
            labels: Array.from(e.querySelectorAll('.jc-classify-label')).map(l => l.textContent.trim()),
            errors: Array.from(e.querySelectorAll('.jc-classify-error')).map(l => l.textContent.trim()),
        }))"""
    )
    model = page.text("jc-classify-model").strip()
    return [Classified(f["file"], f["labels"], f["errors"], model) for f in found]


def select_model(page: AppPage, ref: str, timeout: float = 60) -> None:
    """In the Models tab: refresh, find the row of ``ref``, select it."""
    page.tab("Models")
    page.click("jc-models-refresh")
    row = page.page.locator(".jc-models-row", has_text=re.compile(rf"^\s*{re.escape(ref)}\s*$"))
    deadline = time.monotonic() + timeout
    while True:
        # The Models tab keeps a row whose text is unchanged across refreshes, but redraws it when its
        # text changes or rows above it change (a job saving a version meanwhile): a click on the old row
        # is lost with it, so a click that selects nothing is made again.
        row.first.wait_for(state="visible", timeout=max(1.0, deadline - time.monotonic()) * 1000)
        row.first.click()
        try:
            page.wait_text("jc-models-selected", re.escape(ref), timeout=min(10.0, timeout))
            break
        except PlaywrightTimeoutError:
            if time.monotonic() > deadline:
                raise
    # The facts come in their own message from the kernel: wait for this version's, not the last one's.
    page.wait_text("jc-models-details", rf"^version\s+{re.escape(ref)}\s", timeout=timeout)
