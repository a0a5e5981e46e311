"""What a stored version's record says, as people read it: its facts table, its row in the list, its
summary for comparing versions side by side, the points of its stored curves.

Metadata comes from whoever saved the version (any JSON through the API): a field of an unexpected type
is shown as the text it is, never trusted to be a mapping or a list, and every piece is escaped.
"""

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING, Any

from ..engine.history import epoch_ends, epochs_done, epochs_text
from ..engine.precision import kernels_text, machine_text
from ..engine.views import DEFAULT_PLAN, plan_from_json
from ..store.records import ModelRecord
from .common import NO_MATH

if TYPE_CHECKING:
    from ..photos.finetune import PhotoEvaluation


def version_facts(record: ModelRecord) -> list[tuple[str, str]]:
    """The version's details as (key, value) rows, from its record and whatever its metadata holds.

    Metadata comes from whoever saved the version (any JSON through the API): a field of an unexpected
    type is shown as the text it is, never trusted to be a mapping or a list. Tags and notes are not
    here: they are shown once, where they are edited.
    """
    meta = record.metadata
    hyper = meta.get("hyperparameters")
    history = meta.get("history")
    dataset = _of(meta.get("dataset"), dict) or {}
    facts = [("version", record.ref)]
    if record.aliases:
        facts.append(("aliases", ", ".join(sorted(record.aliases))))
    facts += [
        ("created", f"{record.created[:19].replace('T', ' ')} UTC by {meta.get('saved_by', '?')}"),
        ("size", size_text(record.size)),
    ]
    if record.test_accuracy is not None:
        facts.append(("test accuracy", f"{record.test_accuracy:.4f}"))
    facts.append(("architecture", _text(meta.get("architecture", "?"))))
    if meta.get("preset"):
        facts.append(("preset", _text(meta["preset"])))
    if isinstance(history, list) and history:
        facts.append(("epochs of training", epochs_text(epochs_done(history))))
    elif meta.get("preset"):
        facts.append(("epochs of training", epochs_text(0)))
    if isinstance(hyper, dict):
        if meta.get("precision"):  # what "auto" resolved to (older records keep only the setting)
            hyper = {**hyper, "precision": meta["precision"]}
        facts.append(("last run", ", ".join(f"{k} {v}" for k, v in hyper.items() if v is not None)))
    elif hyper:
        facts.append(("hyperparameters", _text(hyper)))
    if meta.get("machine"):
        facts.append(("last run on", machine_text(meta["machine"])))
    if meta.get("kernels"):
        facts.append(("3x3 convolutions' kernels", kernels_text(meta["kernels"])))
    if dataset.get("n_train") is not None:
        facts.append(("training images", _text(dataset["n_train"], ",")))
    if meta.get("parameters") is not None:
        facts.append(("parameters", _text(meta["parameters"], ",")))
    if meta.get("input_shape") is not None:
        shape = meta["input_shape"]
        shown = "x".join(map(str, shape)) if isinstance(shape, list) else _text(shape)
        facts.append(("input", shown))
    for key, title in (("input_scaling", "input scaling"), ("imported_from", "imported from")):
        if meta.get(key):
            facts.append((title, _text(meta[key])))
    if meta.get("parent"):
        facts.append(("continued from", _text(meta["parent"])))
    facts += _finetune_facts(meta.get("finetune"))
    if meta.get("views") is not None:
        facts.append(("photos seen through", _views_text(meta["views"])))
    facts.append(("sha256", f"{record.sha256[:16]}…"))
    return facts


def _finetune_facts(finetune: Any) -> list[tuple[str, str]]:
    """What a fine-tuning measured (``metadata["finetune"]``, see photos.finetune): the photos it used,
    accuracy before → after on the held-out photos and on the test set, and the negative flips."""
    if finetune is None:
        return []
    if not isinstance(finetune, dict):
        return [("fine-tuned", _text(finetune))]
    before: dict[str, Any] = _of(finetune.get("before"), dict) or {}
    after: dict[str, Any] = _of(finetune.get("after"), dict) or {}
    facts = [
        (
            "fine-tuned on",
            f"{_text(finetune.get('photos'))} ({_text(finetune.get('photos_used'), ',')} photos trained on, "
            f"{_text(finetune.get('held_out'), ',')} held out)",
        ),
        (
            "photos: before → after",
            f"{_text(before.get('photos'), '.4f')} → {_text(after.get('photos'), '.4f')}",
        ),
        ("test: before → after", f"{_text(before.get('test'), '.4f')} → {_text(after.get('test'), '.4f')}"),
    ]
    flips = finetune.get("negative_flips")
    if flips is not None:
        facts.append(("negative flips", f"{_text(flips, ',')} test images right before, wrong after"))
    views: dict[str, Any] = _of(finetune.get("views"), dict) or {}
    if views.get("chosen") is not None and views.get("before_photos") is not None:
        facts.append((
            "photos: its views, before",
            f"{_text(views.get('before_photos'), '.4f')} (the parent through the views chosen, "
            f"{_text(views.get('chosen'))}, on the {_text(views.get('chosen_on'), ',')} photos trained on)",
        ))  # fmt: skip
    return facts


def _views_text(views: Any) -> str:
    """A version's view plan (``metadata["views"]``) in words, or what is wrong with it."""
    plan = plan_from_json(views)
    if plan is None:
        return f"the default views ({DEFAULT_PLAN.describe()}); its own are not a view plan: {_text(views)}"
    return plan.describe()


def table_html(rows: list[tuple[str, str]]) -> str:
    """``HTML`` widget markup of a two-column key/value table (keys bold and grey), every piece escaped
    and untouched by MathJax. Built of ``div`` and ``span`` (a CSS grid), like the app's other markup."""
    key = "font-weight:bold;color:#666;white-space:nowrap"
    value = "overflow-wrap:anywhere"
    cells = "".join(
        f'<span style="{key}">{html.escape(k)}</span><span style="{value}">{html.escape(v)}</span>'
        for k, v in rows
    )
    grid = "display:grid;grid-template-columns:max-content minmax(0,1fr);gap:2px 14px;line-height:1.4"
    return f'<div class="{" ".join(NO_MATH)}" style="{grid}">{cells}</div>'


def photos_text(name: str, result: PhotoEvaluation, record: ModelRecord) -> str:
    """ "accuracy on my-photos: 0.4300 (700 photos) — test set: 0.7866"."""
    ev = result.evaluation
    skipped = f"; {len(result.skipped)} could not be read" if result.skipped else ""
    test = "not recorded" if record.test_accuracy is None else f"{record.test_accuracy:.4f}"
    return f"accuracy on {name}: {ev.accuracy:.4f} ({photos_count(ev.n)}{skipped}) — test set: {test}"


def photos_count(n: int) -> str:
    """ "1 photo", "1,200 photos"."""
    return f"{n:,} photo" + ("" if n == 1 else "s")


def history_points(history: Any, key: str) -> list[tuple[float, float]]:
    """(epochs of training, value) of a stored history, skipping any entry that is not numbers; each
    row is drawn where it ended (a stopped run's last row at 1.53, say), as the Train tab draws it."""
    if not isinstance(history, list):
        return []
    points = []
    for x, entry in zip(epoch_ends(history), history, strict=True):
        y = _number(entry.get(key)) if isinstance(entry, dict) else None
        if y is not None:
            points.append((x, y))
    return points


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def row_cells(record: ModelRecord) -> list[str]:
    return [
        ", ".join(record.aliases),
        ", ".join(f"{k}={v}" for k, v in record.tags.items()),
        "" if record.test_accuracy is None else f"{record.test_accuracy:.4f}",
        record.created[:19].replace("T", " "),
        size_text(record.size),
    ]


def size_text(size: int) -> str:
    """1.5 MB, 24 KB, 800 bytes."""
    if size >= 1e6:
        return f"{size / 1e6:.1f} MB"
    return f"{size / 1e3:.0f} KB" if size >= 1e3 else f"{size} bytes"


def summary(record: ModelRecord) -> dict[str, str]:
    """A version's settings and results as text, for comparing two side by side (as MLflow does)."""
    meta = record.metadata
    hyper: dict[str, Any] = _of(meta.get("hyperparameters"), dict) or {}
    dataset: dict[str, Any] = _of(meta.get("dataset"), dict) or {}
    history: list[Any] = _of(meta.get("history"), list) or []
    val = [y for _, y in history_points(history, "val_accuracy")]
    seconds = meta.get("seconds")
    return {
        "preset": _text(meta.get("preset")),
        "epochs of training": epochs_text(epochs_done(history)) if history else "-",
        "batch size": _text(hyper.get("batch_size")),
        "learning rate": _text(hyper.get("learning_rate"), "g"),
        "seed": _text(hyper.get("seed")),
        "precision": _text(meta.get("precision") or hyper.get("precision")),  # older records: as asked
        "training images": _text(dataset.get("n_train"), ","),
        "test accuracy": _text(record.test_accuracy, ".4f"),
        "best validation accuracy": _text(max(val) if val else None, ".4f"),
        "training time": "-" if seconds is None else _text(seconds, ".0f") + " s",
        "images/s": _text(meta.get("images_per_second"), ",.0f"),
        "last run on": machine_text(meta["machine"]) if meta.get("machine") else "-",
        "continued from": _text(meta.get("parent")),
        "created (UTC)": record.created[:19].replace("T", " "),
        "size": size_text(record.size),
    }


def _text(value: Any, fmt: str = "") -> str:
    """A metadata value as text: a number in ``fmt``, anything else as the text it is ("-" for none)."""
    if value is None or value == "":
        return "-"
    if fmt and isinstance(value, int | float) and not isinstance(value, bool):
        return format(value, fmt)
    return str(value)


def _of(value: Any, kind: type) -> Any:
    """``value`` if it is of ``kind`` (metadata is whatever JSON its saver sent), else None."""
    return value if isinstance(value, kind) else None
