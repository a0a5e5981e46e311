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
Seconds are ``finetune``'s whole call: decoding, the before and after measurements, training. Each
version classifies photos with the view combination it chose on the photos it trained on (measured with
the model before training: views.plan_choices); both figures are printed, with what that choice costs on
pictures whose object fills the frame. A third run times a person's call: the same corrections alone,
with the default fifth of them held out.
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
    from photo_views import filled_set
    from photoset import make_photo_set

    import jupyter_cifar.photos.finetune as ft
    from jupyter_cifar.engine.data import load_cifar10
    from jupyter_cifar.engine.modelfiles import load_model
    from jupyter_cifar.engine.views import DEFAULT_PLAN, decode_photos, photo_probabilities
    from jupyter_cifar.photos.labelled import LabelledPhotos

    data = load_cifar10(args.data)
    photos = make_photo_set(data.x_test, data.y_test, args.photos, seed=args.seed)
    unused = np.setdiff1d(np.arange(len(data.x_test)), [p.source for p in photos])
    data = dataclasses.replace(data, x_test=data.x_test[unused], y_test=data.y_test[unused])
    found = LabelledPhotos(
        [p.data for p in photos], np.asarray([p.label for p in photos]),
        [f"photo {i}" for i in range(len(photos))], "the generated photos",
    )  # fmt: skip
    if args.replay is not None:
        ft.REPLAY = args.replay
    holdout = 1 - args.used / args.photos
    if args.user:  # the corrections alone, fine-tuned as a person would: the default holdout of them
        found = found.subset(ft.stratified_split(found.labels, holdout, 0)[0])
        holdout = ft.DEFAULT_HOLDOUT
    model = load_model(args.model)
    done = ft.finetune(model, found, data, epochs=args.epochs, holdout=holdout, seed=0)
    # Pictures whose object fills the frame (CIFAR-10 test images enlarged), through each version's views:
    # what the version's choice of views costs where crops can only spoil.
    filled, y_filled = filled_set(data.x_test, data.y_test, 1000, args.seed)
    frames = decode_photos(filled)
    assert done.plan is not None
    before_filled = (
        photo_probabilities(load_model(args.model), frames, plan=DEFAULT_PLAN).argmax(1) == y_filled
    )
    after_filled = photo_probabilities(done.model, frames, plan=done.plan).argmax(1) == y_filled
    print_result(
        {"before": done.before, "after": done.after, "negative_flips": done.negative_flips,
         "seconds": done.seconds, "used": done.photos_used, "held_out": done.holdout,
         "images_per_second": done.result.images_per_second, "train_seconds": done.result.seconds,
         "test_images": len(data.x_test), "views": done.views,
         "filled": [float(before_filled.mean()), float(after_filled.mean())]}
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
    parser.add_argument("--seed", type=int, default=0, help="of the generated photos")
    parser.add_argument("--replay", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--user", action="store_true", help=argparse.SUPPRESS)
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
                  "--used", str(args.used), "--seed", str(args.seed),
                  "--epochs", str(args.epochs)]  # fmt: skip
        runs = {
            "ours: photo views + CIFAR-10 replay": common,
            "baseline: photo views alone": [*common, "--replay", "0"],
        }
        results = {name: run_child(__file__, argv) for name, argv in runs.items()}
        user = run_child(__file__, [*common, "--user"])
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
    print(
        "\nThe views each version classifies photos with (chosen on the photos trained on, before training):"
    )
    for name, r in results.items():
        v = r["views"]
        print(
            f"  {name}: {v['chosen']} (on the {v['chosen_on']} trained on: "
            + ", ".join(f"{k} {acc:.3f}" for k, acc in v["candidates"].items())
            + f"); held-out photos: before {r['before']['photos']:.3f} with the default views, "
            f"{v['before_photos']:.3f} with the chosen ones; after {r['after']['photos']:.3f} with the "
            f"chosen, {v['after_photos_parent_views']:.3f} with the default; filled pictures (1,000 test "
            f"images enlarged) {r['filled'][0]:.3f} -> {r['filled'][1]:.3f}"
        )
    print(
        f"\nA person's call, the {user['used'] + user['held_out']} corrections alone ({user['used']} trained "
        f"on, {user['held_out']} held out by default): {user['seconds']:.1f} s in all, "
        f"{user['train_seconds']:.1f} s of it training ({user['images_per_second']:.0f} images/s); "
        f"held-out {user['before']['photos']:.3f} -> {user['after']['photos']:.3f}"
    )
    ours, base = results.values()
    print(
        f"\nours/baseline: photo gain {ours['after']['photos'] - ours['before']['photos']:.3f} vs "
        f"{base['after']['photos'] - base['before']['photos']:.3f}; negative flips "
        f"{ours['negative_flips'] / max(1, base['negative_flips']):.2f}x; "
        f"time {ours['seconds'] / base['seconds']:.2f}x"
    )


if __name__ == "__main__":
    main()
