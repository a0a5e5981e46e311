"""Which way trains a 3x3 convolution on a small map fastest on this machine: measured once per shape, kept.

:mod:`fastview` has three ways to train a plain 3x3 "same" convolution: oneDNN's own kernels, the weight
gradient as nine matrix products (:class:`~.fastview.MatmulGradConv`) and, on the smallest maps, the whole
convolution as one product (:class:`~.fastview.WrittenOutConv`). Which is fastest depends on the CPU, the
precision and the shape, and the lines measured so far differ from one kind of CPU to the next (AMX,
AVX512-BF16 without AMX, AVX2: fastview's rules) and even between two Xeons of one kind (on two of
``fast``'s shapes). So on maps of at most :data:`PROBE_PIXELS` pixels, where another way has won on some
CPU (on larger maps oneDNN's won on every one measured), the view asks :func:`fastest`: one training step
of each way (the forward pass and both gradients) on random data of the layer's shape, in its precision,
at the training batch (at most :data:`PROBE_BATCH`), the ways taking turns for :data:`ROUNDS` rounds. The
median times decide, and another way replaces oneDNN's only when it is at least :data:`MARGIN` times as
fast: a busy moment of a shared machine should not flip a choice.

The answer is kept in ``$JUPYTER_CIFAR_CACHE/kernels.json`` (beside the decoded datasets), under the CPU's
model and flags, TensorFlow's version, the precision, the batch and the shape, so a machine probes each
shape once: autotuning as cuDNN's and XLA's, kept as theirs. Delete the file to measure again;
``JUPYTER_CIFAR_KERNEL_PROBE=0`` takes fastview's measured rules instead. The file holds names of ways and
times only: one that cannot be read, or names a way not offered, is measured anew and rewritten.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import logging
import os
import statistics
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import keras

from .data import default_cache_dir

PROBE_PIXELS = 64  # maps of at most 8x8: where another way than oneDNN's has won on some CPU
PROBE_BATCH = 256  # the batch the rules were measured at; larger ones are probed at this
ROUNDS = 3
STEPS = 2
MARGIN = 1.1
ONEDNN = "oneDNN"
ENV_PROBE = "JUPYTER_CIFAR_KERNEL_PROBE"
FILE_NAME = "kernels.json"

log = logging.getLogger(__name__)
_lock = threading.Lock()  # two trainers in one process probe and write the file one at a time

# A way to train the convolution: a wrapper around it, or None for the Conv2D layer itself (oneDNN's).
Way = Callable[[keras.layers.Conv2D], keras.layers.Layer] | None


def enabled() -> bool:
    """Whether the view probes (the default), or takes fastview's rules (``JUPYTER_CIFAR_KERNEL_PROBE=0``)."""
    return os.environ.get(ENV_PROBE, "1").strip().lower() not in ("0", "false", "no", "off")


def fastest(layer: keras.layers.Conv2D, ways: Mapping[str, Way], batch: int | None = None) -> str:
    """The name of the way in ``ways`` (which holds :data:`ONEDNN`: None) that trains a convolution of
    ``layer``'s shape and precision fastest here, at ``batch`` (None: :data:`PROBE_BATCH`), from the kept
    answer or measured now and kept (see the module)."""
    batch = min(batch or PROBE_BATCH, PROBE_BATCH)
    _, height, width, channels = layer.input.shape
    shape = (int(height), int(width), int(channels), int(layer.filters))
    key = probe_key(shape, layer.compute_dtype, batch, sorted(ways))
    with _lock:
        kept = _read().get(key)
        if isinstance(kept, dict) and kept.get("way") in ways:
            return str(kept["way"])
        started = time.perf_counter()
        seconds = measure(shape, layer.dtype_policy, ways, batch)
        way = pick(seconds)
        log.info(
            "3x3 convolution %s, %s, batch %d: %s (%s; probed in %.1f s)",
            "x".join(map(str, shape)), layer.compute_dtype, batch, way,
            ", ".join(f"{name} {s * 1e3:.1f} ms" for name, s in seconds.items()),
            time.perf_counter() - started,
        )  # fmt: skip
        _write(key, {"way": way, "ms": {n: round(s * 1e3, 3) for n, s in seconds.items()}, "at": _now()})
        return way


def pick(seconds: Mapping[str, float], margin: float = MARGIN) -> str:
    """The fastest way, where it is at least ``margin`` times as fast as oneDNN's; else oneDNN's."""
    best = min(seconds, key=lambda name: seconds[name])
    return best if seconds[ONEDNN] >= margin * seconds[best] else ONEDNN


def measure(
    shape: tuple[int, int, int, int],
    policy: Any,
    ways: Mapping[str, Way],
    batch: int,
    rounds: int = ROUNDS,
    steps: int = STEPS,
) -> dict[str, float]:
    """Median seconds of one training step (forward pass, the input's and the kernel's gradients) of a 3x3
    convolution of ``shape`` (height, width, channels, filters) in ``policy``, through each way, the ways
    taking turns for ``rounds`` rounds of ``steps`` steps (``benchmarks/conv_crossover.py`` times these)."""
    import tensorflow as tf

    height, width, channels, filters = shape
    conv = keras.layers.Conv2D(
        filters, 3, padding="same", use_bias=False, dtype=policy, name="kernel_probe_conv"
    )
    x = tf.cast(tf.random.stateless_normal((batch, height, width, channels), seed=(0, 0)), conv.compute_dtype)
    conv.build(x.shape)
    runs = {name: timed_step(conv if way is None else way(conv), x, steps) for name, way in ways.items()}
    return take_turns(runs, rounds)


def take_turns(runs: Mapping[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """Each clock's median seconds, the clocks taking turns for ``rounds`` rounds (a busy moment of a
    shared machine falls on one round of each, not on all of one)."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            times[name].append(run())
    return {name: statistics.median(seconds) for name, seconds in times.items()}


def timed_step(layer: keras.layers.Layer, x: Any, steps: int) -> Callable[[], float]:
    """A clock of ``layer``'s training step on ``x`` (the forward pass, the input's and the weights'
    gradients), traced and run once now: each call runs ``steps`` steps and gives the seconds of one."""
    import tensorflow as tf

    @tf.function
    def step(x: tf.Tensor) -> list[tf.Tensor]:
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.cast(layer(x, training=True), tf.float32))
        return tape.gradient(loss, [x, *layer.trainable_variables])

    step(x)  # traced, and run once, before the clock

    def run() -> float:
        start = time.perf_counter()
        for _ in range(steps):
            grads = step(x)
        for g in grads:  # the last step's results, to wait for them
            g.numpy()
        return (time.perf_counter() - start) / steps

    return run


def probe_key(shape: tuple[int, ...], dtype: str, batch: int, ways: list[str]) -> str:
    """What an answer depends on: the CPU (model, flags), TensorFlow, the precision, batch, shape, ways."""
    import tensorflow as tf

    from .precision import cpu_flags, cpu_model

    flags = hashlib.sha256(" ".join(sorted(cpu_flags())).encode()).hexdigest()[:12]
    return (
        f"{cpu_model()} flags {flags} | tensorflow {tf.__version__} | {dtype} | batch {batch} | "
        f"{'x'.join(map(str, shape))} | {', '.join(ways)}"
    )


def kept_path() -> Path:
    return default_cache_dir() / FILE_NAME


def _read() -> dict[str, Any]:
    path = kept_path()
    try:
        kept = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("%s cannot be read (%s): the kernels are measured again", path, exc)
        return {}
    return kept if isinstance(kept, dict) else {}


def _write(key: str, answer: dict[str, Any]) -> None:
    """Adds one answer to the file, written whole to a new file and moved over the old one (a reader never
    sees half of it); a folder that cannot be written only costs the next run a probe."""
    path = kept_path()
    kept = {**_read(), key: answer}
    partial = path.with_name(f"{FILE_NAME}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps(kept, indent=1, sort_keys=True))
        os.replace(partial, path)
    except OSError as exc:
        log.warning("the kernels' probe could not keep its answer in %s (%s)", path, exc)
        with contextlib.suppress(OSError):  # a half-written file of ours, where there is one
            partial.unlink(missing_ok=True)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
