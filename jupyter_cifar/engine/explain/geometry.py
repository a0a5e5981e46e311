"""Where a feature map's cells lie on the picture, for :mod:`jupyter_cifar.engine.explain`.

A cell's centre is not where resizing the map to the input would put it: valid convolutions and
floor-rounding poolings shift and shrink the grid. The grid is worked out from the layers' kernel sizes,
strides and paddings (:func:`map_grids`); each picture pixel is then interpolated (bilinear) between the
cells around it, through the test-time view the map was computed on (:class:`View`) and the way the
picture was fitted to the model's input (:func:`to_input`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import BadParameter
from .layers import CONVS, Target, node_of


@dataclass(frozen=True)
class View:
    """A test-time view: ``shift`` pixels down and right (with reflection), then mirrored if ``flip``."""

    weight: float
    flip: bool = False
    shift: int = 0


def views_of(name: str) -> list[View]:
    """The views of :func:`jupyter_cifar.engine.tta.with_tta`'s ``views`` and their logits' weights."""
    if name == "flip":
        return [View(0.5), View(0.5, flip=True)]
    return [
        View(0.25), View(0.25, flip=True),
        View(0.125, shift=1), View(0.125, flip=True, shift=1),
        View(0.125, shift=-1), View(0.125, flip=True, shift=-1),
    ]  # fmt: skip


def apply_view(x: np.ndarray, view: View) -> np.ndarray:
    """The view of a batch (n, h, w, 3), exactly as with_tta's frozen layers make it."""
    if view.shift:
        padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
        x = padded[:, :-2, :-2] if view.shift > 0 else padded[:, 2:, 2:]
    return x[:, :, ::-1] if view.flip else x


Grid = tuple[float, float, float, float]  # row offset, row stride, column offset, column stride


def map_grids(model: Any, targets: list[Target], input_size: tuple[int, int]) -> list[Grid]:
    """Where each target map's cells lie on the model's input: cell (i, j) is centred (offset + i * stride)
    pixels down and (offset + j * stride) across, in input pixels (pixel k spans k..k+1).

    Worked out from the layers' configurations along the graph (kernel sizes, strides, paddings, crops),
    so it is exact whatever the weights. A map behind a layer whose geometry is not known here is taken
    to cover the input evenly (what resizing it would assume).
    """
    geometry = grid_of_tensors(model, (0.5, 1.0, 0.5, 1.0))
    grids = []
    for target in targets:
        tensor = node_of(target.layer, target.chain[-1]).output_tensors[0]
        grid = geometry.get(id(tensor))
        if grid is None:
            rows, cols = int(tensor.shape[1]), int(tensor.shape[2])
            h, w = input_size
            grid = (h / rows / 2, h / rows, w / cols / 2, w / cols)
        grids.append(grid)
    return grids


def grid_of_tensors(model: Any, start: Grid) -> dict[int, Grid]:
    """The grid of every 4D tensor of ``model`` (and of its nested models) whose input has grid ``start``,
    by the id of the tensor."""
    import keras

    known = {id(model.inputs[0]): start}
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        try:
            node = node_of(layer, model)
        except BadParameter:
            continue
        inputs = [t for t in node.input_tensors if id(t) in known]
        if len(inputs) != len(node.input_tensors) or len(node.output_tensors) != 1:
            continue
        output = node.output_tensors[0]
        if isinstance(layer, keras.Model):
            inner = grid_of_tensors(layer, known[id(inputs[0])])
            known.update(inner)
            grid = inner.get(id(layer.outputs[0]))
        else:
            grid = layer_grid(layer, known[id(inputs[0])], tuple(inputs[0].shape), tuple(output.shape))
        if grid is not None:
            known[id(output)] = grid
    return known


def layer_grid(layer: Any, grid: Grid, before: tuple[Any, ...], after: tuple[Any, ...]) -> Grid | None:
    """The grid of a layer's output from its input's, or None when this layer's geometry is not known."""
    if len(before) != 4 or len(after) != 4 or None in before[1:3] or None in after[1:3]:
        return None
    kind = type(layer).__name__
    out = []
    for axis in (0, 1):
        offset, stride = grid[2 * axis], grid[2 * axis + 1]
        size_in, size_out = int(before[1 + axis]), int(after[1 + axis])
        if kind in CONVS or kind in ("MaxPooling2D", "AveragePooling2D"):
            kernel = pair(getattr(layer, "kernel_size", None) or layer.pool_size)[axis]
            step = pair(layer.strides or kernel)[axis]
            dilation = pair(getattr(layer, "dilation_rate", 1))[axis]
            reach = (kernel - 1) * dilation + 1
            pad = max((size_out - 1) * step + reach - size_in, 0) // 2 if layer.padding == "same" else 0
            offset, stride = offset + stride * ((reach - 1) / 2 - pad), stride * step
        elif kind in ("ZeroPadding2D", "Cropping2D"):
            amounts = layer.padding if kind == "ZeroPadding2D" else layer.cropping
            first = int(amounts[axis][0])
            offset += stride * (-first if kind == "ZeroPadding2D" else first)
        elif kind == "UpSampling2D":
            factor = pair(layer.size)[axis]
            offset, stride = offset + stride * (0.5 / factor - 0.5), stride / factor
        elif size_in != size_out:
            return None
        out += [offset, stride]
    return out[0], out[1], out[2], out[3]


def pair(value: Any) -> tuple[int, int]:
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[1]))


def to_input(own: int, side: int, other_own: int, other_side: int, fit: str) -> tuple[np.ndarray, np.ndarray]:
    """Where the centres of a picture's pixels along one axis (``own`` of them) land on the model's input
    (``side`` pixels along that axis), resized by ``fit`` as images.py does it, and whether the model
    sees them at all (a crop drops some)."""
    v = np.arange(own, dtype=np.float64) + 0.5
    if fit == "crop":
        scale = max(side / own, other_side / other_own)  # input pixels per picture pixel
        u = (v - (own - side / scale) / 2) * scale  # the crop keeps the middle side / scale pixels
    elif fit == "pad":  # scaled to fit, centred between bars (as images._resize and _finish place it)
        placed = max(1, min(side, round(own * min(side / own, other_side / other_own))))
        u = v * placed / own + (side - placed) // 2
    else:
        u = v * side / own
    return u, (u >= 0) & (u <= side)


def onto_grid(
    u: np.ndarray,
    seen: np.ndarray,
    side: int,
    offset: float,
    stride: float,
    cells: int,
    shift: int,
    flip: bool,
) -> np.ndarray:
    """(pixels, cells) bilinear weights: input coordinates ``u`` through a view (moved ``shift`` pixels,
    then mirrored if ``flip``) onto a map's grid (cell i at offset + i * stride); unseen pixels get none."""
    u = u + shift
    if flip:
        u = side - u
    t = np.clip((u - offset) / stride, 0, cells - 1)
    low = np.floor(t).astype(np.int64)
    high = np.minimum(low + 1, cells - 1)
    frac = t - low
    matrix = np.zeros((len(u), cells), np.float32)
    rows = np.arange(len(u))
    np.add.at(matrix, (rows, low), (1 - frac) * seen)
    np.add.at(matrix, (rows, high), frac * seen)
    return matrix
