"""The Models tab: the store's versions with search, sort and paging; one version's details and curves;
load it into this kernel, set an alias, edit tags and notes, delete (with a confirmation), download.

A version's details are a table of what its record and metadata say (:mod:`.facts`; a fine-tuned
version's before and after too), and its accuracy on one of the store's photo sets
(:mod:`jupyter_cifar.photos`) is measured on request, beside its test accuracy.

Everything that comes from the store (names, tags, notes, metadata, photo sets) is shown as text, never
as HTML: escaped, in elements MathJax leaves alone.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import bqplot as bq
import ipywidgets as w

from ..engine.views import stored_plan
from ..store.records import ModelRecord, Page
from .common import (
    ErrorArea,
    button,
    epoch_ticks,
    epochs_figure,
    epochs_scales,
    guarded,
    in_background,
    label,
    legend_html,
    parse_tags,
    row_layout,
    text_html,
)
from .downloads import DownloadBox
from .facts import history_points, photos_count, photos_text, row_cells, summary, table_html, version_facts
from .session import Session

if TYPE_CHECKING:
    import keras

    from ..photos.finetune import PhotoEvaluation

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


NO_PHOTO_SETS = "no photo sets yet: correct a wrong answer in the Classify tab, or `jupyter cifar photos add`"


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
        self._debounce: threading.Timer | None = None

        self.search = w.Text(
            placeholder="names and notes", description="Search", layout=w.Layout(width="260px")
        )
        self.search.add_class("jc-models-search")
        self.tag_filter = w.Text(
            placeholder="key=value, …", description="Tags", layout=w.Layout(width="220px")
        )
        self.tag_filter.add_class("jc-models-tag-filter")
        self.sort = w.Dropdown(
            options=SORTS, value="-created", description="Sort", layout=w.Layout(width="240px")
        )
        self.refresh_button = button("Refresh", "jc-models-refresh", icon="refresh")
        self.prev_button = button("<", "jc-models-prev", tooltip="previous page")
        self.next_button = button(">", "jc-models-next", tooltip="next page")
        self.page_label = label("", "jc-models-page")
        self.table = w.GridBox(
            layout=w.Layout(grid_template_columns="minmax(140px, auto) repeat(5, auto)", grid_gap="2px 12px")
        )
        self.table.add_class("jc-models-table")
        self._heads = [label(title, "jc-models-head") for title in COLUMNS]
        for header in self._heads:
            header.style.font_weight = "bold"
        self._rows: dict[str, tuple[tuple[str, ...], list[w.Widget]]] = {}  # by ref: its text, its widgets
        self._shown: dict[str, ModelRecord] = {}  # by ref: the record its row selects
        self._page_lock = threading.Lock()
        guard = guarded(self.errors)
        for box in (self.search, self.tag_filter):  # search as you type, once typing pauses
            box.observe(guard(lambda _: self._refresh_soon()), names="value")
        self.sort.observe(guard(lambda _: self.refresh(reset=True)), names="value")
        self.refresh_button.on_click(guard(lambda _: self._refresh_all()))
        self.prev_button.on_click(guard(lambda _: self.turn(-1)))
        self.next_button.on_click(guard(lambda _: self.turn(1)))

        # The selected version.
        self.selected_label = label("select a version above", "jc-models-selected")
        self.details = w.HTML()  # table_html: key/value rows, escaped
        self.details.add_class("jc-models-details")
        # Its accuracy on a photo set of the store, measured on request.
        self.photo_sets = w.Dropdown(
            options=[], description="Photo set", layout=w.Layout(width="280px", display="none")
        )
        self.photo_sets.add_class("jc-models-photo-set")
        self.photos_button = button(
            "Accuracy on photos",
            "jc-models-photos",
            icon="check",
            tooltip="load this version and measure its accuracy on the photo set",
        )
        self.photos_button.layout.width = "auto"
        self.photos_button.disabled = True  # until the store's photo sets are known
        self.photos_hint = label("", "jc-models-photos-hint")
        self.photos_result = label("", "jc-models-photos-result")
        for widget in (self.photos_hint, self.photos_result):
            widget.add_class("jc-wrap")
        self._photo_sets_asked = 0  # the latest listing asked for: an older answer is not shown
        self.photos_button.on_click(guard(lambda _: self.evaluate_on_photos()))
        self.downloads = DownloadBox(session, self.errors)
        self.load_button = button("Load into this kernel", "jc-models-load", style="primary", icon="upload")
        self.load_button.layout.width = "auto"
        self.alias = w.Text(placeholder="alias, e.g. prod", layout=w.Layout(width="180px"))
        self.alias_button = button("Set alias", "jc-models-alias")
        self.tags = w.Text(
            placeholder="key=value, key=value", description="Tags", layout=w.Layout(width="360px")
        )
        self.notes = w.Textarea(placeholder="notes", description="Notes", layout=w.Layout(width="460px"))
        self.notes.add_class("jc-models-notes")
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
        self.comparison = w.GridBox(
            layout=w.Layout(grid_template_columns="auto auto auto", grid_gap="2px 16px", margin="6px 0")
        )
        self.comparison.add_class("jc-models-comparison")

        self.loss_curves, self._loss_scales = _history_figure("loss", "jc-models-loss")
        self.curves, self._scales = _history_figure("accuracy", "jc-models-curves")
        # Added on the first selection, once the details are visible (see TrainPanel.show).
        self.figures = w.HBox([], layout=w.Layout(width="100%", overflow="hidden"))
        self.legend = w.HTML()
        self.legend.add_class("jc-models-legend")
        self.detail_box = w.VBox(
            [
                self.details,
                w.HBox(
                    [self.photo_sets, self.photos_button, self.photos_hint, self.photos_result],
                    layout=_centred_row(),
                ),
                self.downloads,
                w.HBox([self.load_button, self.alias, self.alias_button], layout=_centred_row()),
                w.HBox([self.tags, self.edit_button], layout=_centred_row()),
                self.notes,
                w.HBox([self.delete_button, self.confirm_box], layout=_centred_row()),
                self.status,
                self.compare_with,
                self.comparison,
                self.figures,
                self.legend,
            ],
            layout=w.Layout(display="none"),
        )
        session.observe(lambda _: self._store_changed(), names="store_changed")
        session.observe(lambda _: self._photos_changed(), names="photos_changed")
        self.children = [
            w.HBox([self.search, self.tag_filter, self.sort, self.refresh_button], layout=_centred_row()),
            self.table,
            w.HBox([self.prev_button, self.page_label, self.next_button]),
            self.selected_label,
            self.detail_box,
            self.errors,
        ]
        self.add_class("jc-models")

    def _store_changed(self) -> None:
        self.refresh()
        self._photos_changed()

    def _photos_changed(self) -> None:
        if self.selected is not None:  # the photo sets are listed once a version is shown
            self.refresh_photo_sets()

    def _refresh_all(self) -> None:
        self.refresh()
        self._photos_changed()

    # -- the list --------------------------------------------------------------------------------
    def _filters(self) -> dict[str, Any]:
        return {"search": self.search.value or None, "tags": parse_tags(self.tag_filter.value)}

    def _refresh_soon(self, delay: float = 0.3) -> None:
        """Search as you type: refresh once typing pauses for ``delay`` seconds."""
        if self._debounce is not None:
            self._debounce.cancel()
        self._debounce = threading.Timer(delay, guarded(self.errors)(lambda: self.refresh(reset=True)))
        self._debounce.daemon = True
        self._debounce.start()

    def refresh(self, reset: bool = False) -> threading.Thread:
        if reset:
            self.offset = 0
        query = {**self._filters(), "sort": self.sort.value, "limit": PAGE_SIZE}
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
        with self._page_lock:  # two refreshes' answers (a search, a store change) come in threads
            self._show_rows(page)
        filters = self._filters()
        if page.total:
            self.page_label.value = f"{page.offset + 1}-{page.offset + len(page.items)} of {page.total}"
        elif filters["search"] or filters["tags"]:
            wanted = [f"“{filters['search']}”"] if filters["search"] else []
            wanted += [f"{k}={v}" for k, v in filters["tags"].items()]
            self.page_label.value = f"no version matches {' and '.join(wanted)}"
        else:
            self.page_label.value = "no models in the store yet: train one and save it"
        self.prev_button.disabled = page.offset == 0
        self.next_button.disabled = page.offset + len(page.items) >= page.total
        self.compare_with.options = [("-", ""), *((r.ref, r.ref) for r in page.items)]
        self.page = page  # last: the page is shown whole once this is set

    def _show_rows(self, page: Page) -> None:
        """The page's rows in the table. A row whose text is unchanged keeps its widgets, so a refresh
        that finds the same versions changes nothing on the page, and a click made meanwhile still lands
        on its row; the rows that left are closed."""
        self._shown = {record.ref: record for record in page.items}  # a click selects the latest answer
        rows = {record.ref: self._row(record) for record in page.items}
        for ref, (_, widgets) in self._rows.items():
            if rows.get(ref, (None, None))[1] is not widgets:
                for widget in widgets:
                    widget.close()
        self._rows = rows
        self.table.children = [*self._heads, *(cell for _, widgets in rows.values() for cell in widgets)]

    def _row(self, record: ModelRecord) -> tuple[tuple[str, ...], list[w.Widget]]:
        """The row's text and its widgets: the shown ones where the text is the same."""
        text = (record.ref, *row_cells(record))
        shown = self._rows.get(record.ref)
        if shown is not None and shown[0] == text:
            return shown
        row = button(record.ref, "jc-models-row", tooltip=f"show {record.ref}")
        row.layout = w.Layout(width="auto")
        row.on_click(guarded(self.errors)(lambda _, ref=record.ref: self.select(self._shown[ref])))
        return text, [row, *(label(cell) for cell in text[1:])]

    # -- one version -----------------------------------------------------------------------------
    def select(self, record: ModelRecord) -> None:
        self.selected = record
        self.details.value = table_html(version_facts(record))
        self.tags.value = ", ".join(f"{k}={v}" for k, v in record.tags.items())
        self.notes.value = record.notes
        self.alias.value = ""  # an alias typed for another version must not move with one click
        self.status.value = ""
        self.photos_result.value = ""  # another version's accuracy must not stay beside this one
        self.downloads.show(record)
        self._cancel_delete()
        self.detail_box.layout.display = None
        # After the facts: a page (or a test) that sees this label sees this version's facts beside it.
        self.selected_label.value = f"selected: {record.ref}"
        self._draw_curves()
        self.refresh_photo_sets()

    @property
    def notes_view(self) -> w.Textarea:
        """The version's notes (shown once, where they are edited)."""
        return self.notes

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
        """Loss and accuracy of the selected version (and the one compared with), per epoch of training,
        on the Train tab's scales; a legend below; and the two side by side as a table."""
        records = [r for r in (self.selected, self.compare) if r is not None]
        legend: list[tuple[str, str, str]] = []
        for figure, scales, metric in (
            (self.loss_curves, self._loss_scales, "loss"),
            (self.curves, self._scales, "accuracy"),
        ):
            marks = []
            epochs: list[float] = []
            for i, record in enumerate(records):
                for key, dashed in ((metric, False), (f"val_{metric}", True)):
                    points = history_points(record.metadata.get("history"), key)
                    if not points:
                        continue
                    xs, ys = zip(*points, strict=True)
                    epochs += xs
                    colour = COLORS[i % len(COLORS)]
                    name = f"{record.ref} {key.replace('_', ' ')}"
                    marks.append(
                        bq.Lines(
                            x=list(xs),
                            y=list(ys),
                            scales=scales,
                            colors=[colour],
                            line_style="dashed" if dashed else "solid",
                            marker="circle",
                            marker_size=16,
                            labels=[name],
                        )
                    )
                    if metric == "accuracy":
                        which = "validation" if dashed else "training"
                        legend.append((colour, "dashed" if dashed else "solid", f"{record.ref} {which}"))
            figure.marks = marks
            figure.axes[0].tick_values = epoch_ticks(epochs)
            figure.title = f"Stored history: {metric}"
        self.figures.layout.display = None if legend else "none"  # no empty axes for a history it lacks
        if legend and not self.figures.children:
            self.figures.children = [self.loss_curves, self.curves]
        self.legend.value = legend_html(legend) if legend else text_html("no training history stored with it")
        self._compare_table(records)

    def _compare_table(self, records: list[ModelRecord]) -> None:
        if len(records) < 2:
            self.comparison.children = []
            return
        summaries = [summary(r) for r in records]
        cells: list[w.Widget] = [label(""), *(label(r.ref, "jc-models-compare-head") for r in records)]
        for header in cells:
            header.style.font_weight = "bold"
        for key in summaries[0]:
            values = [s[key] for s in summaries]
            cells.append(label(key))
            for value in values:
                cell = label(value)
                if len(set(values)) > 1:
                    cell.style.font_weight = "bold"  # where the two differ
                cells.append(cell)
        self.comparison.children = cells

    def _require_selected(self) -> ModelRecord:
        if self.selected is None:
            raise RuntimeError("select a version first")
        return self.selected

    def _load_model(self, record: ModelRecord) -> keras.Model:
        """The version's model, loaded from the store (call it in a background thread)."""
        return self.session.store().load(record.ref)

    def load(self) -> threading.Thread:
        record = self._require_selected()
        session = self.session
        self.status.value = f"loading {record.ref}…"

        def done(model: Any) -> None:
            session.set_model(model, record=record)
            self.status.value = f"loaded {record.ref}: classify with it, or continue training it"

        return in_background(
            lambda: self._load_model(record), done=done, errors=self.errors, busy=[self.load_button]
        )

    # -- its accuracy on a photo set -------------------------------------------------------------
    def refresh_photo_sets(self) -> threading.Thread:
        """List the store's photo sets (in the background) into the dropdown, with their counts."""
        from ..errors import BadParameter

        self._photo_sets_asked += 1
        asked, session = self._photo_sets_asked, self.session

        def work() -> list[dict[str, Any]] | str:
            try:
                return session.photos().sets()
            except BadParameter as e:  # a kind of store that keeps no photos: said in place, not an error
                return str(e).removeprefix("--store: ")

        def done(found: list[dict[str, Any]] | str) -> None:
            if asked == self._photo_sets_asked:
                self._show_photo_sets(found)

        return in_background(work, done=done, errors=self.errors)

    def _show_photo_sets(self, found: list[dict[str, Any]] | str) -> None:
        sets = found if isinstance(found, list) else []
        hint = found if isinstance(found, str) else "" if sets else NO_PHOTO_SETS
        wanted = self.photo_sets.value or self.session.photo_set
        with self.hold_sync():
            self.photo_sets.options = [(f"{s['name']} ({photos_count(s['count'])})", s["name"]) for s in sets]
            names = [s["name"] for s in sets]
            if names:
                self.photo_sets.value = wanted if wanted in names else names[0]
            self.photo_sets.layout.display = None if sets else "none"
            self.photos_button.layout.display = None if sets else "none"
            self.photos_button.disabled = not sets
            self.photos_hint.value = hint
            self.photos_hint.layout.display = "none" if sets else None

    def evaluate_on_photos(self) -> threading.Thread:
        """Load the selected version and measure its accuracy on the chosen photo set (in the background):
        "accuracy on my-photos: 0.4300 (700 photos) — test set: 0.7866" beside the button."""
        from ..photos.finetune import evaluate_photos
        from ..photos.labelled import set_photos

        record = self._require_selected()
        name = self.photo_sets.value
        if not name:
            raise RuntimeError(NO_PHOTO_SETS)
        session = self.session
        self.photos_result.value = f"loading {record.ref} and measuring it on {name}…"

        def work() -> PhotoEvaluation:
            try:
                photos = set_photos(session.photos(), name)
                return evaluate_photos(self._load_model(record), photos, plan=stored_plan(record.metadata))
            except BaseException:
                self.photos_result.value = ""  # the error says what happened
                raise

        def done(result: PhotoEvaluation) -> None:
            if self.selected is not None and self.selected.ref == record.ref:
                self.photos_result.value = photos_text(name, result, record)

        return in_background(work, done=done, errors=self.errors, busy=[self.photos_button, self.photo_sets])

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


def _history_figure(metric: str, cls: str) -> tuple[bq.Figure, dict[str, Any]]:
    """A stored history's figure, on the Train tab's scales (accuracy from 0 to 100 %)."""
    scales = epochs_scales(metric)
    title = f"Stored history: {metric}"
    return epochs_figure(title, metric, cls, [], scales, height="260px", min_width="280px"), scales


def _centred_row() -> w.Layout:
    return row_layout(align_items="center")
