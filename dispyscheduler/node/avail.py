"""What a node has free, as dispy's nodes report it (``DispyNodeAvailInfo``), from psutil."""

from __future__ import annotations

import logging

import psutil

from ..wire.messages import AvailInfo

logger = logging.getLogger(__name__)


def avail_info(path: str) -> AvailInfo | None:
    """CPU % idle since the last call, memory bytes available, bytes free on the disk of
    ``path`` (where computations' files go), swap % free; None if the system will not say."""
    try:
        return (100.0 - psutil.cpu_percent(interval=None), psutil.virtual_memory().available,
                psutil.disk_usage(path).free, 100.0 - psutil.swap_memory().percent)
    except (OSError, RuntimeError) as exc:
        logger.debug('availability unknown: %s', exc)
        return None
