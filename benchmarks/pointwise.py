"""Convolutions that are one matrix product, trained through TensorFlow's convolution kernels against
as that product (:class:`jupyter_cifar.engine.fastview.PointwiseConv`): one training step (forward pass
and every gradient) of each shape alone, then of whole imported networks, side by side.

    python benchmarks/pointwise.py [--batches 32,256] [--networks resnet50,mobilenetv2] [--rounds 3]

The shapes are ResNet50's and MobileNetV2's on a 32x32 image (1x1 kernels on maps from 1x1 to 32x32, with
and without a stride), in float32. The networks are Keras' own, made for 32x32 images and 10 classes (as
``jupyter cifar models import`` takes them in), trained by ``train_on_batch`` with Adam: the model itself
against the trainer's view (:func:`jupyter_cifar.engine.fastview.for_training`) with only its product
convolutions swapped in (no fused BatchNorm, no probe), so that the ratio is theirs alone. The ways take
turns ``--rounds`` times; medians.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import IMPORTED, imported_network, machine, table

# (map side, channels, filters, stride)
SHAPES = [(1, 512, 2048, 1), (1, 2048, 512, 1), (2, 1024, 2048, 2), (2, 256, 1024, 1), (4, 512, 1024, 2),
          (4, 256, 1024, 1), (8, 128, 512, 1), (16, 64, 256, 1), (16, 96, 24, 1),
          (32, 64, 256, 1)]  # fmt: skip


def model_step(model: object, x: object, y: object, steps: int = 3) -> Callable[[], float]:
    from jupyter_cifar.engine.loop import build_before_tracing

    build_before_tracing(model, x, y)  # type: ignore[arg-type]
    model.train_on_batch(x, y)  # type: ignore[attr-defined]

    def run() -> float:
        start = time.perf_counter()
        for _ in range(steps):
            model.train_on_batch(x, y)  # type: ignore[attr-defined]
        return (time.perf_counter() - start) / steps

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="32,256")
    parser.add_argument("--networks", default=",".join(IMPORTED))
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    networks = [n.strip() for n in args.networks.split(",") if n.strip()]
    if set(networks) - set(IMPORTED) or not batches or min(batches) < 1 or args.rounds < 1:
        parser.error(f"--batches: positive numbers; --networks: of {', '.join(IMPORTED)}; --rounds >= 1")
    import keras
    import numpy as np
    import tensorflow as tf

    from jupyter_cifar.engine import fastview
    from jupyter_cifar.engine.convprobe import take_turns, timed_step

    print(f"one training step, TensorFlow's convolution against one product, float32; {machine()}")
    rows = []
    for side, channels, filters, stride in SHAPES:
        for batch in batches:
            conv = keras.layers.Conv2D(filters, 1, strides=stride)
            conv(keras.Input((side, side, channels)))
            x = tf.random.normal((batch, side, side, channels))
            ways = {"conv": timed_step(conv, x, 3), "product": timed_step(fastview.PointwiseConv(conv), x, 3)}
            found = take_turns(ways, args.rounds)
            shape = f"{side}x{side}, {channels} to {filters}" + (f", stride {stride}" if stride > 1 else "")
            rows.append([shape, batch, f"{found['conv'] * 1e3:.1f}", f"{found['product'] * 1e3:.1f}",
                         f"{found['conv'] / found['product']:.2f}x"])  # fmt: skip
            print(*rows[-1], flush=True)
    print(table(["1x1 convolution", "batch", "TensorFlow's, ms", "one product, ms", "faster by"], rows))
    rows = []
    for name in networks:
        for batch in batches[:1]:
            model = imported_network(name)
            model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
            view = fastview.for_training(model, batchnorm=False, probe=False)
            swapped = sum(isinstance(layer, fastview.PointwiseConv) for layer in view.layers)
            x = np.random.default_rng(0).random((batch, 32, 32, 3), np.float32) * 255
            y = np.arange(batch) % 10
            steps = {"model": model_step(model, x, y), "view": model_step(view, x, y)}
            found = take_turns(steps, args.rounds)
            rates = [f"{batch / found[way]:.0f}" for way in ("model", "view")]
            rows.append([name, swapped, batch, *rates, f"{found['model'] / found['view']:.2f}x"])
            print(*rows[-1], flush=True)
    print(table(["network", "products", "batch", "images/s as it is", "through the view", "faster by"], rows))


if __name__ == "__main__":
    main()
