"""Memory a daemon frees goes back to the system, not only to its own heap.

glibc's malloc serves a large buffer from the heap once a buffer of that size has been freed
(it raises its mmap threshold as it goes), and memory in the middle of the heap stays with the
process when freed: after a client's backlog of megabyte results has been delivered, the
scheduler kept the peak in its resident size. Fixing the threshold makes every buffer of
``LARGE_BUFFER`` bytes or more a mapping of its own, unmapped when freed; ``trim`` hands free
heap pages back after a large release (a cluster with many jobs closed). Elsewhere than glibc
both do nothing.
"""

from __future__ import annotations

import ctypes
import logging
from typing import Optional

from ..constants import LARGE_BUFFER

logger = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1  # mallopt's parameter numbers, from glibc's malloc.h
M_MMAP_THRESHOLD = -3

TRIM_THRESHOLD = 64 * 1024 * 1024
"""Free bytes at the top of the heap past which malloc gives them back by itself. Fixing the
mmap threshold also fixes this one, at 128 KiB unless set: the heap would shrink and grow
again with every burst of messages (a system call and page faults each time)."""

_libc: Optional[ctypes.CDLL] = None


def _glibc() -> Optional[ctypes.CDLL]:
    global _libc
    if _libc is None:
        try:
            # the process's own symbols, libc's among them (no find_library: it runs
            # programs, which a daemon's thread outside gevent's default loop cannot)
            libc = ctypes.CDLL(None)
            # glibc has both; others may not
            libc.mallopt, libc.malloc_trim  # noqa: B018
        except (OSError, AttributeError) as exc:
            logger.debug('no glibc malloc here (%s): memory is left to the allocator', exc)
            return None
        _libc = libc
    return _libc


def return_large_buffers() -> None:
    """Buffers of ``LARGE_BUFFER`` bytes or more are mapped apart from the heap, so that
    freeing one gives its memory back at once (a daemon's ``main`` calls this once)."""
    libc = _glibc()
    if libc is not None and not (libc.mallopt(M_MMAP_THRESHOLD, LARGE_BUFFER)
                                 and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        logger.debug('mallopt refused the thresholds')


def trim() -> None:
    """Give free heap memory back to the system (after freeing a lot of small objects)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
