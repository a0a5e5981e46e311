"""An image upload control that never loses a file silently.

ipywidgets' ``FileUpload`` sends every chosen file in one message over the kernel's websocket; past the
server's message limit (tornado's default is 10 MiB) the message is dropped and the upload arrives empty,
with no error anywhere. This control (an anywidget: a few lines of browser code, no build step) takes files
chosen with its button, dropped on its zone or pasted into it, sends each file in a message of its own,
as binary, and refuses in the browser, by name, any file larger than what the websocket carries:
``max_bytes`` is 256 MiB under a server with the jupyter_cifar extension (which raises the limit to
512 MiB), else 8 MiB.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anywidget
from traitlets import Int, Unicode

from ..store.remote import ENV_SERVER_URL

_ESM = """
function render({ model, el }) {
  const input = document.createElement("input");
  input.type = "file";
  input.multiple = true;
  input.accept = "image/*";
  input.style.display = "none";
  const button = document.createElement("button");
  button.className = "jupyter-widgets jupyter-button widget-button jc-upload-button";
  const draw = () => { button.textContent = "\u21e7 " + model.get("description"); };
  draw();
  model.on("change:description", draw);
  button.onclick = () => input.click();
  // Dropped or pasted images take the same road as chosen ones (Gradio's users expect all three).
  const zone = document.createElement("div");
  zone.className = "jc-upload-zone";
  zone.tabIndex = 0;
  zone.textContent = "or drop images here, or paste one (Ctrl+V)";
  zone.style.cssText = "display:inline-block;margin-left:8px;padding:4px 10px;border:1px dashed #999;" +
    "border-radius:4px;color:#666;font-size:12px;cursor:default";
  const send = async (files) => {
    files = files.filter((f) => f && f.size !== undefined);
    if (!files.length) return;
    const batch = Date.now() + "-" + Math.random();
    const limit = model.get("max_bytes");
    for (let i = 0; i < files.length; i++) {
      const f = files[i];
      const name = f.name || `pasted-${i + 1}.${(f.type.split("/")[1] || "png")}`;
      const head = { kind: "file", batch, index: i, count: files.length, name, size: f.size };
      if (f.size > limit) {
        const mb = (n) => (n / 1048576).toFixed(1) + " MB";
        const error = `${name}: ${mb(f.size)} is over the ${mb(limit)} a kernel can receive`;
        model.send({ ...head, error });
      } else {
        model.send(head, undefined, [new DataView(await f.arrayBuffer())]);
      }
    }
  };
  input.onchange = async () => {
    await send(Array.from(input.files));
    input.value = "";
  };
  const hover = (on) => { zone.style.background = on ? "#e8f0fe" : ""; };
  zone.addEventListener("dragover", (e) => { e.preventDefault(); hover(true); });
  zone.addEventListener("dragleave", () => hover(false));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    hover(false);
    send(Array.from(e.dataTransfer.files));
  });
  zone.addEventListener("paste", (e) => {
    const files = Array.from(e.clipboardData.items)
      .filter((item) => item.kind === "file")
      .map((item) => item.getAsFile());
    if (files.length) { e.preventDefault(); send(files); }
  });
  zone.addEventListener("click", () => zone.focus());
  el.appendChild(button);
  el.appendChild(zone);
  el.appendChild(input);
}
export default { render };
"""


@dataclass
class Uploaded:
    """One chosen file: its bytes, or why they could not be sent."""

    name: str
    content: bytes | None
    error: str | None = None


def default_max_bytes() -> int:
    """What one websocket message can carry to this kernel (see the module's doc)."""
    return (256 << 20) if os.environ.get(ENV_SERVER_URL) else (8 << 20)


class ImageUpload(anywidget.AnyWidget):
    """Calls ``on_files(list[Uploaded])`` once every file a person chose has arrived (or was refused)."""

    _esm = _ESM
    description = Unicode("Upload images…").tag(sync=True)
    max_bytes = Int(0).tag(sync=True)

    def __init__(self, on_files: Callable[[list[Uploaded]], None], **kwargs: Any) -> None:
        super().__init__(max_bytes=default_max_bytes(), **kwargs)
        self._on_files = on_files
        self._batches: dict[str, dict[int, Uploaded]] = {}
        self.on_msg(self._receive)

    def _receive(self, _widget: Any, content: dict[str, Any], buffers: list[Any]) -> None:
        if not isinstance(content, dict) or content.get("kind") != "file":
            return
        batch = self._batches.setdefault(str(content["batch"]), {})
        data = bytes(buffers[0]) if buffers else None
        error = content.get("error")
        if data is None and error is None:
            error = f"{content['name']}: nothing arrived"
        batch[int(content["index"])] = Uploaded(str(content["name"]), data, error)
        if len(batch) == int(content["count"]):
            del self._batches[str(content["batch"])]
            self._on_files([batch[i] for i in sorted(batch)])
