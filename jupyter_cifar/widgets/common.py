"""Small pieces the tabs share: showing text safely, errors in place, work off the kernel's main thread.

Much of what the app shows comes from other people: model names, tags, notes and training metadata in a
shared store, the names of uploaded files. It is always shown as the text it is. A ``Label`` is drawn as
text, but the front end then typesets any TeX in it with MathJax (so would an ``HTML`` widget), which would
turn ``$…$`` into formulas, styles and links: :data:`NO_MATH` marks an element MathJax skips (class names
of MathJax 3, which JupyterLab uses, and of MathJax 2). ``HTML`` values are built only by
:func:`text_html`, which escapes every piece.
"""

from __future__ import annotations

import html
import logging
import math
import threading
import traceback
from collections.abc import Callable
from typing import Any

import ipywidgets as w

from ..errors import JupyterCifarError

log = logging.getLogger(__name__)

#: Classes that make MathJax leave an element's text alone.
NO_MATH = ("mathjax_ignore", "tex2jax_ignore")

#: The app's own styles, scoped to it: text that must wrap rather than be cut at its box (an error, a
#: file name, a status line), and errors and verdicts in colour. Labels stay text (see above); only their
#: box changes.
STYLE = """<style>
.jc-app .widget-label.jc-wrap, .jc-app .widget-label.jc-classify-error,
.jc-app .widget-label.jc-classify-file, .jc-app .widget-label.jc-train-status,
.jc-app .widget-label.jc-train-name-hint, .jc-app .widget-label.jc-classify-model,
.jc-app .widget-label.jc-classify-by, .jc-app .widget-label.jc-models-page,
.jc-app .widget-label.jc-train-job-note {
  white-space: normal; overflow-wrap: anywhere; height: auto; line-height: 1.4;
}
.jc-app .jc-classify-error, .jc-app .jc-train-name-hint, .jc-app .jc-classify-wrong { color: #b00020; }
.jc-app .jc-classify-right { color: #1b7e1b; }
.jc-app .jc-train-continue-note, .jc-app .jc-train-preset-info { font-size: 12px; line-height: 1.4; }
.jc-app .jc-models-curves, .jc-app .jc-models-loss { box-sizing: border-box; }
.jc-app .jc-job { border-bottom: 1px solid #e0e0e0; }
.jc-app .jc-job-selected { background: #e8f1fb; }
.jc-app .jc-job .widget-html-content { line-height: 1.3; }
</style>"""


def text_html(*lines: str, title: str = "") -> str:
    """``HTML`` widget markup that shows each line as escaped text, untouched by MathJax; ``title``: the
    text a pointer resting on it shows (an ``HTML`` widget's own ``tooltip`` goes to its description's
    label, hidden where it has none)."""
    body = "<br>".join(html.escape(line) for line in lines)
    hover = f' title="{html.escape(title)}"' if title else ""
    return f'<div class="{" ".join(NO_MATH)}"{hover}>{body}</div>'


def epochs_figure(
    title: str, metric: str, cls: str, marks: list[Any], scales: dict[str, Any], height: str, min_width: str
) -> Any:
    """A figure of a metric per epoch of training, on the scales every tab uses (accuracy 0-100 %)."""
    import bqplot as bq

    accuracy = metric == "accuracy"
    figure = bq.Figure(
        title=title,
        marks=marks,
        axes=[
            # Significant digits, trailing zeros trimmed (d3-format's "~"), not fixed decimals: 0.25 and
            # 1.2 epochs; a loss that has barely moved reads 2.333, 2.335, not a column of equal 2.33. (No
            # format at all would let d3 pick, and its pick fails on a one-point domain; bqplot's num_ticks
            # spaces ticks evenly, at 0.241, 0.445, ... instead of d3's round numbers.)
            bq.Axis(scale=scales["x"], label="epochs of training", grid_lines="dashed", tick_format=".3~r"),
            bq.Axis(
                scale=scales["y"],
                side="left",
                label=metric,
                grid_lines="dashed",
                tick_format=".0%" if accuracy else ".4~r",
                label_offset="48px",  # beyond the widest tick ("2.335")
            ),
        ],
        layout=w.Layout(width="50%", height=height, min_width=min_width),
        fig_margin={"top": 40, "bottom": 40, "left": 62, "right": 10},
        animation_duration=0,
    )
    figure.add_class(cls)
    return figure


def epoch_ticks(epochs: list[float], most: int = 8) -> list[int] | None:
    """Whole epochs to tick on an axis of these points, at most ``most`` of them, every 1, 2 or 5 (times a
    power of ten) epochs; None, leaving the ticks to d3, where the points span less than one whole epoch
    (a short run's 0.25, 0.5). A stored history ends its rows at whole epochs: d3's own ticks put 1.1,
    1.2, ... between them."""
    if not epochs:
        return None
    low, high = math.ceil(min(epochs)), math.floor(max(epochs))
    if high <= low:
        return None
    step = next(s * 10**k for k in range(12) for s in (1, 2, 5) if (high - low) // (s * 10**k) < most)
    return list(range(-(-low // step) * step, high + 1, step))


def epochs_scales(metric: str) -> dict[str, Any]:
    """x: epochs; y: the metric, accuracy on fixed bounds (0 to 1), as fastai draws it: a curve's rise is
    honest from the start."""
    import bqplot as bq

    return {
        "x": bq.LinearScale(),
        "y": bq.LinearScale(min=0, max=1) if metric == "accuracy" else bq.LinearScale(),
    }


def legend_html(items: list[tuple[str, str, str]]) -> str:
    """A legend drawn below a figure (bqplot's own sits on the data): ``(colour, line, text)`` items,
    ``line`` one of ``solid``, ``dashed`` or ``dot`` (a marker)."""
    shown = []
    for colour, line, text in items:
        if line == "dot":
            sample = f'<span style="color:{colour}">●</span>'
        else:
            style = f"border-top:2px {line} {colour};width:24px;display:inline-block;vertical-align:middle"
            sample = f'<span style="{style}"></span>'
        shown.append(f'<span style="white-space:nowrap">{sample} {html.escape(text)}</span>')
    return f'<div class="{" ".join(NO_MATH)}" style="font-size:12px">{"&emsp;".join(shown)}</div>'


def gradient_html(low: str, high: str, left: str, right: str) -> str:
    """A colour scale drawn as a bar from ``low`` to ``high`` with a word at each end."""
    bar = (
        f"display:inline-block;width:120px;height:10px;vertical-align:middle;margin:0 6px;"
        f"background:linear-gradient(to right,{low},{high});border:1px solid #ccc"
    )
    return (
        f'<div class="{" ".join(NO_MATH)}" style="font-size:12px">{html.escape(left)}'
        f'<span style="{bar}"></span>{html.escape(right)}</div>'
    )


class ErrorArea(w.HTML):
    """Where a tab shows what went wrong, as text (never as HTML from the message)."""

    def __init__(self) -> None:
        super().__init__(value="", layout=w.Layout(display="none"))
        self.add_class("jc-error")

    def show(self, error: BaseException | str) -> None:
        if isinstance(error, JupyterCifarError | str):
            text = str(error)
        elif isinstance(error, ValueError | OSError | KeyError):
            text = f"{type(error).__name__}: {error}"
        else:  # unexpected: keep the traceback, a person may need it
            text = "".join(traceback.format_exception(error)).rstrip()
        self.value = (
            '<pre style="color:#b00020;white-space:pre-wrap;margin:4px 0">' + html.escape(text) + "</pre>"
        )
        self.layout.display = None

    def clear(self) -> None:
        self.value = ""
        self.layout.display = "none"


def in_background(
    work: Callable[[], Any],
    *,
    done: Callable[[Any], None] | None = None,
    errors: ErrorArea,
    busy: list[w.Widget] = (),  # type: ignore[assignment]
    name: str = "jupyter-cifar",
) -> threading.Thread:
    """Run ``work`` in a thread, ``busy`` widgets disabled meanwhile; any error is shown in ``errors``."""
    for widget in busy:
        widget.disabled = True
    errors.clear()

    def run() -> None:
        try:
            result = work()
            if done is not None:
                done(result)
        except Exception as e:
            log.debug("background work failed", exc_info=True)
            errors.show(e)
        finally:
            for widget in busy:
                widget.disabled = False

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


def guarded(errors: ErrorArea) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """For widget callbacks: an exception is shown in the app instead of vanishing into a log."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        def callback(*args: Any, **kwargs: Any) -> Any:
            try:
                errors.clear()
                return fn(*args, **kwargs)
            except Exception as e:
                errors.show(e)
                return None

        return callback

    return wrap


def label(text: str = "", cls: str | None = None, **layout: Any) -> w.Label:
    """A line of text, shown as it is (never as TeX: see :data:`NO_MATH`)."""
    widget = w.Label(text, layout=w.Layout(**layout))
    for name in (*NO_MATH, cls):
        if name:
            widget.add_class(name)
    return widget


def row_layout(**layout: Any) -> w.Layout:
    """A row that wraps onto a second line rather than being cut at a narrow notebook's edge."""
    return w.Layout(flex_flow="row wrap", **layout)


def button(description: str, cls: str, *, style: str = "", icon: str = "", tooltip: str = "") -> w.Button:
    widget = w.Button(description=description, button_style=style, icon=icon, tooltip=tooltip)
    widget.add_class(cls)
    return widget


def parse_tags(text: str) -> dict[str, str]:
    """``"a=1, b=2"`` -> ``{"a": "1", "b": "2"}``."""
    from ..errors import BadParameter

    tags = {}
    for item in filter(None, (part.strip() for part in text.replace("\n", ",").split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise BadParameter("tags", f"{item!r}: write tags as KEY=VALUE, separated by commas")
        tags[key.strip()] = value.strip()
    return tags
