"""The node's use of the C heap between frames (glibc's allocator; no-ops elsewhere).

Each frame allocates and frees a few MiB: the incoming message, the depth and its serialised bytes. By default
glibc hands freed memory at the top of a heap back to the OS as soon as it exceeds its trim threshold, so every
frame faulted those pages in afresh: about 1.5 ms of a 640x480 frame, measured with
test/benchmarks/bench_node.py (section 3). The node keeps them for the next frame instead, and gives them back
itself after a much larger frame.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import lru_cache

# mallopt() parameters, from glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
KEEP_FREED_BYTES = 256 << 20  # trim threshold: up to this much freed memory stays with the process
MMAP_BYTES = 32 << 20  # buffers under this size come from the heap (glibc's upper bound for the setting)


@lru_cache(maxsize=1)
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    return libc if libc is not None and hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def keep_frame_memory() -> bool:
    """Let freed per-frame buffers be reused rather than returned to the OS; True where the allocator took it.

    Process-wide, so the executables call it (node.run), not the node classes.
    """
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_BYTES)) and bool(libc.mallopt(M_TRIM_THRESHOLD, KEEP_FREED_BYTES))


def release_free_memory() -> None:
    """Return freed heap memory to the OS (malloc_trim): after one very large frame the node would otherwise
    stay tens of MB bigger for good."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
