"""Which training precision (Keras dtype policy) is fastest where this runs: decided from the devices
Keras' backend sees, the CPU's feature flags (:func:`cpu_precision`), and where those promise bfloat16
units, a measurement (:func:`bfloat16_speedup`): the flags say what the CPU has, not what the kernels get
from it (oneDNN's bfloat16 kernels without AMX run at 0.35-0.7x float32's speed on a Xeon, at 1.95x on an
AMD EPYC). Keras is imported only when "auto" must be resolved.
"""

from __future__ import annotations

import contextlib
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
# The CPU features the kernels' speed turns on, as /proc/cpuinfo names them (what :func:`machine` keeps).
KERNEL_FEATURES = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")

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
    return bool(_gpus())


def _gpus() -> list[str]:
    """The GPUs Keras' backend sees ("gpu:0", "cuda:0"; none where it has no device listing)."""
    import importlib

    import keras

    try:
        if keras.backend.backend() == "torch":
            cuda = importlib.import_module("torch").cuda
            return [f"cuda:{i}" for i in range(cuda.device_count())] if cuda.is_available() else []
        devices = keras.distribution.list_devices()
    except Exception:  # a backend without a device listing: assume a CPU
        return []
    return [str(d) for d in devices if "gpu" in str(d).lower() or "cuda" in str(d).lower()]


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


def machine(gpus: bool = True) -> dict[str, Any]:
    """Where a run trains, kept with its model and its events (a speed means little without it): the CPU
    (:func:`cpu_model`), its clock where /proc/cpuinfo gives one, the features the kernels turn on
    (:data:`KERNEL_FEATURES`), oneDNN's cap where ``ONEDNN_MAX_CPU_ISA`` holds the kernels below them, the
    cores this process may use, and the GPUs Keras' backend sees (none: no key; ``gpus=False``: not
    asked, so Keras is not imported)."""
    import os

    info, flags = cpu_info(), cpu_flags()
    facts: dict[str, Any] = {"cpu": cpu_model()}
    with contextlib.suppress(KeyError, ValueError):
        facts["ghz"] = round(float(info["cpu MHz"]) / 1000, 1)
    facts["features"] = [f for f in KERNEL_FEATURES if f in flags]
    if os.environ.get("ONEDNN_MAX_CPU_ISA"):
        facts["onednn_isa"] = os.environ["ONEDNN_MAX_CPU_ISA"]
    facts["cores"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if gpus and (seen := _gpus()):
        facts["gpus"] = seen
    return facts


def machine_text(facts: Any) -> str:
    """:func:`machine`'s facts as one line: "AMD EPYC, family 25 model 1 at 2.4 GHz (avx2), 2 cores".
    Facts read back from a stored record are whatever JSON its saver sent: a field of another type is
    left out, and facts that are not a mapping are shown as the text they are."""
    if not isinstance(facts, dict):
        return str(facts)
    cpu = str(facts.get("cpu", "an unnamed CPU"))
    if isinstance(facts.get("ghz"), int | float):
        cpu += f" at {facts['ghz']:g} GHz"
    features = facts.get("features")
    said = [(", ".join(map(str, features)) or "no AVX2/AVX-512/AMX")] if isinstance(features, list) else []
    if facts.get("onednn_isa"):  # the kernels held below what the flags say
        said.append(f"oneDNN held to {facts['onednn_isa']}")
    text = f"{cpu} ({'; '.join(said)})" if said else cpu
    if isinstance(facts.get("cores"), int):
        text += f", {facts['cores']} cores"
    if isinstance(facts.get("gpus"), list) and facts["gpus"]:
        text += ", " + ", ".join(map(str, facts["gpus"]))
    return text


def kernels_text(kernels: Any) -> str:
    """How a run trained its 3x3 convolutions (:func:`.fastview.kernels`) as one line, grouped by way:
    "oneDNN: block1_conv1, block1_conv2; written out: block3_conv1". A stored record's is whatever JSON
    its saver sent: anything but a mapping of names to ways is shown as the text it is."""
    if not isinstance(kernels, dict):
        return str(kernels)
    ways: dict[str, list[str]] = {}
    for name, way in kernels.items():
        ways.setdefault(str(way), []).append(str(name))
    return "; ".join(f"{way}: {', '.join(names)}" for way, names in ways.items())
