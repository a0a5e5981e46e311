"""Keeping the memory a training step frees for the next step, instead of giving it back to the system.

A training step on the CPU allocates and frees the same large buffers every step (activations, their
gradients, the convolutions' work space: hundreds of MB at batch 256). glibc's malloc serves a block over
its mmap threshold (at most 32 MB) with a fresh ``mmap`` and unmaps it when it is freed, and gives the top
of its heap back when more than 128 KB are free there; so each step faulted its pages in again, zeroed by
the kernel. Measured on a 2-core AMD EPYC of family 25 model 1 (Zen 3: AVX2, no AVX-512, no AMX), ``fast``
at batch 256 through Keras' ``fit``: 131,000 page faults a step and 361-373 images/s, against 1,500 faults
and 566-634 images/s once freed memory is kept; ``accurate`` at batch 512: 1.4 million faults a step (5.5 GB
of pages) and 68 images/s, against 132,000 and 120 (``benchmarks/train_loop.py``). How many blocks were
mapped depended on what the process had allocated before (glibc moves its threshold as blocks are freed), so
the same step ran at either speed from one process to the next.

:func:`keep_freed_memory` sets glibc to serve every block from its heaps and never to trim them
(``mallopt``: ``M_MMAP_MAX`` 0, ``M_TRIM_THRESHOLD`` 2 GiB): what a step frees is reused by the next,
as tcmalloc and jemalloc (which TensorFlow's and PyTorch's CPU guides recommend preloading) do by design.
The cost: the process keeps the memory its largest step needed, free for its own later use, until it ends.
The trainer calls it before it trains. Nothing is changed where the C library is not glibc, or where the
user chose for malloc already (``MALLOC_MMAP_MAX_``, ``MALLOC_TRIM_THRESHOLD_``, ``GLIBC_TUNABLES``, or
another allocator in ``LD_PRELOAD``).
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import platform
import sys

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # glibc's <malloc.h>
M_MMAP_MAX = -4
KEEP_UP_TO = 2**31 - 1  # bytes free at the top of the heap before it is trimmed (mallopt takes an int)
USERS_OWN = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES")


@functools.cache
def keep_freed_memory() -> str:
    """Set this process's malloc to keep what it frees (see the module), once; what was done, in words."""
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return "left alone: the C library is not glibc"
    chosen = [name for name in USERS_OWN if os.environ.get(name)]
    if "malloc" in os.environ.get("LD_PRELOAD", ""):  # libtcmalloc, libjemalloc, libmimalloc ...
        chosen.append("LD_PRELOAD")
    if chosen:
        return f"left alone: set by {', '.join(chosen)}"
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError) as e:
        return f"left alone: no mallopt ({e})"
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    if not (mallopt(M_MMAP_MAX, 0) and mallopt(M_TRIM_THRESHOLD, KEEP_UP_TO)):
        log.warning("jupyter_cifar: glibc's mallopt refused to keep freed memory; training may be slower")
        return "left alone: mallopt refused"
    return "kept: no mmap per block, no trimming"
