"""What a process asks of the machine: the cores it may use, and how the C allocator treats freed memory.

Nothing here imports the rest of the package; the engine, the data loaders and the benchmarks build on it.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

log = logging.getLogger("lemore")

#: glibc's mallopt() parameters (malloc.h) and the values :func:`keep_freed_memory` sets.
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
MALLOPT = {M_MMAP_THRESHOLD: 256 * 2**20, M_TRIM_THRESHOLD: 2**30, M_TOP_PAD: 256 * 2**20}
#: Set to 0 to leave the allocator as it is.
KEEP_FREED_MEMORY_ENV = "LEMORE_KEEP_FREED_MEMORY"


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one, else ``os.cpu_count()``)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def keep_freed_memory() -> bool:
    """Let glibc's malloc keep freed memory for the next allocation instead of handing it back to the OS.

    By default glibc serves every allocation above a threshold (128 KiB, raised as it sees larger frees, at most 32
    MiB) with its own ``mmap`` and returns it with ``munmap`` when freed, and trims the heap's free top: a training
    step, which allocates and frees the same large activations every iteration, then pays for fresh zeroed pages each
    time (page faults, expensive in a virtual machine). Here allocations up to 256 MiB come from the heap, which keeps
    up to 1 GiB free at its top and grows by 256 MiB at a time. The process keeps its peak memory; nothing computed
    changes. Measured on the AMD EPYC Zen 3 VM with 2 cores (a CamVid training step at 240x320, batch 8, 2 threads,
    separate processes alternated): LeMoRe 597-632 ms -> 381-385 ms, SegFormer-B0 1824-1869 -> 1376-1502 ms,
    TopFormer-T 618-665 -> 357-458 ms. The same advice as PyTorch's CPU performance guide (jemalloc or tcmalloc),
    without a library to install.

    Returns whether it applied: Linux with glibc and ``$LEMORE_KEEP_FREED_MEMORY`` not ``0``; elsewhere nothing is
    changed. Idempotent.
    """
    if os.environ.get(KEEP_FREED_MEMORY_ENV, "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, ...)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in MALLOPT.items())
