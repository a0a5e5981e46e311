"""The trainer's training loop, piece by piece: Keras' ``fit`` against the trainer's own epoch loop, with
glibc's malloc as it comes and with freed memory kept; training images/s and page faults, side by side.

    python benchmarks/train_loop.py [--data DIR] [--preset fast] [--images 5120] [--rounds 2]

Each way trains a new model of the preset as the trainer builds it (the precision "auto" picks here, its
recipe's optimizer, the trainer's view with the faster kernels) on the same augmented batches
(:class:`jupyter_cifar.engine.batches.Batches`, a Keras ``PyDataset``), for two epochs; the rate is the
second's (the first traces and warms up), between the ends of its first and last batches, and so are the
minor page faults per step. The ways:

- ``fit``, glibc as it comes: the trainer before ``engine/loop.py`` and ``engine/allocator.py`` (``fit``
  shuffles the batches' order and reads them through ``tf.data``'s generator dataset under TensorFlow);
- ``fit`` with freed memory kept (:func:`jupyter_cifar.engine.allocator.keep_freed_memory`);
- :func:`jupyter_cifar.engine.loop.fit_batches` (one ``train_on_batch`` per batch), glibc as it comes;
- ``fit_batches`` with freed memory kept: the trainer now.

The allocator's setting is the process's, so every way runs in a process of its own; the ways take turns,
``--rounds`` times each, and each is compared with the first way of its own round (the machine's speed
drifts).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import DEFAULT_DATA, machine, print_result, run_child, table

WAYS = {
    "fit, glibc as it comes": ("fit", False),
    "fit, freed memory kept": ("fit", True),
    "fit_batches, glibc as it comes": ("loop", False),
    "fit_batches, freed memory kept (the trainer)": ("loop", True),
}


def child(args: argparse.Namespace) -> dict[str, float | str]:
    """One way's second epoch: images/s and minor page faults per step."""
    import keras
    import numpy as np

    from jupyter_cifar.engine import fastview, nets
    from jupyter_cifar.engine.allocator import keep_freed_memory
    from jupyter_cifar.engine.batches import Batches
    from jupyter_cifar.engine.data import load_cifar10
    from jupyter_cifar.engine.loop import fit_batches
    from jupyter_cifar.engine.precision import resolve_precision

    way, keep = WAYS[args.run_way]
    memory = keep_freed_memory() if keep else "glibc as it comes"
    data = load_cifar10(args.data).subset(args.images, 100)
    preset = nets.get_preset(args.preset)
    precision = resolve_precision(preset.precision)
    model = nets.build_model(args.preset, precision=precision)
    nets.init_from_data(model, data.x_train, seed=0)
    one_hot = nets.compile_for_training(model, preset, preset.learning_rate, total_steps=1000)
    view = fastview.for_training(model)
    y = data.y_train.astype(np.int64)
    labels = np.eye(10, dtype=np.float32)[y] if one_hot else y
    source = Batches(data.x_train, labels, preset.batch_size, augment=preset.augment, seed=0)
    ends: list[tuple[float, int]] = []  # the second epoch's batch ends: when, and the faults by then

    class Stamps(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            if self.epoch == 1:
                ends.append((time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt))

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.epoch = epoch

    try:
        if way == "fit":
            view.fit(source, epochs=2, verbose=0, callbacks=[Stamps()])
        else:
            fit_batches(view, source, epochs=2, callbacks=[Stamps()])
    finally:
        source.close()
    (start, faults_before), (end, faults_after) = ends[0], ends[-1]
    steps = len(ends) - 1
    return {
        "images_per_second": steps * preset.batch_size / (end - start),
        "faults_per_step": (faults_after - faults_before) / steps,
        "precision": precision,
        "memory": memory,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("JUPYTER_CIFAR_DATA", str(DEFAULT_DATA)))
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--images", type=int, default=5120)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--run-way", choices=WAYS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_way:
        print_result(child(args))
        return
    if args.rounds < 1:
        parser.error("--rounds must be 1 or more")
    from jupyter_cifar.engine.nets import get_preset

    batch = get_preset(args.preset).batch_size
    if args.images < 3 * batch:
        parser.error(f"--images: at least 3 batches of {batch} ({3 * batch}) for a second epoch to time")
    print(f"training {args.preset}: the 2nd epoch of {args.images} images in batches of {batch}; {machine()}",
          flush=True)  # fmt: skip
    common = ["--data", args.data, "--preset", args.preset, "--images", str(args.images)]
    found: dict[str, list[dict]] = {name: [] for name in WAYS}
    for _ in range(args.rounds):
        for name in WAYS:
            found[name].append(run_child(__file__, [*common, "--run-way", name]))
            print(name, found[name][-1], flush=True)
    first = next(iter(WAYS))
    rows = []
    for name, runs in found.items():
        rates = [r["images_per_second"] for r in runs]
        ratios = [r / base["images_per_second"] for r, base in zip(rates, found[first], strict=True)]
        rows.append([name, " ".join(f"{r:.0f}" for r in rates),
                     f"{statistics.median(r['faults_per_step'] for r in runs):,.0f}",
                     f"{statistics.median(ratios):.2f}x"])  # fmt: skip
    kept = found[next(reversed(WAYS))][0]["memory"]
    print(f"in {runs[0]['precision']}; freed memory {kept}")
    print(table(["way", "images/s, each round", "page faults a step", "against the first way"], rows))


if __name__ == "__main__":
    main()
