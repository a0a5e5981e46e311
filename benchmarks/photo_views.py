"""Classifying photos from several views (engine.views) against the one centre crop, side by side.

    python benchmarks/photo_views.py [--model PATH.keras] [--data DIR] [--photos 1000] [--seed 1]
        [--multi-test 1000] [--augment]

Three sets, each through the same model:

* photos: ``tests/photoset.py`` made from CIFAR-10 test images: the object at a third to a half of the
  frame, anywhere in it, over a blurred background from another image, with a colour cast, noise and JPEG
  compression (64 to 160 pixels a side). Made with ``--seed`` (default 1: the view plan's constants were
  chosen on seed 0, so the figures here are on photos they were not tuned on).
* filled: CIFAR-10 test images enlarged to 96-160 pixels (random aspect, JPEG quality 90): large pictures
  whose object fills the frame, the case crops can only spoil (a confident crop of a cat's head says
  "dog"), so a strategy that wins on photos by ignoring the whole frame shows it here.
* test: the 10,000 CIFAR-10 test images at 32x32. In ``auto`` every strategy leaves a 32x32 picture its
  one view, so this column is the same for all (checked: photo_probabilities equals predict_proba);
  ``--multi-test`` images are also classified with views forced on, to show what the size gate saves.

Each strategy's photo time is end to end for 1,000 photos: decoding the JPEG bytes, cutting the views,
the model on them, combining. Variants that differ only in their combination reuse the per-view
probabilities of their layout (the default's are checked against photo_probabilities itself).

Without ``--model`` the `fast` preset is trained here first (about a minute on 2 cores). ``--augment``
instead trains `fast` twice with one seed, without and with scale and colour augmentation of the training
images (half of them shrunk to 50-100% on a reflected border, and colour-cast), to see what that gives
photos and costs the test set; nets.py and training.py are untouched (the augmented images are a copy).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "tests"))  # photoset.py

import numpy as np
from photoset import make_photo_set
from PIL import Image

from benchmarks._common import DEFAULT_DATA, machine, table
from jupyter_cifar.engine import views as V
from jupyter_cifar.engine.images import load_images
from jupyter_cifar.engine.predict import predict_proba

DEFAULT = V.DEFAULT_PLAN
WHOLE_ONLY = {fit: V.ViewPlan(whole=fit, scales=(), flip=True) for fit in ("crop", "squish", "pad")}
NO_FLIP = dataclasses.replace(DEFAULT, flip=False)
DENSE = dataclasses.replace(DEFAULT, scales=(1 / 2, 5 / 12), overlap=0.75)


def filled_set(x: np.ndarray, y: np.ndarray, n: int, seed: int) -> tuple[list[bytes], np.ndarray]:
    """``n`` test images enlarged to 96-160 pixels a side as JPEG files: the object fills the frame."""
    rng = np.random.default_rng(seed + 1000)
    picked = rng.choice(len(x), size=min(n, len(x)), replace=False)
    files = []
    for i in picked:
        width = int(rng.integers(96, 161))
        height = int(width * rng.uniform(0.75, 1.0))
        buffer = io.BytesIO()
        enlarged = Image.fromarray(x[i]).resize((width, height), Image.Resampling.BICUBIC)
        enlarged.save(buffer, "JPEG", quality=90)
        files.append(buffer.getvalue())
    return files, np.asarray(y)[picked]


class Layout:
    """One set of views for every picture of a set: their probabilities, and the time each step took."""

    def __init__(self, model: Any, frames: list[np.ndarray], plan: V.ViewPlan) -> None:
        self.plan = plan
        self.rows: list[np.ndarray] = []
        started = time.perf_counter()
        self.cut = self.model_s = 0.0
        chunk: list[np.ndarray] = []
        for k, frame in enumerate(frames):
            t = time.perf_counter()
            chunk.append(V.make_views(frame, "multi", plan))
            self.cut += time.perf_counter() - t
            if sum(map(len, chunk)) >= 4096 or k == len(frames) - 1:
                t = time.perf_counter()
                probs = predict_proba(model, np.concatenate(chunk))
                self.model_s += time.perf_counter() - t
                self.rows += np.split(probs, np.cumsum([len(s) for s in chunk])[:-1])
                chunk = []
        self.seconds = time.perf_counter() - started
        self.views = float(np.mean([len(r) for r in self.rows]))


def combined(rows: list[np.ndarray], plan: V.ViewPlan, y: np.ndarray) -> tuple[float, float, np.ndarray]:
    """Accuracy, seconds spent combining, and the combined rows."""
    started = time.perf_counter()
    out = np.stack([V.combine(r, plan) for r in rows])
    return float((out.argmax(1) == y).mean()), time.perf_counter() - started, out


def with_whole(base: list[np.ndarray], whole: list[np.ndarray]) -> list[np.ndarray]:
    """The default layout's rows with its whole-frame view (and its mirror) replaced by another fit's."""
    out = []
    for rows, other in zip(base, whole, strict=True):
        rows = rows.copy()
        half = len(rows) // 2
        rows[0], rows[half] = other[0], other[1]
        out.append(rows)
    return out


def evaluate_strategies(
    model: Any, data: Any, args: argparse.Namespace, say: Callable[[str], None], full: bool = True
) -> dict:
    """Every strategy (``full``; else the centre crop, the whole frame and the default) on the three sets;
    returns the table's rows and the figures quoted below it."""
    photos = make_photo_set(data.x_test, data.y_test, args.photos, seed=args.seed)
    photo_bytes, y_photo = [p.data for p in photos], np.array([p.label for p in photos])
    filled_bytes, y_filled = filled_set(data.x_test, data.y_test, args.photos, args.seed)
    predict_proba(model, data.x_test[:512])  # warm up (tracing) off the clock

    # Today's way: each file decoded straight to its centre crop, one view.
    def centre_crops(files: list[bytes], y: np.ndarray) -> float:
        crops = np.stack([a for a in load_images(files) if isinstance(a, np.ndarray)])
        return float((predict_proba(model, crops).argmax(1) == y).mean())

    t = time.perf_counter()
    single_photo = centre_crops(photo_bytes, y_photo)
    single_s = time.perf_counter() - t
    single_filled = centre_crops(filled_bytes, y_filled)

    t = time.perf_counter()
    frames = V.decode_photos(photo_bytes)
    decode_s = time.perf_counter() - t
    filled_frames = V.decode_photos(filled_bytes)
    assert all(isinstance(f, np.ndarray) for f in [*frames, *filled_frames])

    # The test set: single view, and auto (which must be the same, bit for bit), then views forced on.
    test_single = predict_proba(model, data.x_test)
    test_auto = V.photo_probabilities(model, data.x_test)
    assert np.array_equal(test_single, test_auto), "auto changed a 32x32 picture's probabilities"
    test_acc = float((test_auto.argmax(1) == data.y_test).mean())
    m = args.multi_test if full else 0
    multi = V.photo_probabilities(model, data.x_test[:m], views="multi")
    multi_acc = float((multi.argmax(1) == data.y_test[:m]).mean()) if m else 0.0
    single_sub = float((test_single[:m].argmax(1) == data.y_test[:m]).mean()) if m else 0.0

    layouts: dict[str, tuple[Layout, Layout]] = {}
    plans = [("default", DEFAULT), ("no-flip", NO_FLIP), ("dense", DENSE), *WHOLE_ONLY.items()]
    for name, plan in plans if full else [("default", DEFAULT), ("squish", WHOLE_ONLY["squish"])]:
        say(f"views: {name}")
        layouts[name] = (Layout(model, frames, plan), Layout(model, filled_frames, plan))

    # The benchmark's own combination of the default layout is photo_probabilities' result.
    _, _, ours = combined(layouts["default"][0].rows, DEFAULT, y_photo)
    real = V.photo_probabilities(model, frames)
    np.testing.assert_allclose(ours, real, atol=1e-5)

    n = len(photos)
    rows: list[list[object]] = []

    def row(label: str, layout: str, plan: V.ViewPlan, rows_of: Callable[[Layout], list[np.ndarray]]) -> None:
        photo_layout, filled_layout = layouts[layout]
        acc, combine_s, _ = combined(rows_of(photo_layout), plan, y_photo)
        filled_acc, _, _ = combined(rows_of(filled_layout), plan, y_filled)
        seconds = decode_s + photo_layout.seconds + combine_s
        rows.append([
            label, f"{photo_layout.views:.0f}",
            f"{acc:.3f}", f"{(acc - single_photo) * 100:+.1f}", f"{acc / single_photo:.2f}x",
            f"{filled_acc:.3f}", f"{(filled_acc - single_filled) * 100:+.1f}",
            f"{test_acc:.4f}", f"{seconds / n * 1000:.1f}", f"{seconds / single_s:.0f}x",
        ])  # fmt: skip

    rows.append([
        "single: centre crop (before)", "1", f"{single_photo:.3f}", "+0.0", "1.00x",
        f"{single_filled:.3f}", "+0.0", f"{test_acc:.4f}", f"{single_s / n * 1000:.1f}", "1x",
    ])  # fmt: skip
    same = lambda layout: layout.rows  # noqa: E731
    for fit in ("crop", "squish", "pad") if full else ("squish",):
        row(f"whole frame, {fit} (+mirror)", fit, dataclasses.replace(WHOLE_ONLY[fit], combine="mean"), same)
    for plan, label in [
        (DEFAULT, "DEFAULT contrast, whole x2"),
        (dataclasses.replace(DEFAULT, whole_weight=1.0), "contrast, whole x1"),
        (dataclasses.replace(DEFAULT, whole_weight=1.5), "contrast, whole x1.5"),
        (dataclasses.replace(DEFAULT, whole_weight=1.75), "contrast, whole x1.75"),
        (dataclasses.replace(DEFAULT, whole_weight=3.0), "contrast, whole x3"),
        (dataclasses.replace(DEFAULT, combine="max", whole_weight=1.0), "max-confidence"),
        (dataclasses.replace(DEFAULT, combine="max"), "max-confidence, whole x2"),
        (dataclasses.replace(DEFAULT, combine="mean", whole_weight=1.0), "mean of probabilities"),
        (dataclasses.replace(DEFAULT, combine="logmean", whole_weight=1.0), "mean of log-probabilities"),
    ][: None if full else 1]:
        row(label, "default", plan, same)
    if not full:
        return {"rows": rows, "test_acc": test_acc, "multi": None}
    for fit in ("crop", "pad"):

        def swapped(layout: Layout, fit: str = fit) -> list[np.ndarray]:
            which = 0 if layout is layouts["default"][0] else 1
            return with_whole(layout.rows, layouts[fit][which].rows)

        row(f"contrast, whole x2, whole {fit}", "default", dataclasses.replace(DEFAULT, whole=fit), swapped)
    row("contrast, whole x2, no mirror", "no-flip", NO_FLIP, same)
    row("contrast, whole x2, dense 1/2+5/12 @75%", "dense", DENSE, same)
    return {
        "rows": rows,
        "test_acc": test_acc,
        "multi": (m, single_sub, multi_acc),
        "decode_ms": decode_s / n * 1000,
        "model_ms": layouts["default"][0].model_s / n * 1000,
        "cut_ms": layouts["default"][0].cut / n * 1000,
    }


def print_report(result: dict, title: str, args: argparse.Namespace) -> None:
    header = ["strategy", "views", "photos", "pts", "ratio", "filled", "pts", "test", "ms/photo", "time"]
    print(f"\n{title}")
    print(table(header, result["rows"]))
    if result["multi"] is None:
        return
    m, single_sub, multi_acc = result["multi"]
    print(
        f"photos: {args.photos} generated (seed {args.seed}); filled: {args.photos} test images enlarged; "
        f"test: 10,000 at 32x32 (auto: one view each, identical to predict_proba for every strategy)."
    )
    print(
        f"views forced on 32x32 test images (views='multi', first {m}): {multi_acc:.3f} against "
        f"{single_sub:.3f} single: what the size gate of 'auto' saves."
    )
    print(
        f"default, per photo: decode {result['decode_ms']:.2f} ms, cut views {result['cut_ms']:.1f} ms, "
        f"model {result['model_ms']:.1f} ms."
    )


def train(data: Any, seed: int, x_train: np.ndarray | None = None) -> Any:
    """`fast` as its preset trains it (optionally on other training images), returned as a model."""
    from jupyter_cifar.engine.training import TrainConfig, Trainer

    if x_train is not None:
        data = dataclasses.replace(data, x_train=x_train)
    result = Trainer(data, TrainConfig(preset="fast", seed=seed, validate_each_epoch=False)).run()
    if result.status != "finished":
        raise SystemExit(f"training failed: {result.error}")
    return result.model


def augmented(x: np.ndarray, seed: int, share: float = 0.5) -> np.ndarray:
    """A copy of the training images in which ``share`` of them are shrunk to 50-100% of the frame, placed
    anywhere on a reflected border, and given a colour cast and a brightness shift (as photos have)."""
    rng = np.random.default_rng(seed)
    out = x.copy()
    for i in np.flatnonzero(rng.random(len(x)) < share):
        side = int(rng.integers(16, 33))
        if side < 32:
            pad = round(32 * 32 / side) - 32
            left, top = (int(v) for v in rng.integers(0, pad + 1, size=2))
            wide = np.pad(x[i], ((top, pad - top), (left, pad - left), (0, 0)), mode="reflect")
            out[i] = np.asarray(Image.fromarray(wide).resize((32, 32), Image.Resampling.LANCZOS))
        pixels = out[i].astype(np.float32) * rng.uniform(0.8, 1.2, size=3) + rng.uniform(-20, 20)
        out[i] = np.clip(pixels, 0, 255).astype(np.uint8)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a .keras model (default: train `fast` here)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--photos", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1, help="of the photo set (the plan was tuned on 0)")
    parser.add_argument("--multi-test", type=int, default=1000)
    parser.add_argument("--augment", action="store_true", help="instead: train without and with augmentation")
    args = parser.parse_args()

    from jupyter_cifar.engine.data import load_cifar10
    from jupyter_cifar.engine.modelfiles import load_model

    def say(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    data = load_cifar10(args.data)
    print(f"photo views ({machine()})")
    if args.augment:
        for name, x_train in (("plain", None), ("scale+colour augmented", augmented(data.x_train, 7))):
            say(f"training fast ({name})")
            started = time.perf_counter()
            trained = train(data, 11, x_train)
            took = time.perf_counter() - started
            print_report(
                evaluate_strategies(trained, data, args, say, full=False),
                f"model: fast, seed 11, {name} training images ({took:.0f} s to train)",
                args,
            )
        return
    if args.model:
        model, what = load_model(args.model), str(args.model)
    else:
        say("training fast (seed 0)")
        model, what = train(data, 0), "fast trained here (seed 0)"
        with tempfile.TemporaryDirectory() as folder:  # as a saved model would be: load it back
            path = Path(folder) / "fast.keras"
            model.save(path)
            model = load_model(path)
    print_report(evaluate_strategies(model, data, args, say), f"model: {what}", args)


if __name__ == "__main__":
    main()
