"""Placement policy: which nodes a cluster may use, which node takes a job, which cluster's
job a free node takes. Pure functions and one small index; no I/O.
"""

from __future__ import annotations

import bisect
import fnmatch
import heapq
import itertools
from typing import TYPE_CHECKING, Any, Callable, Generic, Hashable, Iterable, Mapping, TypeVar

from ..resources import Offer

if TYPE_CHECKING:
    from .model import Cluster

N = TypeVar('N', bound=Hashable)


def node_matches(patterns: Iterable[tuple[str, int]], ip_addr: str, name: str,
                 port: int) -> bool:
    """Whether a node may run a cluster's jobs.

    ``patterns`` holds ``(pattern, port)`` pairs: ``pattern`` is matched (shell-style, so
    ``'*'`` and ``'127.0.0.*'`` work) against the node's address and its name; ``port`` 0
    matches any node port.
    """
    for pattern, want_port in patterns:
        if want_port and want_port != port:
            continue
        if fnmatch.fnmatchcase(ip_addr, pattern) or fnmatch.fnmatchcase(name, pattern):
            return True
    return False


RUNTIME_WEIGHT = 0.2
"""Weight of the newest job's run time in a cluster's running mean."""

DEPTHS = ((0.005, 8), (0.05, 4), (1.0, 2))
"""(run time under which, jobs in flight per CPU): a job of under 5 ms is mostly overhead, so
8 wait their turn on the node; jobs of a second or more go one per CPU."""


def dispatch_depth(mean_runtime: float | None) -> int:
    """Jobs in flight per node CPU for a cluster whose jobs run ``mean_runtime`` seconds (None
    while none has ended)."""
    if mean_runtime is None:  # one per CPU, as dispy: a new cluster's first jobs spread
        return 1
    for limit, depth in DEPTHS:
        if mean_runtime < limit:
            return depth
    return 1


Candidate = tuple['Cluster', tuple[int, int], Any]
"""A cluster's queue that has room on a node: ``(cluster, (-priority, jid) of the job at its
head, queue)``."""


def fair_share_pick(candidates: Iterable[Candidate], on_node: Mapping[int, int],
                    total: Offer) -> Candidate | None:
    """Of clusters' queues with room on a node, the one whose turn it is there.

    First the cluster holding the fewest CPUs on this node (``on_node`` maps cluster id to
    them), so each node divides its CPUs evenly among the clusters that want it and every
    cluster spreads over all its nodes; then the one holding the smallest share of the whole
    pool (``total``) in the resource it holds most of (its dominant share: a cluster holding
    every GPU is not served before one holding a few CPUs because it holds few CPUs); then
    the one served longest ago; within a cluster, the queue whose first job goes first (by
    priority, then submission). So a cluster with 10 jobs is never stuck behind one with
    10,000, and two busy clusters do not settle into owning a node each.
    """
    best: Candidate | None = None
    best_key: tuple[int, float, int, tuple[int, int]] | None = None
    for candidate in candidates:
        cluster, head, _ = candidate
        key = (on_node.get(cluster.cid, 0), cluster.held.share_of(total),
               cluster.last_served, head)
        if best_key is None or key < best_key:
            best, best_key = candidate, key
    return best


class LoadIndex(Generic[N]):
    """Nodes by load, least loaded first, with O(log n) updates.

    A heap of ``(load, -seq, node)`` entries; updating a node pushes a fresh entry and leaves
    the old one to be skipped when it surfaces (lazy deletion). The heap is rebuilt when stale
    entries outnumber live ones, so it stays within twice the number of nodes. Among equally
    loaded nodes the one updated last comes first: a node that has just finished a job is
    awake, its worker warm, so one job at a time keeps going to the same node rather than
    waking each node in turn.
    """

    def __init__(self) -> None:
        self.heap: list[tuple[float, int, N]] = []
        self.current: dict[N, tuple[float, int]] = {}  # node -> (load, seq) of its live entry
        self.counter = itertools.count()

    def __len__(self) -> int:
        return len(self.current)

    def __contains__(self, node: object) -> bool:
        return node in self.current

    def update(self, node: N, load: float) -> None:
        entry = (load, -next(self.counter))
        self.current[node] = entry
        heapq.heappush(self.heap, (entry[0], entry[1], node))
        if len(self.heap) > 2 * len(self.current) + 32:
            self.heap = [(load, seq, node) for node, (load, seq) in self.current.items()]
            heapq.heapify(self.heap)

    def discard(self, node: N) -> None:
        self.current.pop(node, None)

    def least_loaded(self, accept: Callable[[N], bool]) -> N | None:
        """The least loaded node for which ``accept(node)`` is true, or None."""
        heap, current = self.heap, self.current
        passed_over = []
        found = None
        while heap:
            load, seq, node = heap[0]
            if current.get(node) != (load, seq):
                heapq.heappop(heap)
            elif accept(node):
                found = node
                break
            else:
                passed_over.append(heapq.heappop(heap))
        for entry in passed_over:
            heapq.heappush(heap, entry)
        return found


class FreeCpuIndex(Generic[N]):
    """Nodes by how many of their CPUs no job holds: a ``LoadIndex`` for each such count.

    A job of ``c`` CPUs (or of a GPU, memory, a licence) looks only at nodes with at least
    ``c`` free, those with the fewest first (best fit: a node with 16 free CPUs stays free
    for a job that needs 16), the least loaded first among equals. The counts are few (the
    sizes of the nodes), so finding the first node with room costs O(log n) plus the nodes
    passed over for what else the job needs."""

    def __init__(self) -> None:
        self.by_free: dict[int, LoadIndex[N]] = {}
        self.counts: list[int] = []  # the keys of ``by_free``, ascending
        self.where: dict[N, int] = {}  # node -> its count

    def __contains__(self, node: object) -> bool:
        return node in self.where

    def update(self, node: N, free: int, load: float) -> None:
        """``node`` has ``free`` CPUs no job holds (0: it leaves the index), and ``load``."""
        if self.where.get(node, free) != free:
            self.discard(node)
        if free <= 0:
            return
        index = self.by_free.get(free)
        if index is None:
            index = self.by_free[free] = LoadIndex()
            bisect.insort(self.counts, free)
        self.where[node] = free
        index.update(node, load)

    def discard(self, node: N) -> None:
        free = self.where.pop(node, None)
        if free is None:
            return
        index = self.by_free[free]
        index.discard(node)
        if not len(index):
            del self.by_free[free]
            self.counts.remove(free)

    def best_fit(self, cpus: int, accept: Callable[[N], bool]) -> N | None:
        """The node with the fewest free CPUs, at least ``cpus``, for which ``accept`` is
        true (least loaded among equals), or None."""
        for free in self.counts[bisect.bisect_left(self.counts, cpus):]:
            node = self.by_free[free].least_loaded(accept)
            if node is not None:
                return node
        return None
