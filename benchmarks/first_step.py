"""A training's first step: the optimizer's, metrics' and loss's variables made by the step's first trace
(Keras as it comes under TensorFlow) against made before it (the trainer's loop,
:func:`jupyter_cifar.engine.loop.build_before_tracing`); seconds from the loop's start to the end of its
first batch, side by side.

    python benchmarks/first_step.py [--data DIR] [--models fast,accurate,resnet50] [--rounds 2]

``fast`` and ``accurate`` are built as the trainer builds them (the precision "auto" picks here, the
preset's optimizer, the trainer's view with the faster kernels); ``resnet50`` is Keras' ResNet50 made for
32x32 images and 10 classes, as ``jupyter cifar models import`` takes it in and ``train --from`` trains it
further (the ``tutorial`` preset's recipe). A ``tf.function`` that creates variables is traced twice, so
the first way traces the train step twice. Each way and model runs in a process of its own (a process
keeps what it traced); the ways take turns, ``--rounds`` times each.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import DEFAULT_DATA, imported_network, machine, print_result, run_child, table

WAYS = ("made by the first trace", "made before it (the trainer)")
MODELS = ("fast", "accurate", "resnet50")


def child(args: argparse.Namespace) -> dict[str, float | str]:
    """Seconds from the loop's start to the end of its first batch, for one way and model."""
    import keras
    import numpy as np

    from jupyter_cifar.engine import fastview, loop, nets
    from jupyter_cifar.engine.batches import Batches
    from jupyter_cifar.engine.data import load_cifar10
    from jupyter_cifar.engine.precision import resolve_precision

    if args.run_way == WAYS[0]:
        loop.build_before_tracing = lambda *_: None  # the loop as it was: Keras builds in the first trace
    data = load_cifar10(args.data).subset(512, 100)
    keras.utils.set_random_seed(0)
    if args.run_model == "resnet50":
        preset = nets.get_preset("tutorial")
        model = imported_network("resnet50")
        precision = "float32"
    else:
        preset = nets.get_preset(args.run_model)
        precision = resolve_precision(preset.precision)
        model = nets.build_model(args.run_model, precision=precision)
        nets.init_from_data(model, data.x_train, seed=0)
    one_hot = nets.compile_for_training(model, preset, preset.learning_rate, total_steps=1000)
    view = fastview.for_training(model, batch=preset.batch_size)
    y = data.y_train.astype(np.int64)
    labels = np.eye(10, dtype=np.float32)[y] if one_hot else y
    source = Batches(data.x_train, labels, preset.batch_size, seed=0)

    class FirstBatch(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            self.model.stop_training = True

    start = time.perf_counter()
    try:
        loop.fit_batches(view, source, epochs=1, callbacks=[FirstBatch()])
    finally:
        source.close()
    return {"seconds": time.perf_counter() - start, "precision": precision}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("JUPYTER_CIFAR_DATA", str(DEFAULT_DATA)))
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--run-way", choices=WAYS, help=argparse.SUPPRESS)
    parser.add_argument("--run-model", choices=MODELS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_way:
        print_result(child(args))
        return
    models = [name.strip() for name in args.models.split(",") if name.strip()]
    if not models or set(models) - set(MODELS):
        parser.error(f"--models: a comma-separated list of {', '.join(MODELS)}")
    if args.rounds < 1:
        parser.error("--rounds must be 1 or more")
    print(f"a training's first step, loop start to first batch end; {machine()}", flush=True)
    rows = []
    for name in models:
        found: dict[str, list[dict]] = {way: [] for way in WAYS}
        for _ in range(args.rounds):
            for way in WAYS:
                found[way].append(run_child(__file__, ["--data", args.data, "--run-way", way,
                                                       "--run-model", name]))  # fmt: skip
                print(name, way, found[way][-1], flush=True)
        before, after = ([r["seconds"] for r in found[way]] for way in WAYS)
        ratio = statistics.median(b / a for b, a in zip(before, after, strict=True))
        rows.append([f"{name} ({found[WAYS[0]][0]['precision']})", " ".join(f"{s:.1f}" for s in before),
                     " ".join(f"{s:.1f}" for s in after), f"{ratio:.2f}x"])  # fmt: skip
    print(table(["model", f"{WAYS[0]}, s", f"{WAYS[1]}, s", "faster by"], rows))


if __name__ == "__main__":
    main()
