"""Training speed with the faster TensorFlow kernels (engine.fastview) against Keras' own layers.

    python benchmarks/fast_kernels.py [--presets fast,accurate] [--steps 8] [--rounds 4] [--precision P]

For each preset, one process builds the network once and trains it (``train_on_batch`` on one batch of
real training images, at the preset's batch size and precision, or ``--precision``'s) through five
models that share its variables: the model itself (Keras' layers), the view with the fused BatchNorm
only, with the matmul kernel gradients only, with both, and with both and the convolutions on small maps
written out as one matrix product where that pays (``fastview.written_out_pays``: what the trainer
uses). They take turns, ``--steps`` steps each, for ``--rounds`` rounds, so that a busy moment of a shared
machine falls on all of them; the table gives the median images/s and its ratios to Keras' own and to
both kernels without the written-out convolutions.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import DEFAULT_DATA, machine, table

VARIANTS = {  # name: for_training's switches (None: the model itself)
    "Keras' layers": None,
    "fused BatchNorm": {"batchnorm": True, "convolutions": False},
    "matmul kernel gradients": {"batchnorm": False, "convolutions": True, "written_out": False},
    "both": {"batchnorm": True, "convolutions": True, "written_out": False},
    "both, small maps written out (the trainer's)": {"batchnorm": True, "convolutions": True},
}


def measure(preset_name: str, x, y, steps: int, rounds: int, precision: str | None) -> dict[str, float]:
    import keras

    from jupyter_cifar.engine import fastview, nets

    preset = nets.get_preset(preset_name)
    model = nets.build_model(preset_name, precision=precision or preset.precision)
    nets.compile_for_training(model, preset, preset.learning_rate, total_steps=1000)
    batch = preset.batch_size
    images, labels = x[:batch], keras.utils.to_categorical(y[:batch], 10)
    models = {
        name: model if switches is None else fastview.for_training(model, **switches)
        for name, switches in VARIANTS.items()
    }
    for m in models.values():  # compile the step functions before the clock starts
        for _ in range(2):
            m.train_on_batch(images, labels)
    rates: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, m in models.items():
            start = time.perf_counter()
            for _ in range(steps):
                m.train_on_batch(images, labels)
            rates[name].append(steps * batch / (time.perf_counter() - start))
    return {name: statistics.median(r) for name, r in rates.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--presets", default="fast,accurate")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--precision", help="instead of the preset's (auto, float32, mixed_bfloat16)")
    args = parser.parse_args()
    import keras

    from jupyter_cifar.engine.data import load_cifar10
    from jupyter_cifar.engine.precision import resolve_precision

    data = load_cifar10(args.data)
    print(f"training step speed, backend {keras.backend.backend()}, {machine()}")
    rows = []
    for preset in args.presets.split(","):
        rates = measure(preset, data.x_train, data.y_train, args.steps, args.rounds, args.precision)
        base = rates["Keras' layers"]
        rows += [
            [preset, name, f"{rate:.0f}", f"{rate / base:.2f}x", f"{rate / rates['both']:.2f}x"]
            for name, rate in rates.items()
        ]
    print(table(["preset", "training through", "images/s", "vs Keras' layers", "vs both"], rows))
    precision = resolve_precision(args.precision or "auto")
    print(f"precision: {precision}; median of {args.rounds} turns of {args.steps} steps")


if __name__ == "__main__":
    main()
