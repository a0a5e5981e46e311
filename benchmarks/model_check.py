"""What checking a model file costs against Keras' own load, for the everyday models a user brings.

    python benchmarks/model_check.py [--repeats 5]

Each model (the app's presets' networks, and the everyday Keras models of issue 15 at 32x32: a Sequential
CNN with Dropout, one with augmentation layers, a residual block, MobileNetV2, ResNet50, EfficientNetB0,
weights=None) is saved as ``.keras``; then, in turns, ``inspect_model_file`` (the container, the HDF5
metadata, the config and the sizes, without Keras) and ``keras.saving.load_model`` are timed: medians,
and the check's share of Keras' load (goal: under a fifth).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path[:0] = [
    str(Path(__file__).resolve().parent.parent),
    str(Path(__file__).resolve().parent.parent / "tests"),
]

from benchmarks._common import machine, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import keras
    from test_layersizes import FAMILIES, everyday_model

    from jupyter_cifar.engine.modelfiles import inspect_model_file
    from jupyter_cifar.engine.nets import build_model

    print(f"checking a model file against Keras' own load; {machine()}")
    models = {f"preset {p}": (lambda p=p: build_model(p)) for p in ("fast", "accurate")}
    models |= {name: (lambda name=name: everyday_model(name)) for name in FAMILIES}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, make in models.items():
            path = Path(tmp) / f"{name.replace(' ', '-')}.keras"
            model = make()
            model.save(path)
            inspect_model_file(path)  # first use: what the check imports
            keras.saving.load_model(path)
            checks, loads = [], []
            for _ in range(args.repeats):
                start = time.perf_counter()
                inspect_model_file(path)
                checks.append(time.perf_counter() - start)
                start = time.perf_counter()
                keras.saving.load_model(path)
                loads.append(time.perf_counter() - start)
            check, load = statistics.median(checks), statistics.median(loads)
            megabytes = path.stat().st_size / 1e6
            figures = [f"{megabytes:.1f}", f"{check * 1e3:.0f}", f"{load * 1e3:.0f}", f"{check / load:.2f}"]
            rows.append([name, *figures])
            print(rows[-1], flush=True)
    print(table(["model", "MB", "check ms", "Keras' load ms", "check / load"], rows))
    print(f"median of {args.repeats}; goal: check / load under 0.2")


if __name__ == "__main__":
    main()
