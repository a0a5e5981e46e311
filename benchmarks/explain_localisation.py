"""Where the model looked: how often a heatmap's peak falls inside the object's box, ours against plain
Grad-CAM, on generated photos whose boxes are known.

    python benchmarks/explain_localisation.py [--data DIR] [--model PATH.keras] [--photos 500] [--seeds 0 1]

Photos from tests/photoset.py (CIFAR-10 test images placed small and off-centre over another image
blurred: the box is known). Chance is the box's share of the frame. Side by side on the same photos and
the same model: ``explain``'s default (LayerCAM averaged over the first map of each resolution of 4x4 or
more) against plain Grad-CAM on the deepest convolution whose map is still 4x4 or more, the usual
choice; seconds a photo for each. Without ``--model``, ``fast`` is trained first on all of CIFAR-10.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path[:0] = [
    str(Path(__file__).resolve().parent.parent),
    str(Path(__file__).resolve().parent.parent / "tests"),
]

from benchmarks._common import DEFAULT_DATA, machine, table, trained_fast


def deepest_conv(model) -> str:  # type: ignore[no-untyped-def]
    """The last Conv2D whose output is still 4x4 or more: plain Grad-CAM's usual layer."""
    found = [
        layer.name
        for layer in model.layers
        if type(layer).__name__ == "Conv2D" and min(layer.output.shape[1:3]) >= 4
    ]
    return found[-1]


def peak_in_box(maps: list, photos: list) -> float:
    hits = 0
    for heat, photo in zip(maps, photos, strict=True):
        row, col = divmod(int(heat.argmax()), heat.shape[1])
        left, top, right, bottom = photo.box
        hits += left <= col < right and top <= row < bottom
    return hits / len(photos)


def main() -> None:
    import numpy as np

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--model")
    parser.add_argument("--photos", type=int, default=500)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = parser.parse_args()
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        if args.model is None:
            args.model = trained_fast(args.data, Path(tmp) / "fast.keras")
        from photoset import make_photo_set

        from jupyter_cifar.engine.data import load_cifar10
        from jupyter_cifar.engine.explain import explain
        from jupyter_cifar.engine.modelfiles import load_model

        data = load_cifar10(args.data)
        model = load_model(args.model)
        layer = deepest_conv(model)
        explain(model, [data.x_test[0]])  # the sub-models built once, outside the timings
        explain(model, [data.x_test[0]], layer=layer, method="gradcam")
        rows = []
        for seed in args.seeds:
            photos = make_photo_set(data.x_test, data.y_test, args.photos, seed=seed)
            chance = float(np.mean([(p.box[2] - p.box[0]) * (p.box[3] - p.box[1]) / (p.size[0] * p.size[1])
                                    for p in photos]))  # fmt: skip
            sources = [p.data for p in photos]
            figures = []
            for kwargs in ({}, {"layer": layer, "method": "gradcam"}):
                start = time.perf_counter()
                maps = explain(model, sources, **kwargs)
                seconds = (time.perf_counter() - start) / len(photos)
                figures.append((peak_in_box(maps, photos), seconds))
            (ours, ours_s), (plain, plain_s) = figures
            rows.append([seed, f"{chance:.3f}", f"{ours:.3f}", f"{plain:.3f}", f"{ours / plain:.2f}x",
                         f"{1000 * ours_s:.1f}", f"{1000 * plain_s:.1f}"])  # fmt: skip
    print(f"\nmodel {args.model}; plain Grad-CAM on {layer}; {args.photos} photos a seed")
    print(table(["seed", "chance", "ours", "plain Grad-CAM", "ours/plain", "ms ours", "ms plain"], rows))


if __name__ == "__main__":
    main()
