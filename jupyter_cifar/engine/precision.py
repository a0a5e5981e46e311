"""Which training precision (Keras dtype policy) is fastest where this runs: decided from the devices
Keras' backend sees and the CPU's feature flags (:func:`cpu_precision` is the rule; ``resolve_precision``
applies it). Keras is imported only when "auto" must be resolved.
"""

from __future__ import annotations

from ..errors import BadParameter

PRECISIONS = ("auto", "float32", "mixed_bfloat16", "mixed_float16")


def resolve_precision(precision: str = "auto") -> str:
    """The dtype policy that "auto" stands for here.

    mixed_float16 where a GPU is visible; mixed_bfloat16 on a CPU with bfloat16 units: AMX (TensorFlow or
    torch: 1.5-3x float32's training speed, measured on a Xeon), or AVX512-BF16 under TensorFlow (AMD Zen
    4 and later, Intel Cooper Lake: 1.50x for ``fast`` and 1.77x for ``accurate`` on an AMD EPYC,
    ``benchmarks/backends.py``; torch was not measured there); float32 elsewhere (JAX's CPU backend gains
    nothing from bf16, and CPUs without bf16 units emulate it slowly).
    """
    if precision not in PRECISIONS:
        raise BadParameter("--precision", f"must be one of {', '.join(PRECISIONS)} (got {precision!r})")
    if precision != "auto":
        return precision
    import keras

    if gpu_visible():
        return "mixed_float16"
    return cpu_precision(keras.backend.backend(), cpu_flags())


def cpu_precision(backend: str, flags: set[str]) -> str:
    """The fastest training precision on a CPU with these /proc/cpuinfo flags, under this Keras backend
    (see :func:`resolve_precision`)."""
    if backend in ("tensorflow", "torch") and flags >= {"amx_bf16", "amx_tile"}:
        return "mixed_bfloat16"
    if backend == "tensorflow" and "avx512_bf16" in flags:
        return "mixed_bfloat16"
    return "float32"


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


def cpu_flags() -> set[str]:
    """This CPU's feature flags, as /proc/cpuinfo lists them (none where it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()
