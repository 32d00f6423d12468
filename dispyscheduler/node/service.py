"""A node's daily service window (dispy 4.15's ``--service_start``, ``--service_stop`` and
``--service_end``): when it takes jobs, when it stops taking them, when it stops running them.

Pure time arithmetic; the daemon asks ``ServiceWindow.state`` and sleeps until ``next_change``.
Times are local times of day; a window may cross midnight (start 22:00, end 06:00).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Optional

DAY = 24 * 3600

SERVING, STOPPING, OFF = 'serving', 'stopping', 'off'
"""Taking jobs; finishing the jobs it has and taking no more (after ``--service_stop``); not
linked to any scheduler (after ``--service_end``, or before the first ``--service_start``)."""


def parse_time_of_day(text: str) -> int:
    """``HH:MM`` (or ``HH:MM:SS``) as seconds after midnight; ValueError otherwise."""
    parts = text.strip().split(':')
    if len(parts) not in (2, 3) or not all(part.isdigit() for part in parts):
        raise ValueError('%r is not a time of day (HH:MM)' % (text,))
    hours, minutes, seconds = (int(part) for part in parts + ['0'] * (3 - len(parts)))
    if hours > 23 or minutes > 59 or seconds > 59:
        raise ValueError('%r is not a time of day (HH:MM)' % (text,))
    return hours * 3600 + minutes * 60 + seconds


def seconds_of_day(now: Optional[float] = None) -> int:
    local = time.localtime(now)
    return local.tm_hour * 3600 + local.tm_min * 60 + local.tm_sec


@dataclasses.dataclass(frozen=True)
class ServiceWindow:
    """Each day from ``start`` (midnight if not given) the node takes jobs; from ``stop`` it
    takes no new ones; from ``end`` it ends those still running and leaves its scheduler,
    until the next ``start``. Times are seconds after midnight; None: not given."""

    start: Optional[int] = None
    stop: Optional[int] = None
    end: Optional[int] = None

    @property
    def limited(self) -> bool:
        return (self.start, self.stop, self.end) != (None, None, None)

    def state(self, now: int) -> str:
        """SERVING, STOPPING or OFF at ``now`` (seconds after midnight)."""
        if not self.limited:
            return SERVING
        start = self.start or 0
        since_start = (now - start) % DAY
        stop = None if self.stop is None else (self.stop - start) % DAY
        end = None if self.end is None else (self.end - start) % DAY
        if stop is None and end is None:  # a start alone: the window is the whole day
            return SERVING
        if end is not None and since_start >= end:
            return OFF
        if stop is not None and since_start >= stop:
            return STOPPING
        return SERVING

    def next_change(self, now: int) -> int:
        """Seconds from ``now`` until the state may change (at least 1)."""
        marks = [mark for mark in (self.start, self.stop, self.end) if mark is not None]
        if not marks:
            return DAY
        return min((mark - now) % DAY or DAY for mark in marks)
