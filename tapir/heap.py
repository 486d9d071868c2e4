"""Give the freed heap back to the operating system.

CPython, numpy and torch (on CPU) allocate through the C library's
``malloc``. glibc keeps what they free in its arenas for later use, so a
process's resident set (VmRSS) stays near its highest point after a big
stage has dropped its objects, and every later stage starts from there.
``malloc_trim(0)`` returns the free pages of every arena (their tops and
the whole free pages inside them) to the kernel.

Linux with glibc only: elsewhere (macOS, musl, Windows) :func:`trim` does
nothing and says so. No heavy import: ctypes is part of the standard library.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def _malloc_trim():
    """glibc's ``malloc_trim`` or ``None`` where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn


def trim() -> bool:
    """Hand the heap's free pages back to the OS; True when glibc did
    release some memory, False when there was none to release or no glibc."""
    fn = _malloc_trim()
    return bool(fn(0)) if fn is not None else False


def resident_mb() -> float | None:
    """The current resident set of this process in MB (VmRSS of
    /proc/self/status), ``None`` where there is no /proc."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
