"""Large buffers stay in a bridge's heap instead of going back to the kernel.

A bridge moving 1 MiB records allocates a buffer of that size for every
DATA message (the exporter's batch body, libzmq's message on the importer)
and frees it a moment later. glibc serves such a request with ``mmap`` and
returns it with ``munmap`` once its dynamic threshold decides so, and every
fresh mapping costs a page fault and a zeroed page per 4 KiB before a byte
is copied: measured with ``perf record`` on both bridges of
``python -m benchmarks.bridge --only 1mib``, page faults, page clearing and
unmapping took 8-10 % of each bridge's cycles, as much as a third of what
the copies themselves took. :func:`keep_large_buffers` tells malloc to
serve requests below ``MMAP_BELOW`` from its heap and to keep up to
``TRIM_ABOVE`` bytes free there, so the next message reuses the last one's
pages.

The cost is memory the bridge keeps after a burst: at most ``TRIM_ABOVE``
free bytes per malloc arena, beside the credit window (64 MiB per stream)
it may hold anyway. Only the bridge process does this; on a C library that
is not glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util

#: glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: Requests below this come from the heap (glibc's own maximum for the
#: dynamic threshold on 64-bit: 32 MiB).
MMAP_BELOW = 32 << 20
#: Free bytes at the top of a heap kept rather than returned.
TRIM_ABOVE = 64 << 20


def keep_large_buffers() -> bool:
    """Set the two thresholds for this process; True if malloc took them."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc (or no mallopt)
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_BELOW)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_ABOVE))
