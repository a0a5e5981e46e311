"""Classifying 1,000 JPEG files: this package against the seed's way, in one run.

    python benchmarks/classify_files.py [--data DIR] [--files N]

The seed classified a folder one photo at a time: ``keras.utils.load_img(path, target_size=(32, 32))``,
then ``model.predict`` on a batch of one. Ours decodes every file (safely, with draft mode for big JPEGs)
and runs the model once over the whole batch. Both use the same untrained `fast` network and the same
files, the test images of the JPEG copy.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np

from benchmarks._common import DEFAULT_DATA, machine, table
from jupyter_cifar.engine.nets import build_model
from jupyter_cifar.engine.predict import classify


def seed_way(model, files: list[Path]) -> list[int]:
    import keras

    labels = []
    for path in files:
        img = keras.utils.load_img(path, target_size=(32, 32))
        x = keras.utils.img_to_array(img)[None]
        labels.append(int(np.argmax(model.predict(x, verbose=0))))
    return labels


def our_way(model, files: list[Path]) -> list[str]:
    return [r.top[0]["label"] for r in classify(model, files, top=1)]


def timed(fn, *args) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--files", type=int, default=1000)
    args = parser.parse_args()
    files = sorted((args.data / "test").glob("*/*.jpg"))[:: max(1, 10000 // args.files)][: args.files]
    model = build_model("fast")
    our_way(model, files[:10])  # warm both paths up (graph tracing) off the clock
    seed_way(model, files[:10])
    ours, _ = timed(our_way, model, files)
    seeds, _ = timed(seed_way, model, files)
    print(f"classify {len(files)} JPEG files ({machine()})")
    print(
        table(
            ["way", "seconds", "files/s", "ratio"],
            [
                ["seed: load_img + predict per file", f"{seeds:.2f}", f"{len(files) / seeds:.0f}", "1.00x"],
                [
                    "jupyter_cifar.classify (batched)",
                    f"{ours:.2f}",
                    f"{len(files) / ours:.0f}",
                    f"{seeds / ours:.1f}x",
                ],
            ],
        )
    )


if __name__ == "__main__":
    main()
