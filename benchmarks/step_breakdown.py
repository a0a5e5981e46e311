"""Where a preset's training step spends its time on this CPU: the whole step beside each layer alone.

    python benchmarks/step_breakdown.py [--preset accurate] [--rounds 5] [--pairs 20]

One process builds the preset's network in the precision "auto" picks, compiles it with the preset's
optimizer and takes the trainer's view of it (:func:`jupyter_cifar.engine.fastview.for_training`: the fused
BatchNorm, the matmul weight gradients where they pay). It times the view's whole training step
(``train_on_batch`` at the preset's batch size), then each layer of the view alone: its forward pass and
the gradients with respect to its input and its weights, on random input of the shape it sees in the
network. Convolutions also get their FLOP/s (6 per multiply-add), to set beside the matrix product's peak
that ``benchmarks/cpu_goals.py`` measures; what the whole step takes beyond its layers (the loss, the
optimizer's update, also timed alone) comes last. The time of the harness itself (a sum standing for the loss,
and its gradient, on the layer's output) is measured on its own and taken away. The layers alone add up
to a little less or more than the step: read the shares, not the sum.

First, the step beside the machine's matrix-product speed at the same moment: ``--pairs`` times, a
probe of TensorFlow's 2048-square product (in the precision the step computes in; four products, about
a tenth of a second) right before one training step. A shared virtual machine's speed can change
twofold from one second to the next (on a 2-core Xeon with AMX: the product at 488-1,510 GFLOP/s, the
step at 352-842 ms, within one minute), so a peak measured once and a training speed averaged over
minutes (``benchmarks/cpu_goals.py``) can compare a fast moment with slow ones. Each pair's share (the
step's GFLOP/s over the probe's just before it) and the fastest step against the fastest probe are
printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import machine, matmul_gflops, multiply_adds, table


def seconds(fn: Callable[[], Any], reps: int, rounds: int) -> float:
    """The median over ``rounds`` of one call's time, each round ``reps`` calls (after a warm-up call)."""
    fn()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        times.append((time.perf_counter() - start) / reps)
    return statistics.median(times)


def layer_step(layer: Any, shape: tuple[int, ...], dtype: str) -> Callable[[], Any]:
    """One layer's forward pass and its input and weight gradients, as a compiled TensorFlow function.

    ``layer`` None: the harness alone (the sum that stands for a loss, its gradient), on an output of
    ``shape``, to take away from a layer's time.
    """
    import tensorflow as tf

    inputs = tf.cast(tf.random.normal(shape), dtype)
    weights = layer.trainable_weights if layer is not None else []

    @tf.function
    def step() -> list[Any]:
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            outputs = layer(inputs, training=True) if layer is not None else tf.identity(inputs)
            loss = tf.reduce_sum(tf.cast(outputs, tf.float32))
        return [g for g in tape.gradient(loss, [inputs, *weights]) if g is not None]

    return lambda: [g.numpy() for g in step()]


def optimizer_update(model: Any) -> Callable[[], Any]:
    """The model's optimizer applying one step of fixed small gradients to its trainable weights."""
    import tensorflow as tf

    variables = model.trainable_variables
    grads = [tf.random.normal(v.shape, stddev=1e-3, dtype=v.dtype) for v in variables]

    @tf.function
    def update() -> Any:
        model.optimizer.apply(grads, variables)
        return variables[0]

    return lambda: update().numpy()


def paired_with_peak(step: Callable[[], Any], dtype: str, pairs: int) -> list[tuple[float, float]]:
    """``pairs`` times: the matrix product's GFLOP/s, then one ``step``'s seconds, right after it (``step``
    already warmed up)."""
    probe = matmul_gflops(2048, dtype, reps=4)
    found = []
    for _ in range(pairs):
        peak = probe()
        start = time.perf_counter()
        step()
        found.append((peak, time.perf_counter() - start))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="accurate")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pairs", type=int, default=20, help="steps timed beside the matrix product")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be 1 or more")
    if args.pairs < 1:
        parser.error("--pairs must be 1 or more")
    import keras
    import numpy as np

    from jupyter_cifar.engine import fastview, nets
    from jupyter_cifar.engine.precision import resolve_precision

    try:
        preset = nets.get_preset(args.preset)
    except Exception as e:
        parser.error(str(e))
    batch, precision = preset.batch_size, resolve_precision(preset.precision)
    model = nets.build_model(args.preset, precision=precision)
    nets.compile_for_training(model, preset, preset.learning_rate, total_steps=1000)
    view = fastview.for_training(model)
    images = np.random.default_rng(0).integers(0, 256, (batch, 32, 32, 3)).astype(np.float32)
    labels = keras.utils.to_categorical(np.arange(batch) % 10, 10)
    for _ in range(2):
        view.train_on_batch(images, labels)
    whole = seconds(lambda: view.train_on_batch(images, labels), 3, args.rounds)
    print(f"training step of {args.preset}, batch {batch}, {precision}; {machine()}")
    print(f"whole step: {whole * 1e3:.0f} ms ({batch / whole:.0f} images/s)")
    flop = 6 * batch * sum(map(multiply_adds, view.layers))
    dtype = "bfloat16" if "bfloat16" in precision else "float32"
    pairs = paired_with_peak(lambda: view.train_on_batch(images, labels), dtype, args.pairs)
    shares = sorted(flop / took / 1e9 / peak for peak, took in pairs)
    best_peak, best_step = max(peak for peak, _ in pairs), min(took for _, took in pairs)
    fastest = flop / best_step / 1e9
    print(f"beside the {dtype} matrix product, {args.pairs} pairs (the product at "
          f"{min(p for p, _ in pairs):.0f}-{best_peak:.0f} GFLOP/s, the step at "
          f"{best_step * 1e3:.0f}-{max(t for _, t in pairs) * 1e3:.0f} ms): training at "
          f"{statistics.median(shares):.0%} of the product's speed just before "
          f"[{shares[0]:.0%}-{shares[-1]:.0%}]; the fastest step {fastest:.0f} GFLOP/s, "
          f"{fastest / best_peak:.0%} of the fastest product")  # fmt: skip
    rows, times, kinds = [], [], {"convolutions": 0.0, "the other layers": 0.0}
    harness: dict[tuple[tuple[int, ...], str], float] = {}
    for layer in view.layers[1:]:
        if any(d is None for d in layer.input.shape[1:]):
            continue
        out = ((batch, *layer.output.shape[1:]), layer.compute_dtype)
        if out not in harness:
            harness[out] = seconds(layer_step(None, *out), 5, args.rounds)
        step = layer_step(layer, (batch, *layer.input.shape[1:]), layer.compute_dtype)
        alone = seconds(step, 5, args.rounds)
        took = max(0.0, alone - harness[out])
        macs = multiply_adds(layer)
        convolution = isinstance(getattr(layer, "conv", layer), keras.layers.Conv2D)
        kinds["convolutions" if convolution else "the other layers"] += took
        flops = f"{6 * macs * batch / took / 1e9:.0f}" if macs and took > 0 else ""
        shape = "x".join(map(str, layer.input.shape[1:]))
        rows.append([layer.name, type(layer).__name__, shape, f"{took * 1e3:.1f}", flops])
        times.append(took)
    total = sum(kinds.values())
    for row, took in zip(rows, times, strict=True):
        row.insert(4, f"{took / total:.1%}")
    print(table(["layer", "kind", "input", "ms alone", "share of the layers", "GFLOP/s"], rows))
    print("; ".join(f"{kind}: {took * 1e3:.0f} ms ({took / total:.0%})" for kind, took in kinds.items()))
    update = seconds(optimizer_update(view), 5, args.rounds)
    print(f"the optimizer's update alone ({type(view.optimizer).__name__}): {update * 1e3:.0f} ms "
          f"({update / whole:.0%} of the step)")  # fmt: skip
    rest = whole - total
    if rest > 0:  # the loss, the optimizer's update, the step's own calls
        print(f"the whole step beyond its layers alone: {rest * 1e3:.0f} ms ({rest / whole:.0%} of the step)")


if __name__ == "__main__":
    main()
