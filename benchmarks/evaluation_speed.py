"""Evaluation speed: the test set through ``predict_proba`` (Keras' compiled predict function) against the
same chunks through an eager call of the model (how ``predict_proba`` ran before).

    python benchmarks/evaluation_speed.py [--presets fast,balanced,accurate] [--images 10000] [--rounds 3]

For each preset, one process builds the network at its precision and times the whole evaluation of
``--images`` real test images both ways, taking turns for ``--rounds`` rounds so that a busy moment of a
shared machine falls on both; twice: the network alone (what a validation pass each epoch runs) and with
the preset's test-time views built in (the final evaluation of ``accurate`` and ``balanced``: six
passes). The first compiled call of each model is timed apart: its traces are that call less what the
same images take once traced. Beside them, TensorFlow's own matrix product in the same precision,
measured in the same run, and the evaluation's GFLOP/s (2 x the network's multiply-adds x views x images
/ s).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import DEFAULT_DATA, machine, matmul_gflops, multiply_adds, table

CHUNK = 256  # predict.BATCH: both ways see the same chunks


def eager(model, x):
    """The old way: each chunk through an eager call of the model."""
    import keras
    import numpy as np

    out = []
    for start in range(0, len(x), CHUNK):
        batch = keras.ops.convert_to_tensor(x[start : start + CHUNK], dtype="float32")
        out.append(keras.ops.convert_to_numpy(model(batch, training=False)))
    return np.concatenate(out)


def measure(preset_name: str, x, rounds: int) -> list[list[str]]:
    import numpy as np

    from jupyter_cifar.engine import nets, tta
    from jupyter_cifar.engine.predict import COMPILED_FROM, predict_proba

    preset = nets.get_preset(preset_name)
    body = nets.build_model(preset_name, precision=preset.precision)
    flops = 2 * sum(map(multiply_adds, body.layers)) * len(x) / 1e9
    models = {"network alone": (body, 1)}
    if preset.tta != "none":
        views = 6 if preset.tta == "flip-translate" else 2  # each view is one pass of the network
        models[f"with its test-time views ({preset.tta})"] = (tta.with_tta(body, preset.tta), views)
    rows = []
    for what, (model, views) in models.items():
        first = x[: COMPILED_FROM + 16]  # compiled: a full chunk traced, then a second size
        start = time.perf_counter()
        predict_proba(model, first)
        first_call = time.perf_counter() - start
        eager(model, x[:CHUNK])  # the eager path's first call, also out of the timing
        times: dict[str, list[float]] = {"eager call": [], "compiled (predict_proba)": []}
        for _ in range(rounds):
            for way, run in (("eager call", eager), ("compiled (predict_proba)", predict_proba)):
                start = time.perf_counter()
                probs = run(model, x)
                times[way].append(time.perf_counter() - start)
                assert np.isfinite(probs).all()
        base = statistics.median(times["eager call"])
        # The traces alone: the first call less what the same images take once traced.
        trace = first_call - statistics.median(times["compiled (predict_proba)"]) * len(first) / len(x)
        for way, seconds in times.items():
            median = statistics.median(seconds)
            rows.append(
                [
                    preset_name,
                    what,
                    way,
                    f"{median:.1f}",
                    f"{flops * views / median:.0f}",
                    f"{base / median:.2f}x",
                    f"{trace:.1f}" if way.startswith("compiled") else "",
                ]
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--presets", default="fast,balanced,accurate")
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import keras

    from jupyter_cifar.engine.data import load_cifar10
    from jupyter_cifar.engine.precision import resolve_precision

    data = load_cifar10(args.data)
    x = data.x_test[: args.images]
    precision = resolve_precision("auto")
    dtype = keras.mixed_precision.DTypePolicy(precision).compute_dtype
    peak = max(matmul_gflops(2048, dtype, reps=4)() for _ in range(3))
    print(f"evaluation speed, backend {keras.backend.backend()}, {machine()}")
    print(f"precision {precision}; TensorFlow's {dtype} matmul peak (2048 square, best): {peak:.0f} GFLOP/s")
    rows = []
    for preset in args.presets.split(","):
        rows += measure(preset, x, args.rounds)
    header = ["preset", "model", "called through", "seconds", "GFLOP/s", "vs eager", "first calls (trace) s"]
    print(table(header, rows))
    print(f"{len(x):,} test images in chunks of {CHUNK}; median of {args.rounds} turns")


if __name__ == "__main__":
    main()
