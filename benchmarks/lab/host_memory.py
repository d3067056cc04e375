"""Fewer page faults per compiled call: keep freed host memory, or fault it in huge pages.

On the CPU, XLA allocates the scratch memory of every call of a compiled function
afresh (one block for all its intermediates: 230 MB for an LSTM training step at
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

**Huge pages** are the other way, and they keep glibc's arenas and give freed
memory back as before: with the glibc tunable `glibc.malloc.hugetlb=1`, `malloc`
asks the kernel for transparent huge pages (`madvise(MADV_HUGEPAGE)`) on every
block it maps, so a call faults its scratch block in 2 MiB at a time instead of
4 KiB. glibc reads tunables only when a program starts, so this is an environment
variable for the program you start, not a call::

    GLIBC_TUNABLES=glibc.malloc.hugetlb=1 python train.py

It needs glibc 2.35 or newer and a kernel whose transparent huge pages are enabled
as `madvise` or `always` (`/sys/kernel/mm/transparent_hugepage/enabled`);
`huge_pages_active()` says whether this process has all three.
`environment_with_huge_pages()` gives the environment to start a child process
with. `benchmarks/cpu_profile.py` and `benchmarks/speed.py --huge-pages` measure it.
"""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Mapping

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
# The largest value mallopt takes (an int): free memory at the heap's top is given
# back to the kernel only beyond 2 GiB.
_TRIM_THRESHOLD = 2**31 - 1

HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb=1"
_TRANSPARENT_HUGE_PAGES = "/sys/kernel/mm/transparent_hugepage/enabled"


def retain_freed_memory() -> bool:
    """Sets glibc's allocator to keep and reuse freed memory (see the module docstring).

    Sets one arena for all threads (`M_ARENA_MAX = 1`), no `mmap` for large blocks
    (`M_MMAP_MAX = 0`), and a 2 GiB trim threshold (`M_TRIM_THRESHOLD`).

    Returns:
      True when the settings were applied; False where the C library is not glibc
      (macOS, Windows, musl), which this leaves unchanged.
    """
    libc = _glibc()
    if libc is None:
        return False
    mallopt = libc.mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    settings = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
    return all(mallopt(param, value) == 1 for param, value in settings)


def environment_with_huge_pages(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of `environ` (default `os.environ`) that asks glibc for huge pages.

    Adds `glibc.malloc.hugetlb=1` to `GLIBC_TUNABLES`, keeping the other tunables
    there (and replacing an earlier `glibc.malloc.hugetlb` setting). Pass it as the
    environment of a process you start; it does nothing to the running one.

    Example:
      >>> from rnnjax import host_memory
      >>> before = {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}
      >>> host_memory.environment_with_huge_pages(before)["GLIBC_TUNABLES"]
      'glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1'
    """
    env = dict(os.environ if environ is None else environ)
    kept = [
        tunable
        for tunable in env.get("GLIBC_TUNABLES", "").split(":")
        if tunable and not tunable.startswith("glibc.malloc.hugetlb=")
    ]
    env["GLIBC_TUNABLES"] = ":".join([*kept, HUGE_PAGES_TUNABLE])
    return env


def huge_pages_requested(environ: Mapping[str, str] | None = None) -> bool:
    """Whether `environ` (default `os.environ`) sets `glibc.malloc.hugetlb=1`."""
    env = os.environ if environ is None else environ
    return HUGE_PAGES_TUNABLE in env.get("GLIBC_TUNABLES", "").split(":")


def transparent_huge_pages_mode() -> str | None:
    """The kernel's transparent huge page mode (`always`, `madvise` or `never`), or
    None where it cannot be read (not Linux, or no such setting)."""
    try:
        with open(_TRANSPARENT_HUGE_PAGES) as setting:
            text = setting.read()
    except OSError:
        return None
    start, end = text.find("["), text.find("]")
    return text[start + 1 : end] if 0 <= start < end else None


def _glibc() -> ctypes.CDLL | None:
    """The process's C library where it is glibc on Linux, else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 (present in glibc only)
    except (OSError, AttributeError):
        return None
    return libc


def _glibc_version() -> tuple[int, int] | None:
    libc = _glibc()
    if libc is None:
        return None
    version = libc.gnu_get_libc_version
    version.restype = ctypes.c_char_p
    major, minor, *_ = version().decode().split(".")
    return int(major), int(minor)


def huge_pages_active() -> bool:
    """Whether this process faults large blocks in as huge pages: it was started
    with `glibc.malloc.hugetlb=1`, its glibc reads that tunable (2.35 or newer),
    and the kernel's transparent huge pages are `madvise` or `always`."""
    glibc = _glibc_version()
    return (
        huge_pages_requested()
        and glibc is not None
        and glibc >= (2, 35)
        and transparent_huge_pages_mode() in ("madvise", "always")
    )
