"""The views of an evaluation: accuracy per class, the confusion matrix, the most confidently wrong images.

Built from an evaluation's JSON (a trainer's ``evaluation`` event, in this kernel or a job's, with the
worst images as PNGs in its ``pictures``), so that a training seen live and one redrawn from a job's
history look the same.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import bqplot as bq
import ipywidgets as w
import numpy as np

from .common import gradient_html, label


def _enlarged(png: bytes, scale: int = 2) -> bytes:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        image.load()
        big = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    big.save(buffer, "PNG")
    return buffer.getvalue()


def evaluation_views(evaluation: dict[str, Any], pictures: list[str] | None = None) -> list[w.Widget]:
    """Bars per class and the confusion matrix side by side, then the worst images (``pictures``: their
    base64 PNGs, in the order of ``evaluation["worst"]``; none: the gallery is left out)."""
    names = list(evaluation["class_names"])
    x_scale, y_scale = bq.OrdinalScale(), bq.LinearScale(min=0, max=1)
    bars = bq.Bars(
        x=names, y=[evaluation["per_class"][n] for n in names], scales={"x": x_scale, "y": y_scale}
    )
    per_class = bq.Figure(
        title="Accuracy per class",
        marks=[bars],
        axes=[
            bq.Axis(scale=x_scale, tick_rotate=-40, tick_style={"text-anchor": "end"}),
            bq.Axis(scale=y_scale, side="left", tick_format=".0%"),
        ],
        layout=w.Layout(width="50%", height="320px", min_width="300px"),
        fig_margin={"top": 40, "bottom": 80, "left": 50, "right": 10},
    )
    per_class.add_class("jc-train-per-class")
    confusion = np.array(evaluation["confusion"], dtype=float)
    rows = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    col, row = bq.OrdinalScale(), bq.OrdinalScale(reverse=True)
    colour = bq.ColorScale(scheme="Blues", min=0, max=1)
    heat = bq.GridHeatMap(
        color=rows,
        row=names,
        column=names,
        scales={"row": row, "column": col, "color": colour},
        tooltip=bq.Tooltip(fields=["row", "column", "color"], labels=["true", "predicted", "share"]),
    )
    matrix = bq.Figure(
        title="Confusion matrix (share of each true class)",
        marks=[heat],
        axes=[
            bq.Axis(
                scale=col,
                label="predicted",
                label_offset="62px",
                tick_rotate=-40,
                tick_style={"text-anchor": "end"},
            ),
            bq.Axis(scale=row, side="left", label="true", label_offset="70px"),
        ],
        layout=w.Layout(width="100%", height="320px"),
        fig_margin={"top": 40, "bottom": 90, "left": 90, "right": 10},
        title_style={"font-size": "14px"},
    )
    matrix.add_class("jc-train-confusion")
    scale = gradient_html("#f7fbff", "#08306b", "0%", "100% of the true class")
    matrix_box = w.VBox(
        [matrix, w.HTML(scale, layout=w.Layout(margin="0 0 0 90px"))],
        layout=w.Layout(width="50%", min_width="300px", overflow="hidden"),
    )
    views: list[w.Widget] = [
        w.HBox([per_class, matrix_box], layout=w.Layout(width="100%", overflow="hidden"))
    ]
    if pictures:
        worst = []
        for item, picture in zip(evaluation["worst"], pictures, strict=False):
            # Two lines: "airplane → automobile (100%)" on one would be wider than its 150px column.
            lines = (f"{item['label']} →", f"{item['predicted']} ({item['probability']:.0%})")
            caption = [label(line, height="24px", margin="0px") for line in lines]
            image = w.Image(
                value=_enlarged(base64.b64decode(picture)),
                format="png",
                layout=w.Layout(width="72px", height="72px"),
            )
            worst.append(w.VBox([image, *caption], layout=w.Layout(width="150px", align_items="center")))
        gallery = w.HBox(worst, layout=w.Layout(flex_flow="row wrap"))
        gallery.add_class("jc-train-worst")
        views += [label("Most confidently wrong test images (true → predicted):"), gallery]
    return views
