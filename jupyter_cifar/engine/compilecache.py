"""JAX's persistent compilation cache for the trainer, kept with this package's other caches.

Under Keras' JAX backend a run first waits for XLA to compile its training step, its validation step and
its test-time views; on the H100 that was most of a 76 s run of `accurate` (README, Performance). JAX can
keep what it compiled on disk and load it when the same function meets the same shapes on the same
devices and versions, but only once it is given a folder. The trainer gives it ``$JUPYTER_CIFAR_CACHE/jax``
(beside the decoded datasets: :func:`~jupyter_cifar.engine.data.default_cache_dir`) unless the user chose:
``JAX_COMPILATION_CACHE_DIR`` in the environment (a folder, or empty for none) or
``jax_compilation_cache_dir`` already set in the process wins. Everything compiled is kept, not only what
took a second or more (JAX's default; ``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS`` still rules where set):
of `fast`'s 8 s of compiling on the CPU, 2.5 s is its training step and the rest some 70 small programs
(its initializers, eager operations) that each take less than a second and together more than the step
(``benchmarks/jax_cache.py``). Nothing is evicted: the folder grows with each new shape or version and may
be deleted at any time.

JAX runs what it loads from that folder, so the folder is trusted code (JAX's documentation says so). It
is made private to its owner (mode 0700), and one that another user owns or can write to is not used (a
warning says why): a model file is data, and so is everything else a run reads.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from .data import default_cache_dir

ENV_JAX_CACHE = "JAX_COMPILATION_CACHE_DIR"
ENV_JAX_MIN_SECONDS = "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"
log = logging.getLogger(__name__)


def use_jax_cache() -> Path | None:
    """Point JAX's persistent compilation cache at this package's folder (see the module).

    The folder JAX caches in from now on, or None: another backend, the user's choice of none, or a folder
    that must not hold code. JAX opens its cache at the first compilation after a folder is set, so a
    kernel that used JAX before still gets it. The cache only saves time: where JAX's settings cannot be
    read or changed (another version of JAX), a warning says so and the run goes on without it.
    """
    import keras

    if keras.backend.backend() != "jax":
        return None
    import jax

    try:
        chosen = jax.config.jax_compilation_cache_dir  # type: ignore[attr-defined]  # (a flag, not typed)
        if ENV_JAX_CACHE in os.environ or chosen:
            return Path(chosen) if chosen else None
        folder = default_cache_dir() / "jax"
        why = why_not_private(folder)
        if why is None:
            jax.config.update("jax_compilation_cache_dir", str(folder))
            if ENV_JAX_MIN_SECONDS not in os.environ:
                jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
            return folder
    except (AttributeError, ValueError, TypeError) as exc:  # JAX's settings changed names or kinds
        why = f"JAX {jax.__version__} did not take the setting ({type(exc).__name__}: {exc})"
    log.warning("jupyter_cifar: JAX's compilation cache is off: %s", why)
    return None


def why_not_private(folder: Path) -> str | None:
    """Make ``folder`` (mode 0700) where it is missing; why it must not hold code that runs, or None."""
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = folder.lstat()
    except OSError as exc:
        return f"{folder}: {exc.strerror or exc}"
    if not stat.S_ISDIR(info.st_mode):
        return f"{folder} is not a folder (a link?)"
    if info.st_uid != os.getuid():
        return f"{folder} belongs to another user (uid {info.st_uid})"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"{folder} can be written by other users (mode {stat.filemode(info.st_mode)})"
    return None
