"""Keep freed host memory in the process, so that each compiled call stops page-faulting.

On the CPU, XLA allocates the scratch memory of every call of a compiled function
afresh (one block for all its intermediates: 229 MB for an LSTM training step at
(B, T, H) = (32, 1000, 128)) and frees it when the call returns. glibc's `malloc`
serves a block that large with `mmap` and returns it to the kernel on `free`, so
the next call touches new pages: about 56,000 page faults per training step at that
shape, each one a kernel entry and a zeroed 4 KiB page. `retain_freed_memory` asks
glibc to serve large blocks from its heap instead and to keep freed memory, so after
the first few calls the blocks are reused and the faults all but disappear
(`benchmarks/cpu_profile.py` measures both).

This changes the allocator of the whole process (every library in it, PyTorch
too), which is why it is a call you make and not something `import rnnjax` does:
the process keeps the memory it has freed, so its resident size stays at its peak
(and grows beyond it now and then, when a freed block does not fit where the next
one is needed).
Call it before JAX's first computation: glibc fixes its number of arenas when a
second thread first allocates, and XLA's worker threads start with the CPU backend;
a worker thread with an arena of its own would still `mmap` every large block. The
same settings as environment variables, for a program you start:
`MALLOC_ARENA_MAX=1 MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647`.

With the batch split over CPU cores (`rnnjax.parallel.use_cpu_cores`), the device
threads share that one arena and can wait on its lock: in the speed benchmark the
long LSTM row (T = 10,000) trained slower over two cores with this setting than
without it (`benchmarks/results/speed-retained`). For long sequences, use one or
the other.

Use, first thing in a training script::

    from rnnjax import host_memory
    host_memory.retain_freed_memory()  # True on Linux with glibc
"""

from __future__ import annotations

import ctypes
import sys

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
# The largest value mallopt takes (an int): free memory at the heap's top is given
# back to the kernel only beyond 2 GiB.
_TRIM_THRESHOLD = 2**31 - 1


def retain_freed_memory() -> bool:
    """Sets glibc's allocator to keep and reuse freed memory (see the module docstring).

    Sets one arena for all threads (`M_ARENA_MAX = 1`), no `mmap` for large blocks
    (`M_MMAP_MAX = 0`), and a 2 GiB trim threshold (`M_TRIM_THRESHOLD`).

    Returns:
      True when the settings were applied; False where the C library is not glibc
      (macOS, Windows, musl), which this leaves unchanged.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 (present in glibc only)
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    settings = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
    return all(mallopt(param, value) == 1 for param, value in settings)
