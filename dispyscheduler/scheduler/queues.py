"""Jobs and the queues they wait in: a cluster's jobs by priority, then by submission, a
queue for each need (``ClusterQueue``) so that a job waiting for four free CPUs holds up no
job of one CPU behind it. Pure bookkeeping, as ``model.py`` which uses them."""

from __future__ import annotations

import heapq
import itertools
from typing import TYPE_CHECKING, Optional, Sequence

from ..constants import CREATED
from ..resources import ONE_CPU, Need

if TYPE_CHECKING:
    from ..wire.messages import FileData
    from .model import Cluster, Node


class Job:
    __slots__ = ('jid', 'uid', 'cluster', 'args', 'node', 'status', 'start_time', 'cancelling',
                 'priority', 'timeout', 'files', 'pinned', 'tag', 'lost_nodes', 'submitted_at',
                 'queued', 'size', 'refs', 'need', 'reserved_on')

    def __init__(self, jid: int, uid: int, cluster: Cluster, args: bytes, priority: int = 0,
                 timeout: Optional[float] = None, files: Sequence[FileData] = (),
                 pinned: Optional[str] = None, tag: Optional[bytes] = None,
                 size: Optional[int] = None, refs: Sequence[str] = (),
                 need: Need = ONE_CPU) -> None:
        self.jid = jid
        self.need = need  # what it holds on its node while there
        # the node kept free for it while it waits (``State.fill_node``), None if none is
        self.reserved_on: Optional[Node] = None
        self.refs = refs  # the cluster's uploads it needs on its node (``sessions.py``)
        self.tag = tag  # the client's job id (pickled), for a client recovering results
        self.lost_nodes = 0  # nodes that died or vanished while holding this job
        # when, for the placement-time metric (set by the server)
        self.submitted_at: Optional[float] = None
        self.uid = uid
        self.cluster = cluster
        self.args = args
        self.priority = priority
        self.timeout = timeout
        self.files = files
        self.pinned = pinned  # key of the only node this job may run on
        self.node: Optional[Node] = None
        self.status = CREATED
        self.start_time: Optional[float] = None
        self.cancelling = False  # cancel sent to its node; never to be run again
        self.queued = 0  # its entry in a queue (``JobQueue``), 0 while in none
        # bytes of its arguments and files, as ``--max_cluster_bytes`` counts them (given
        # when the caller has counted them already)
        self.size = job_size(args, files) if size is None else size

    def __repr__(self) -> str:
        return '<Job %s (cluster %s job %s)>' % (self.jid, self.cluster.cid, self.uid)


def job_size(args: bytes, files: Sequence[FileData]) -> int:
    """Bytes of a job's arguments and files, as ``--max_cluster_bytes`` counts them."""
    return len(args) + sum(len(data) for _, data, _ in files) if files else len(args)


QUEUE_ENTRIES = itertools.count(1)
"""Numbers of queue entries: a job knows the one entry that is still its own."""


class JobQueue:
    """Jobs by priority (highest first), then by submission. A job leaves the queue at once
    (cancelled, or taken back by a node that returned still running it), and its entry is
    skipped when it surfaces, so leaving is O(1): an entry counts only while it is the job's
    current one (``job.queued``), so a job queued again later is never taken twice."""

    def __init__(self) -> None:
        self.heap: list[tuple[int, int, int, Job]] = []
        self.live = 0

    def __len__(self) -> int:
        return self.live

    def push(self, job: Job) -> None:
        job.queued = next(QUEUE_ENTRIES)
        heapq.heappush(self.heap, (-job.priority, job.jid, job.queued, job))
        self.live += 1

    def pop(self) -> Optional[Job]:
        while self.heap:
            _, _, entry, job = heapq.heappop(self.heap)
            if job.queued == entry:
                job.queued = 0
                self.live -= 1
                return job
        return None

    def peek(self) -> Optional[Job]:
        """The job ``pop`` would take, left in the queue."""
        heap = self.heap
        while heap:
            _, _, entry, job = heap[0]
            if job.queued == entry:
                return job
            heapq.heappop(heap)
        return None

    def forget(self, job: Job) -> None:
        """A job leaves the queue: counted out now, its entry skipped later."""
        if job.queued:
            job.queued = 0
            self.live -= 1

    def jobs(self) -> list[Job]:
        return [job for _, _, entry, job in self.heap if job.queued == entry]


class ClusterQueue:
    """A cluster's waiting jobs, a ``JobQueue`` for each need: a job that waits for four
    free CPUs holds up no job of one CPU behind it (each need is placed on its own)."""

    def __init__(self) -> None:
        self.by_need: dict[Need, JobQueue] = {}
        self.live = 0

    def __len__(self) -> int:
        return self.live

    def push(self, job: Job) -> None:
        queue = self.by_need.get(job.need)
        if queue is None:
            queue = self.by_need[job.need] = JobQueue()
        queue.push(job)
        self.live += 1

    def pop(self, need: Need = ONE_CPU) -> Optional[Job]:
        queue = self.by_need.get(need)
        job = queue.pop() if queue is not None else None
        if job is not None:
            self.live -= 1
            if not queue:
                del self.by_need[need]
        return job

    def forget(self, job: Job) -> None:
        queue = self.by_need.get(job.need)
        if queue is not None and job.queued:
            queue.forget(job)
            self.live -= 1
            if not queue:
                del self.by_need[job.need]

    def waiting(self) -> list[tuple[Need, JobQueue]]:
        """The needs with jobs waiting, and their queues."""
        return list(self.by_need.items())

    def jobs(self) -> list[Job]:
        return [job for queue in self.by_need.values() for job in queue.jobs()]
