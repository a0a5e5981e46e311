"""Fine-tuning on your photos (issue 17): what 300 corrections buy, what they cost, and how long it takes.

    python benchmarks/finetune_photos.py [--data DIR] [--model PATH.keras] [--photos 1000] [--used 300]
                                         [--epochs 4]

A photo set of ``--photos`` (default 1,000) is made from CIFAR-10 test images by tests/photoset.py (small
off-centre objects over a blurred background, a colour cast, noise, JPEG quality 60-90). ``--used`` of
them (stratified) are the corrections fine-tuned on; the rest are held out and measured before and after,
with the CIFAR-10 test set and its negative flips (test images the old model got right and the new one
gets wrong). The test images the photos were made from are left out of the test figures, so that no
test image is ever trained on.

Side by side, each in a fresh process from the same model: ours (``finetune``'s defaults: 16 views of
each photo mixed with 4 CIFAR-10 training images for each view) against the baseline without replay
(the photo views alone, as fine-tuning is usually done).
Seconds are ``finetune``'s whole call: decoding, the before and after measurements, training.
Without ``--model``, ``fast`` is first trained on all of CIFAR-10 (its default recipe).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path[:0] = [
    str(Path(__file__).resolve().parent.parent),
    str(Path(__file__).resolve().parent.parent / "tests"),
]

from benchmarks._common import DEFAULT_DATA, machine, print_result, run_child, table, trained_fast


def child(args: argparse.Namespace) -> None:
    import dataclasses

    import numpy as np
    from photoset import make_photo_set

    import jupyter_cifar.photos.finetune as ft
    from jupyter_cifar.data import load_cifar10
    from jupyter_cifar.modelfiles import load_model
    from jupyter_cifar.photos.labelled import LabelledPhotos

    data = load_cifar10(args.data)
    photos = make_photo_set(data.x_test, data.y_test, args.photos, seed=0)
    unused = np.setdiff1d(np.arange(len(data.x_test)), [p.source for p in photos])
    data = dataclasses.replace(data, x_test=data.x_test[unused], y_test=data.y_test[unused])
    found = LabelledPhotos(
        [p.data for p in photos], np.asarray([p.label for p in photos]),
        [f"photo {i}" for i in range(len(photos))], "the generated photos",
    )  # fmt: skip
    if args.replay is not None:
        ft.REPLAY = args.replay
    done = ft.finetune(
        load_model(args.model), found, data, epochs=args.epochs, holdout=1 - args.used / args.photos, seed=0
    )
    print_result(
        {"before": done.before, "after": done.after, "negative_flips": done.negative_flips,
         "seconds": done.seconds, "used": done.photos_used, "held_out": done.holdout,
         "images_per_second": done.result.images_per_second, "test_images": len(data.x_test)}
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--model", help="a trained model file (default: train fast on all of CIFAR-10)")
    parser.add_argument("--photos", type=int, default=1000)
    parser.add_argument("--used", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--replay", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        if args.model is None:
            args.model = trained_fast(args.data, Path(tmp) / "fast.keras")
        common = ["--child", "--data", args.data, "--model", args.model, "--photos", str(args.photos),
                  "--used", str(args.used)]  # fmt: skip
        runs = {
            "ours: photo views + CIFAR-10 replay": [*common, "--epochs", str(args.epochs)],
            "baseline: photo views alone": [*common, "--epochs", str(args.epochs), "--replay", "0"],
        }
        results = {name: run_child(__file__, argv) for name, argv in runs.items()}
    first = next(iter(results.values()))
    print(
        f"\n{args.used} photos fine-tuned on, {first['held_out']} held out; CIFAR-10 test: the "
        f"{first['test_images']} images the photos were not made from; {args.epochs} epochs"
    )
    rows = []
    for name, r in results.items():
        b, a = r["before"], r["after"]
        rows.append(
            [name, f"{b['photos']:.3f} -> {a['photos']:.3f}", f"{100 * (a['photos'] - b['photos']):+.1f}",
             f"{b['test']:.4f} -> {a['test']:.4f}", f"{100 * (a['test'] - b['test']):+.2f}",
             r["negative_flips"], f"{r['seconds']:.1f}", f"{r['images_per_second']:.0f}"]
        )  # fmt: skip
    print(table(["run", "held-out photos", "points", "test set", "points", "neg. flips", "s", "img/s"], rows))
    ours, base = results.values()
    print(
        f"\nours/baseline: photo gain {ours['after']['photos'] - ours['before']['photos']:.3f} vs "
        f"{base['after']['photos'] - base['before']['photos']:.3f}; negative flips "
        f"{ours['negative_flips'] / max(1, base['negative_flips']):.2f}x; "
        f"time {ours['seconds'] / base['seconds']:.2f}x"
    )


if __name__ == "__main__":
    main()
