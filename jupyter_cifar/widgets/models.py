"""The Models tab: the store's versions with search, sort and paging; one version's details and curves;
load it into this kernel, set an alias, edit tags and notes, delete (with a confirmation), download.

Everything that comes from the store (names, tags, notes) is shown as text, never as HTML.
"""

from __future__ import annotations

import html
import math
import os
import threading
from typing import Any
from urllib.parse import quote, urlsplit

import bqplot as bq
import ipywidgets as w

from ..store.base import ModelRecord, Page
from .common import NO_MATH, ErrorArea, button, guarded, in_background, label, parse_tags, text_html
from .session import Session

PAGE_SIZE = 15
SORTS = [
    ("newest first", "-created"),
    ("oldest first", "created"),
    ("best test accuracy", "-test_accuracy"),
    ("name", "name"),
    ("largest", "-size"),
]
COLUMNS = ["version", "aliases", "tags", "test accuracy", "created (UTC)", "size"]
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"]


def download_href(ref: str) -> str | None:
    """A link the browser can follow to this server's download route (None outside a server)."""
    from ..store.remote import ENV_SERVER_URL

    server = os.environ.get(ENV_SERVER_URL)
    if not server:
        return None
    return f"{urlsplit(server).path}jupyter-cifar/api/versions/{quote(ref, safe=':@')}/file"


def _facts(record: ModelRecord) -> list[str]:
    """The version's details, one fact a line, from whatever its metadata holds.

    Metadata comes from whoever saved the version (any JSON through the API): a field of an unexpected
    type is shown as the text it is, never trusted to be a mapping or a list.
    """
    meta = record.metadata
    hyper = meta.get("hyperparameters")
    history = meta.get("history")
    facts = [
        f"{record.ref}",
        f"created {record.created[:19].replace('T', ' ')} UTC by {meta.get('saved_by', '?')}",
        f"architecture {meta.get('architecture', '?')}",
    ]
    if meta.get("preset"):
        epochs = len(history) if isinstance(history, list) else 0
        facts.append(f"preset {meta['preset']}: {epochs} epochs")
    if isinstance(hyper, dict):
        facts.append(", ".join(f"{k} {v}" for k, v in hyper.items() if v is not None))
    elif hyper:
        facts.append(f"hyperparameters {hyper}")
    if record.test_accuracy is not None:
        facts.append(f"test accuracy {record.test_accuracy:.4f}")
    if meta.get("parent"):
        facts.append(f"continued from {meta['parent']}")
    facts.append(f"sha256 {record.sha256[:16]}…, {record.size / 1e6:.1f} MB")
    return facts


def _points(history: Any, key: str) -> list[tuple[float, float]]:
    """(epoch, value) of a stored history, skipping any entry that is not numbers."""
    if not isinstance(history, list):
        return []
    points = []
    for entry in history:
        if not isinstance(entry, dict):
            continue
        x, y = _number(entry.get("epoch")), _number(entry.get(key))
        if x is not None and y is not None:
            points.append((x, y))
    return points


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _row_cells(record: ModelRecord) -> list[str]:
    return [
        ", ".join(record.aliases),
        ", ".join(f"{k}={v}" for k, v in record.tags.items()),
        "" if record.test_accuracy is None else f"{record.test_accuracy:.4f}",
        record.created[:19].replace("T", " "),
        f"{record.size / 1e6:.1f} MB",
    ]


class ModelsPanel(w.VBox):
    """The model browser (see the module's doc)."""

    def __init__(self, session: Session) -> None:
        super().__init__()
        self.session = session
        self.errors = ErrorArea()
        self.page: Page | None = None
        self.offset = 0
        self.selected: ModelRecord | None = None
        self.compare: ModelRecord | None = None
        self._refresh_lock = threading.Lock()

        self.search = w.Text(
            placeholder="search names and notes", continuous_update=False, description="Search"
        )
        self.search.add_class("jc-models-search")
        self.sort = w.Dropdown(
            options=SORTS, value="-created", description="Sort", layout=w.Layout(width="260px")
        )
        self.refresh_button = button("Refresh", "jc-models-refresh", icon="refresh")
        self.prev_button = button("<", "jc-models-prev", tooltip="previous page")
        self.next_button = button(">", "jc-models-next", tooltip="next page")
        self.page_label = label("", "jc-models-page")
        self.table = w.GridBox(
            layout=w.Layout(grid_template_columns="minmax(140px, auto) repeat(5, auto)", grid_gap="2px 12px")
        )
        self.table.add_class("jc-models-table")
        guard = guarded(self.errors)
        self.search.observe(guard(lambda _: self.refresh(reset=True)), names="value")
        self.sort.observe(guard(lambda _: self.refresh(reset=True)), names="value")
        self.refresh_button.on_click(guard(lambda _: self.refresh()))
        self.prev_button.on_click(guard(lambda _: self.turn(-1)))
        self.next_button.on_click(guard(lambda _: self.turn(1)))

        # The selected version.
        self.selected_label = label("select a version above", "jc-models-selected")
        self.details = w.HTML()  # text_html: escaped text, one fact a line
        self.details.add_class("jc-models-details")
        self.notes_view = w.Textarea(disabled=True, layout=w.Layout(width="100%", height="60px"))
        self.download = w.HTML()
        self.load_button = button("Load into this kernel", "jc-models-load", style="primary", icon="upload")
        self.load_button.layout.width = "auto"
        self.alias = w.Text(placeholder="alias, e.g. prod", layout=w.Layout(width="180px"))
        self.alias_button = button("Set alias", "jc-models-alias")
        self.tags = w.Text(
            placeholder="key=value, key=value", description="Tags", layout=w.Layout(width="360px")
        )
        self.notes = w.Textarea(placeholder="notes", description="Notes", layout=w.Layout(width="460px"))
        self.edit_button = button("Save tags and notes", "jc-models-edit")
        self.edit_button.layout.width = "auto"
        self.delete_button = button("Delete version", "jc-models-delete", style="danger", icon="trash")
        self.confirm_button = button("Really delete", "jc-models-confirm", style="danger")
        self.confirm_button.layout.width = "auto"
        self.cancel_button = button("Cancel", "jc-models-cancel")
        self.confirm_box = w.HBox([self.confirm_button, self.cancel_button], layout=w.Layout(display="none"))
        self.compare_with = w.Dropdown(  # "" (not None: a Dropdown shows None as blank) means no comparison
            options=[("-", "")],
            value="",
            description="Compare with",
            layout=w.Layout(width="320px"),
            style={"description_width": "initial"},
        )
        self.load_button.on_click(guard(lambda _: self.load()))
        self.alias_button.on_click(guard(lambda _: self.set_alias()))
        self.edit_button.on_click(guard(lambda _: self.save_edits()))
        self.delete_button.on_click(guard(lambda _: self._ask_delete()))
        self.confirm_button.on_click(guard(lambda _: self.delete()))
        self.cancel_button.on_click(guard(lambda _: self._cancel_delete()))
        self.compare_with.observe(guard(self._on_compare), names="value")
        self.status = label("", "jc-models-status")

        x_scale, y_scale = bq.LinearScale(), bq.LinearScale()
        self._scales = {"x": x_scale, "y": y_scale}
        self.curves = bq.Figure(
            title="Stored history",
            marks=[],
            axes=[
                bq.Axis(scale=x_scale, label="epoch", grid_lines="dashed"),
                bq.Axis(scale=y_scale, orientation="vertical", label="accuracy", grid_lines="dashed"),
            ],
            legend_location="bottom-right",
            layout=w.Layout(width="100%", height="280px"),
            fig_margin={"top": 40, "bottom": 40, "left": 50, "right": 10},
            animation_duration=0,
        )
        self.curves.add_class("jc-models-curves")
        self.detail_box = w.VBox(
            [
                self.details,
                self.notes_view,
                self.download,
                w.HBox([self.load_button, self.alias, self.alias_button]),
                w.HBox([self.tags, self.edit_button]),
                self.notes,
                w.HBox([self.delete_button, self.confirm_box]),
                self.compare_with,
                self.curves,
            ],
            layout=w.Layout(display="none"),
        )
        session.observe(lambda _: self.refresh(), names="store_changed")
        self.children = [
            w.HBox([self.search, self.sort, self.refresh_button]),
            self.table,
            w.HBox([self.prev_button, self.page_label, self.next_button]),
            self.selected_label,
            self.detail_box,
            self.status,
            self.errors,
        ]
        self.add_class("jc-models")

    # -- the list --------------------------------------------------------------------------------
    def refresh(self, reset: bool = False) -> threading.Thread:
        if reset:
            self.offset = 0
        query = {"search": self.search.value or None, "sort": self.sort.value, "limit": PAGE_SIZE}
        session = self.session
        offset = self.offset
        self.page_label.value = "loading…"

        def work() -> Page:
            with self._refresh_lock:
                return session.store().list(offset=offset, **query)

        return in_background(work, done=self._show_page, errors=self.errors, busy=[self.refresh_button])

    def turn(self, step: int) -> None:
        self.offset = max(0, self.offset + step * PAGE_SIZE)
        self.refresh()

    def _show_page(self, page: Page) -> None:
        self.page = page
        cells: list[w.Widget] = [label(title, "jc-models-head") for title in COLUMNS]
        for header in cells:
            header.style.font_weight = "bold"
        for record in page.items:
            row = button(record.ref, "jc-models-row", tooltip=f"show {record.ref}")
            row.layout = w.Layout(width="auto")
            row.on_click(guarded(self.errors)(lambda _, r=record: self.select(r)))
            cells.append(row)
            cells.extend(label(text) for text in _row_cells(record))
        self.table.children = cells
        if page.total:
            self.page_label.value = f"{page.offset + 1}-{page.offset + len(page.items)} of {page.total}"
        else:
            self.page_label.value = "no models in the store yet: train one and save it"
        self.prev_button.disabled = page.offset == 0
        self.next_button.disabled = page.offset + len(page.items) >= page.total
        self.compare_with.options = [("-", ""), *((r.ref, r.ref) for r in page.items)]

    # -- one version -----------------------------------------------------------------------------
    def select(self, record: ModelRecord) -> None:
        self.selected = record
        self.selected_label.value = f"selected: {record.ref}"
        self.details.value = text_html(*_facts(record))
        self.notes_view.value = record.notes or "(no notes)"
        self.tags.value = ", ".join(f"{k}={v}" for k, v in record.tags.items())
        self.notes.value = record.notes
        href = download_href(record.ref)
        self.download.value = (
            f'<a href="{html.escape(href)}" download class="{" ".join(NO_MATH)}">'
            f"Download {html.escape(record.ref)}.keras</a>"
            if href
            else ""
        )
        self._cancel_delete()
        self.detail_box.layout.display = None
        self._draw_curves()

    def _on_compare(self, change: dict[str, Any]) -> None:
        ref = change["new"]
        if not ref:
            self.compare = None
            self._draw_curves()
            return
        session = self.session
        in_background(lambda: session.store().resolve(ref), done=self._set_compare, errors=self.errors)

    def _set_compare(self, record: ModelRecord) -> None:
        self.compare = record
        self._draw_curves()

    def _draw_curves(self) -> None:
        marks = []
        records = [r for r in (self.selected, self.compare) if r is not None]
        for i, record in enumerate(records):
            for j, (key, dashed) in enumerate((("accuracy", False), ("val_accuracy", True))):
                points = _points(record.metadata.get("history"), key)
                if not points:
                    continue
                xs, ys = zip(*points, strict=True)
                marks.append(
                    bq.Lines(
                        x=list(xs),
                        y=list(ys),
                        scales=self._scales,
                        colors=[COLORS[(2 * i + j) % len(COLORS)]],
                        line_style="dashed" if dashed else "solid",
                        marker="circle",
                        marker_size=16,
                        labels=[f"{record.ref} {key.replace('_', ' ')}"],
                        display_legend=True,
                    )
                )
        self.curves.marks = marks
        self.curves.title = (
            "Stored history (accuracy per epoch)" if marks else "no stored history for this version"
        )

    def _require_selected(self) -> ModelRecord:
        if self.selected is None:
            raise RuntimeError("select a version first")
        return self.selected

    def load(self) -> threading.Thread:
        record = self._require_selected()
        session = self.session
        self.status.value = f"loading {record.ref}…"

        def done(model: Any) -> None:
            session.set_model(model, record=record)
            self.status.value = f"loaded {record.ref}: classify with it, or continue training it"

        return in_background(
            lambda: session.store().load(record.ref), done=done, errors=self.errors, busy=[self.load_button]
        )

    def set_alias(self) -> threading.Thread:
        record = self._require_selected()
        alias = self.alias.value.strip()
        session = self.session
        return in_background(
            lambda: session.store().set_alias(record.ref, alias),
            done=self._after_change,
            errors=self.errors,
            busy=[self.alias_button],
        )

    def save_edits(self) -> threading.Thread:
        record = self._require_selected()
        wanted = parse_tags(self.tags.value)
        removed: dict[str, str | None] = {k: None for k in record.tags if k not in wanted}
        notes = self.notes.value
        store = self.session.store

        def work() -> ModelRecord:
            store().set_tags(record.ref, {**removed, **wanted})
            return store().set_notes(record.ref, notes)

        return in_background(work, done=self._after_change, errors=self.errors, busy=[self.edit_button])

    def _after_change(self, record: ModelRecord) -> None:
        self.select(record)
        self.status.value = f"updated {record.ref}"
        self.session.notify_store_changed()

    def _ask_delete(self) -> None:
        record = self._require_selected()
        self.confirm_button.description = f"Really delete {record.ref}"
        self.confirm_box.layout.display = None

    def _cancel_delete(self) -> None:
        self.confirm_box.layout.display = "none"

    def delete(self) -> threading.Thread:
        record = self._require_selected()
        session = self.session

        def done(deleted: ModelRecord) -> None:
            self.selected = None
            self.detail_box.layout.display = "none"
            self.selected_label.value = f"deleted {deleted.ref}"
            session.notify_store_changed()

        self._cancel_delete()
        return in_background(
            lambda: session.store().delete(record.ref),
            done=done,
            errors=self.errors,
            busy=[self.confirm_button],
        )
