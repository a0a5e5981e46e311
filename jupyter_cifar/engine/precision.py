"""Which training precision (Keras dtype policy) is fastest where this runs: decided from the devices
Keras' backend sees, the CPU's feature flags (:func:`cpu_precision`), and where those promise bfloat16
units, a measurement (:func:`bfloat16_speedup`): the flags say what the CPU has, not what the kernels get
from it (oneDNN's bfloat16 kernels without AMX run at 0.35-0.7x float32's speed on a Xeon, at 1.95x on an
AMD EPYC). Keras is imported only when "auto" must be resolved.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import BadParameter

PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")
# bfloat16 is chosen where its products run at least this much faster than float32's: mixed precision
# keeps float32 weights and casts, so training gains less than the kernels do (AMD EPYC: products
# 1.95x, training 1.50-1.77x).
BFLOAT16_MARGIN = 1.2

log = logging.getLogger(__name__)


def resolve_precision(precision: str = "auto") -> str:
    """The dtype policy that "auto" stands for here.

    mixed_float16 where a GPU is visible; mixed_bfloat16 on a CPU with bfloat16 units (AMX under TensorFlow
    or torch: 1.5-3x float32's training speed, measured on a Xeon; AVX512-BF16 under TensorFlow: 1.50x for
    ``fast`` and 1.77x for ``accurate`` on an AMD EPYC, ``benchmarks/backends.py``) where they also
    measure faster here (:func:`bfloat16_speedup`, once per process); float32 elsewhere (JAX's CPU backend
    gains nothing from bf16, CPUs without bf16 units emulate it slowly, and oneDNN's AVX512-BF16 kernels
    on a Xeon with AMX held off, ``ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16``, trained ``fast`` at 0.58-0.65x
    and ``accurate`` at 0.59-0.83x float32's speed in two runs).
    """
    if precision not in PRECISIONS:
        raise BadParameter("--precision", f"must be one of {', '.join(PRECISIONS)} (got {precision!r})")
    if precision != "auto":
        return precision
    import keras

    if gpu_visible():
        return "mixed_float16"
    return cpu_precision(keras.backend.backend(), cpu_flags(), bfloat16_speedup)


def cpu_precision(backend: str, flags: set[str], speedup: Callable[[], float]) -> str:
    """The fastest training precision on a CPU with these /proc/cpuinfo flags, under this Keras backend
    (see :func:`resolve_precision`): bfloat16 where the flags promise units for it and ``speedup()`` (how
    many times faster it measures than float32, asked only then) says they deliver."""
    amx = backend in ("tensorflow", "torch") and flags >= {"amx_bf16", "amx_tile"}
    avx512 = backend == "tensorflow" and "avx512_bf16" in flags
    if (amx or avx512) and speedup() >= BFLOAT16_MARGIN:
        return "mixed_bfloat16"
    return "float32"


@functools.cache
def bfloat16_speedup(rounds: int = 4) -> float:
    """How many times faster bfloat16 runs than float32 here: a training step's kinds of kernel, each
    forward and backward, through Keras' backend: a 1024x1024 matrix product and a 3x3 convolution of 128
    channels on 16x16 maps (batch 32), with their gradients (the products' two, the convolution's for its
    input and for its filters: two thirds of a training step's work, and kernels of their own in oneDNN,
    which may gain less from bfloat16 than the forward ones). The two precisions take turns, the best of
    ``rounds`` each (fewer where bfloat16 runs at under half float32's speed: emulated). About 0.3-1 s,
    once per process, and only where the CPU's flags promise bfloat16 units. 0.0 where bfloat16 does not
    run at all (the reason logged).
    """
    import keras
    from keras import ops

    def timed(dtype: str) -> float:
        a = ops.ones((1024, 1024), dtype=dtype)
        x = ops.ones((32, 16, 16, 128), dtype=dtype)
        k = ops.ones((3, 3, 128, 128), dtype=dtype)
        start = time.perf_counter()
        total = sum(ops.sum(ops.cast(g, "float32")) for g in gradients(a, x, k))
        ops.convert_to_numpy(total)  # waits for the result (numpy has no bfloat16)
        return time.perf_counter() - start

    try:
        gradients = _gradients(keras.backend.backend())
        timed("float32"), timed("bfloat16")  # warm-up: the kernels are chosen and built
        times: dict[str, list[float]] = {"float32": [], "bfloat16": []}
        for _ in range(rounds):
            for dtype, seconds in times.items():
                seconds.append(timed(dtype))
            if min(times["bfloat16"]) > 2 * min(times["float32"]):
                break  # emulated: no round can change the answer, and each takes seconds
    except Exception as e:  # whatever the backend raises, bfloat16 is not for here
        why = f"{type(e).__name__}: {e}"
        log.warning("jupyter_cifar: bfloat16 does not run here (%s); training in float32", why)
        return 0.0
    speedup = min(times["float32"]) / min(times["bfloat16"])
    log.info("jupyter_cifar: bfloat16 runs at %.2fx float32's speed here", speedup)
    return speedup


def _probe_loss(a: Any, x: Any, k: Any) -> Any:
    """What :func:`bfloat16_speedup` differentiates: a matrix product and a convolution, summed."""
    from keras import ops

    return ops.sum(ops.matmul(a, a)) + ops.sum(ops.conv(x, k, padding="same"))


def _gradients(backend: str) -> Callable[..., Sequence[Any]]:
    """``f(a, x, k)``: the gradients of :func:`_probe_loss` with respect to each, computed by the
    backend's own differentiation (Keras has none of its own), so that its backward kernels run."""
    import importlib

    if backend == "tensorflow":
        tf = importlib.import_module("tensorflow")

        def tf_gradients(*tensors: Any) -> Sequence[Any]:
            with tf.GradientTape() as tape:
                tape.watch(tensors)
                total = _probe_loss(*tensors)
            return tape.gradient(total, tensors)

        return tf_gradients
    if backend == "torch":
        torch = importlib.import_module("torch")

        def torch_gradients(*tensors: Any) -> Sequence[Any]:
            tensors = tuple(t.requires_grad_() for t in tensors)
            return torch.autograd.grad(_probe_loss(*tensors), tensors)

        return torch_gradients
    if backend == "jax":
        jax = importlib.import_module("jax")
        return jax.grad(_probe_loss, argnums=(0, 1, 2))
    raise BadParameter("backend", f"no way to differentiate under Keras' {backend!r} backend")


def gpu_visible() -> bool:
    """Whether Keras' backend sees a GPU (asked through Keras or torch, never through TensorFlow)."""
    import importlib

    import keras

    backend = keras.backend.backend()
    try:
        if backend == "torch":
            return bool(importlib.import_module("torch").cuda.is_available())
        devices = keras.distribution.list_devices()
    except Exception:  # a backend without a device listing: assume a CPU
        return False
    return any("gpu" in str(d).lower() or "cuda" in str(d).lower() for d in devices)


@functools.cache
def cpu_info() -> dict[str, str]:
    """The first processor's fields in /proc/cpuinfo ("model name", "cpu family", "model", "cpu MHz",
    "flags", ...), read once; empty where it cannot be read."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():  # the first processor's block ends
                    break
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_flags() -> set[str]:
    """This CPU's feature flags, as /proc/cpuinfo lists them (none where it cannot be read)."""
    return set(cpu_info().get("flags", "").split())


def cpu_model() -> str:
    """The CPU's model name with its family and model numbers (a virtual machine's name can be as bare as
    "Intel(R) Xeon(R) Processor": the numbers tell two such CPUs apart)."""
    import platform

    info = cpu_info()
    name = info.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in info and "model" in info:
        name += f", family {info['cpu family']} model {info['model']}"
    return name
