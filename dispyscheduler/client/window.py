"""Back-pressure on ``submit()``: a cluster's jobs stay within what the scheduler holds.

The scheduler holds at most ``max_jobs`` jobs of a cluster and ``max_job_bytes`` bytes of their
arguments and files at once (its ``--max_cluster_jobs`` and ``--max_cluster_bytes``, told in
its ``ClusterOk``). A job counts here from ``submit()`` until its end is received, which is
never before the scheduler has let it go, so a submission that fits here fits there.
``submit()`` waits while it does not fit, reading the scheduler's link meanwhile if no other
thread does (as ``job()`` does): a program that submits a million jobs in a loop goes at the
pace of its nodes, and the scheduler's memory stays bounded.
"""

from __future__ import annotations

import threading
from typing import Callable, Optional

from .job import JobEnd, Reader


class SubmitWindow:
    def __init__(self, reader: Optional[Reader]) -> None:
        self.reader = reader
        self.max_jobs = 0  # 0: no limit (until the scheduler says)
        self.max_bytes = 0
        self.sizes: dict[int, int] = {}  # uid -> bytes, of every job not ended
        self.bytes = 0
        self.lock = threading.Lock()
        self.room: Optional[JobEnd] = None  # set when a job leaves, for those that wait

    def limits(self, max_jobs: int, max_bytes: int) -> None:
        """The scheduler's limits (at the start, and again after each reconnect)."""
        with self.lock:
            self.max_jobs, self.max_bytes = max_jobs, max_bytes
        self.wake()

    def enter(self, uid: int, size: int, check: Callable[[], None]) -> None:
        """Count job ``uid`` of ``size`` bytes in, once it fits; ``check()`` raises if the
        cluster can take no job any more (it is closed, or its scheduler is lost)."""
        if self.max_bytes and size > self.max_bytes:
            raise ValueError('the job has %d bytes of arguments and files, more than the '
                             "scheduler's limit of %d for a cluster's jobs (its "
                             '--max_cluster_bytes)' % (size, self.max_bytes))
        while True:
            with self.lock:
                if self.fits(size):
                    self.sizes[uid] = size
                    self.bytes += size
                    return
                if self.room is None:
                    self.room = JobEnd(self.reader)
                room = self.room
            check()
            room.wait()

    def fits(self, size: int) -> bool:
        return ((not self.max_jobs or len(self.sizes) < self.max_jobs)
                and (not self.max_bytes or self.bytes + size <= self.max_bytes))

    def leave(self, uid: int) -> None:
        """Job ``uid`` ended (or was never sent): its room goes to a waiting ``submit()``."""
        with self.lock:
            size = self.sizes.pop(uid, None)
            if size is None:
                return
            self.bytes -= size
        self.wake()

    def wake(self) -> None:
        """Every waiting ``submit()`` looks again (room was made, or the cluster ended)."""
        with self.lock:
            room, self.room = self.room, None
        if room is not None:
            room.set()
