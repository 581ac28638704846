"""Make the C allocator give big message bodies back to the OS when freed.

glibc serves an allocation above ``M_MMAP_THRESHOLD`` (128 KiB) with its own
``mmap`` and unmaps it on free, but it raises that threshold each time such a
block is freed, up to 32 MiB. After the first big body is freed, later ones
come from the heap instead, interleaved with bodies still held, and memory
freed between them stays resident. Measured with 3 queues x 600 x 1 MiB
(``python -m bench.memcheck --count 1800 --queues 3 --drain``): 182 MiB RSS
once filled and 115 MiB after draining everything. Pinning the threshold at
its default keeps every body of 128 KiB or more in its own mapping, returned on
free: 126 MiB and 51 MiB. Bodies below it are served from the heap as before.

Only the ``brokerd`` command calls this (a process-wide setting is not a
library's to change); elsewhere, or without glibc, it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger("brokerd.malloc")

#: mallopt() parameter number of M_MMAP_THRESHOLD in glibc's malloc.h.
M_MMAP_THRESHOLD = -3
#: glibc's default threshold; setting it explicitly stops the dynamic raise.
MMAP_THRESHOLD = 128 * 1024


def pin_mmap_threshold() -> bool:
    """True if the allocator took the setting."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt to speak of)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    log.debug("mallopt(M_MMAP_THRESHOLD, %d): %s", MMAP_THRESHOLD, ok)
    return ok
