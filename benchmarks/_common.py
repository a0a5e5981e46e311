"""What every benchmark needs: the data folder, a machine description, a table printer."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = Path(os.environ.get("JUPYTER_CIFAR_SHARED", REPO.parent / "shared")) / "cifar10"


def machine() -> str:
    """The CPU (model, clock and the features our kernels care about), cores and Python, for every report:
    the line a trained model keeps (``jupyter_cifar.engine.precision.machine``). A virtual machine's
    model name can be as bare as "Intel(R) Xeon(R) Processor"; the family and model numbers and the clock
    tell two such CPUs apart (two 2-core Xeons here trained `accurate` at 1,650 and 714 images/s)."""
    from jupyter_cifar.engine.precision import machine as facts
    from jupyter_cifar.engine.precision import machine_text

    return f"{machine_text(facts(gpus=False))}, Python {platform.python_version()}"


IMPORTED = ("resnet50", "mobilenetv2")


def imported_network(name: str) -> Any:
    """Keras' ResNet50 or MobileNetV2 made for 32x32 images and 10 classes, random weights (seed 0): a
    network as ``jupyter cifar models import`` takes one in and ``train --from`` trains it further."""
    import keras

    keras.utils.set_random_seed(0)
    make = {"resnet50": keras.applications.ResNet50, "mobilenetv2": keras.applications.MobileNetV2}[name]
    return make(weights=None, input_shape=(32, 32, 3), classes=10)


def multiply_adds(layer: Any) -> int:
    """One image's multiply-adds through a Conv2D or Dense layer (a fastview layer's ``.conv`` counts as
    the convolution it wraps); 0 for any other layer."""
    from keras import layers

    inner = getattr(layer, "conv", layer)
    if isinstance(inner, layers.Conv2D):
        kh, kw, channels, filters = inner.kernel.shape
        _, height, width, _ = inner.output.shape
        return int(height * width * kh * kw * channels * filters)
    if isinstance(inner, layers.Dense):
        return int(inner.kernel.shape[0] * inner.kernel.shape[1])
    return 0


def matmul_gflops(n: int, dtype: str, reps: int) -> Callable[[], float]:
    """A probe of the machine's matrix-product speed: each call times ``reps`` of TensorFlow's ``n``-square
    products in ``dtype`` on all cores (after one warm-up when made) and returns their GFLOP/s."""
    import tensorflow as tf

    a = tf.random.normal((n, n), dtype=tf.float32)
    a, b = tf.cast(a, dtype), tf.cast(tf.transpose(a), dtype)
    tf.linalg.matmul(a, b).numpy()

    def probe() -> float:
        start = time.perf_counter()
        for _ in range(reps):
            c = tf.linalg.matmul(a, b)
        c.numpy()
        return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9

    return probe


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [list(map(str, header))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# A benchmark measures each run in a fresh process (its own clock, its own Keras backend): the script
# calls itself with internal arguments, and the child prints its figures as one line of JSON.
RESULT = "RESULT "


class ChildFailed(Exception):
    """A benchmark child exited with an error or printed no result; the message is its stderr's end."""


def print_result(result: Mapping[str, Any]) -> None:
    """In a child: hand the run's figures to the parent (see :func:`run_child`)."""
    print(RESULT + json.dumps(result), flush=True)


def run_child(
    script: str, args: Sequence[str], env: Mapping[str, str] | None = None, python: str | None = None
) -> dict[str, Any]:
    """Run ``python script *args`` (this interpreter unless ``python`` names another) and return what it
    gave :func:`print_result`."""
    out = subprocess.run([python or sys.executable, os.path.abspath(script), *args], capture_output=True,
                         text=True, env=None if env is None else {**os.environ, **env})  # fmt: skip
    found = [line for line in out.stdout.splitlines() if line.startswith(RESULT)]
    if out.returncode or not found:
        raise ChildFailed(out.stderr.strip()[-3000:] or f"exit status {out.returncode}, no result")
    result: dict[str, Any] = json.loads(found[-1][len(RESULT) :])
    return result


def trained_fast(data: str, path: Path) -> str:
    """``fast`` trained on all of CIFAR-10 with its default recipe (seed 0), saved at ``path``: the model a
    benchmark measures when it is given none."""
    subprocess.run(
        [sys.executable, "-m", "jupyter_cifar", "train", "--preset", "fast", "--seed", "0", "--data", data,
         "--save", str(path)],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return str(path)
