"""Keep freed CPU memory for reuse during training (glibc only; elsewhere a no-op).

Folding time into the batch makes tensors of 64-128 MB (T x a conv layer's activations).
glibc serves anything above its 32 MB mmap ceiling with a fresh mmap and unmaps it on
free, so every training step page-faults those buffers in again: measured here, VGG5 on
2 cores spent a third of its step zero-filling and copying fresh pages. Serving them from
the heap and never trimming it is what a caching allocator (jemalloc, tcmalloc, PyTorch's
CUDA allocator) does; mallopt sets the same policy from inside the process.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4


@functools.lru_cache(maxsize=1)
def keep_freed_memory() -> bool:
    """Serve every allocation from the heap and never give it back; True if it took effect."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): their allocators differ
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
