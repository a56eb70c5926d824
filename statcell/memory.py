"""How a ``statcell`` process takes memory: freed blocks kept for reuse instead of handed back to the kernel.

glibc's ``malloc`` serves every block above a threshold (at most 32 MiB) with its own ``mmap`` and hands it back
with ``munmap`` when it is freed. A training step or a FOV's segmentation allocates and frees tensors and arrays of
tens to hundreds of MiB over and over (a paper3d feature map at batch 2 is 126 MiB), so each time the kernel maps
fresh pages, zeroes them and takes a page fault on every 4 KiB of them. On a 2-core virtual machine of the README
that cost a paper3d target step in bf16 1.5-1.7 of its 7.2-8.0 CPU-seconds in the kernel (3.9 s on two cores), and a
group of FOVs' preprocessing 0.7-1.1 of 10-13 (README, *Measured*; ``bench/bench_train.py --malloc``,
``bench/bench_preprocess.py``).

:func:`keep_freed_memory` tells glibc to serve large blocks from its heap too (``M_MMAP_MAX`` 0) and to shrink the
heap only where over 2 GiB lies free at its top (``M_TRIM_THRESHOLD`` at its largest), so a freed block is reused,
already mapped, by the next request. A process then keeps about its peak memory until it ends, which is how the
workflow's jobs are sized anyway (their ``mem_mb`` is a peak). Blocks a thread other than the main one asks for beyond
its arena still come from ``mmap`` (glibc falls back to it), so nothing fails for want of a mapping.

The ``statcell`` command calls it first thing; ``STATCELL_KEEP_FREED_MEMORY=0`` in the environment leaves glibc's
defaults (for a side-by-side measurement). Elsewhere than on glibc (macOS, musl) it does nothing.
"""

from __future__ import annotations

import ctypes
import os
import platform

#: ``mallopt`` parameters (glibc's ``malloc.h``).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
#: The largest value ``mallopt`` takes (an ``int``): the heap is trimmed only where over 2 GiB at its top lies free.
_NEVER_TRIM = 2**31 - 1
#: The environment variable that turns :func:`keep_freed_memory` off when set to ``0``.
OPT_OUT_VARIABLE = "STATCELL_KEEP_FREED_MEMORY"


def keep_freed_memory() -> bool:
    """Tell glibc's ``malloc`` to keep freed memory for reuse: large blocks from the heap, the heap never trimmed.

    Returns
    -------
    bool
        Whether the setting took effect: False off glibc, when ``mallopt`` refuses it, or when the environment sets
        ``STATCELL_KEEP_FREED_MEMORY=0``.
    """
    if os.environ.get(OPT_OUT_VARIABLE, "1").strip() == "0" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)  # the process's own C library
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM))
