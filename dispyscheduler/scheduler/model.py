"""The scheduler's state: clusters, nodes and jobs, and what each event does to them.

Pure bookkeeping, no I/O, no links: the scheduler's parts call an event method (a job
submitted, a node joined, a result arrived, a node lost) and perform what it returns: a named
outcome (``Dispatch`` pairs to send, ``Rescheduled`` jobs, ...). Indexes keep every event
O(1) or O(log n) in the number of jobs and nodes; the only loops are over the clusters
installed on one node and the needs their jobs wait with (a handful) and, when a cluster or a
node first appears, over the nodes or clusters it may pair with.

Each job holds what it needs (``resources.Need``: CPUs, memory, GPUs, named resources) on its
node from dispatch to end; a node takes a job only where all of it is free (``Held``), except
that jobs of one CPU and nothing else may wait their turn there, a dispatch depth per CPU not
held by larger jobs. A cluster's queue (``queues.ClusterQueue``) is a heap per need, ordered
by job priority, then submission order, so a job put back after its node was lost goes before
later ones, and a large job waiting holds up no small one. When a node's turn goes to a large
job that does not fit yet, the node is kept for it (``Node.reserved``) until it does. Jobs
pinned to a node (``submit_node``) wait in a queue of their own for that node.

After a restart, jobs that were on nodes wait for their nodes to come back and say which of
them they still hold (``reattach``); a node that does not return within the grace period is
handled as lost (``expire_awaiting``).
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import os
from typing import TYPE_CHECKING, Any, Iterable, Optional, Sequence

from ..constants import (ABANDONED, CANCELLED, CREATED, MAX_DISPATCH_DEPTH, RUNNING,
                         UPLOADS_DIRECTORY)
from ..resources import ONE_CPU, Held, Need, Offer
from ..wire.files import safe_relative_path
from .outbox import Outbox
from .queues import ClusterQueue, Job, JobQueue
from .policy import (RUNTIME_WEIGHT, Candidate, FreeCpuIndex, LoadIndex, dispatch_depth,
                     fair_share_pick, node_matches)

if TYPE_CHECKING:
    from ..wire.messages import AvailInfo, FileData, FileSpec

OFFERED = 'offered'  # waiting for the client's NodeAllocate to say how many CPUs to use
INSTALLING = 'installing'
READY = 'ready'
FAILED = 'failed'  # setup failed there, or the client's allocation refused the node
CLOSING = 'closing'  # the client closed the node (``close_node``): it ends the jobs it has


class Cluster:
    def __init__(self, cid: int, name: str, code: bytes, patterns: list[tuple[str, int]],
                 reentrant: bool, cleanup: bool, allocate: bool = False,
                 need: Need = ONE_CPU) -> None:
        self.cid = cid
        self.need = need  # what its jobs need unless submitted with their own
        self.held = Held()  # what its jobs on nodes hold, in all
        self.name = name
        self.code = code
        self.patterns = patterns
        self.reentrant = reentrant
        self.cleanup = cleanup
        self.allocate = allocate  # nodes are offered to the client's NodeAllocate first
        self.queue = ClusterQueue()
        # node key -> jobs only it may run
        self.pinned: collections.defaultdict[str, JobQueue] = collections.defaultdict(JobQueue)
        self.jobs: dict[int, Job] = {}  # uid -> Job, every job not yet final
        self.job_bytes = 0  # their ``size``s
        self.in_flight = 0  # jobs dispatched to nodes
        self.done = 0  # jobs ended
        self.mean_runtime: Optional[float] = None  # of its jobs, a running mean
        self.depth = dispatch_depth(None)  # jobs in flight per CPU it may use
        self.last_served = 0
        self.ready_nodes: set[Node] = set()
        # node key -> (cpus, setup_args, uploads) the client chose
        self.allocations: dict[str, tuple[int, Optional[bytes], Sequence[str]]] = {}
        self.paused: set[str] = set()  # node keys given no more jobs (``deallocate_node``)
        self.cpu_limits: dict[str, int] = {}  # node key -> CPUs ``set_node_cpus`` left it
        self.resetting: set[str] = set()  # node keys to set up again once closed
        self.results = Outbox()  # results until the client acknowledges them
        self.setup_failures: dict[str, str] = {}  # node key -> why setup failed there
        self.files: list[FileSpec] = []  # [name, size, mode] of the computation's files
        # ref -> [name, size, mode] of files uploaded later, sent only to nodes whose
        # allocation names them (or by ``send_file``)
        self.uploads: dict[str, FileSpec] = {}
        self.directory: Optional[str] = None  # where the scheduler keeps them
        self.stored_results: dict[int, str] = {}  # uid -> file of a large result to deliver
        self.credential = b''  # what lets a client resume the cluster
        self.orphaned_since: Optional[float] = None  # when its client left without closing
        self.dormant = False  # its client is long gone: uninstalled, kept for its results
        self.busy_warned: set[str] = set()  # nodes serving another scheduler it was told of

    def __repr__(self) -> str:
        return '<Cluster %s %s>' % (self.cid, self.name)

    @property
    def queued(self) -> int:
        return len(self.queue)

    def limit_on(self, node: Node, cpus: Optional[int] = None) -> int:
        """Most of this cluster's jobs of one CPU in flight on ``node``: its depth for each
        CPU it may use there (``cpus_on``, unless the caller has it as ``cpus``)."""
        return min(node.slots, (self.cpus_on(node) if cpus is None else cpus) * self.depth)

    def cpus_on(self, node: Node) -> int:
        """The CPUs of ``node`` this cluster may use: all, what its NodeAllocate gave it, or
        what ``set_node_cpus`` left it."""
        return self.cpu_limits.get(node.key, self.allocated_cpus(node))

    def allocated_cpus(self, node: Node) -> int:
        """The CPUs of ``node`` its NodeAllocate gave this cluster (all, if none said)."""
        allocation = self.allocations.get(node.key)
        return allocation[0] if allocation is not None and allocation[0] else node.cpus

    def ran(self, runtime: float) -> None:
        """A job of this cluster ran ``runtime`` seconds: adjust how deep to dispatch."""
        if self.mean_runtime is None:
            self.mean_runtime = runtime
        else:
            self.mean_runtime += RUNTIME_WEIGHT * (runtime - self.mean_runtime)
        self.depth = dispatch_depth(self.mean_runtime)

    def could_run_on(self, node: Node, need: Need) -> bool:
        """Whether ``node`` could run a job of this cluster of ``need`` once its jobs end:
        it runs the cluster's jobs, and has that much, within the CPUs the cluster may use."""
        return (node.clusters.get(self.cid) == READY and node.key not in self.paused
                and node.offer.covers(need) and need.cpus <= self.cpus_on(node))

    def room_on(self, node: Node, need: Need) -> bool:
        """Whether ``node`` could take one of this cluster's jobs of ``need`` now.

        A job of one CPU and nothing else (``Need.light``) may wait its turn there, up to the
        cluster's dispatch depth per CPU, where CPUs are not held by larger jobs; any other
        job goes only where everything it needs is free, counting every job sent there
        (``Held.leaves_room``), and within the CPUs the cluster may use there."""
        if (node.clusters.get(self.cid) != READY or node.key in self.paused
                or node.reserved is not None or not node.light_room()):
            return False
        if need.light:
            return node.jobs_of[self.cid] < self.limit_on(node)
        return (node.held.leaves_room(need, node.offer)
                and node.held_of[self.cid] + need.cpus <= self.cpus_on(node))


class Node:
    def __init__(self, key: str, name: str, ip_addr: str, port: int, cpus: int,
                 max_depth: int, offer: Optional[Offer] = None) -> None:
        self.key = key
        self.name = name
        self.ip_addr = ip_addr
        self.port = port
        self.cpus = cpus
        self.max_depth = max_depth  # jobs of one CPU in flight per CPU, at most
        self.slots = cpus * max_depth  # jobs in flight at most; 0 while it is leaving
        self.offer = offer or Offer(cpus)  # all it has for jobs
        self.held = Held()  # what the jobs sent here hold (one CPU each waiting its turn)
        self.heavy_cpus = 0  # CPUs held by jobs that are not ``Need.light``
        # cid -> CPUs that cluster's jobs hold here
        self.held_of: collections.Counter[int] = collections.Counter()
        self.reserved: Optional[Job] = None  # the large job it is kept free for
        self.jobs: dict[int, Job] = {}  # jid -> Job dispatched here and not finished
        # cid -> how many of ``jobs`` are that cluster's
        self.jobs_of: collections.Counter[int] = collections.Counter()
        self.clusters: dict[int, str] = {}  # cid -> OFFERED / INSTALLING / READY / FAILED
        self.jobs_done = 0
        self.busy = 0  # as the node last reported
        self.last_heard = 0.0
        self.platform = ''
        self.avail: Optional[AvailInfo] = None  # what it has free, as it last reported

    def __repr__(self) -> str:
        return '<Node %s>' % (self.key,)

    @property
    def load(self) -> float:
        return self.held.cpus / self.cpus

    def light_room(self) -> bool:
        """Whether a job of one CPU could be sent here: it takes jobs, and it has fewer jobs
        of one CPU than its dispatch depth allows on the CPUs larger jobs do not hold. Every
        job needs that much room: a larger one fits only where fewer CPUs are held still."""
        free = self.cpus - self.heavy_cpus
        return (len(self.jobs) < self.slots and free > 0
                and self.held.cpus - self.heavy_cpus < free * self.max_depth)

    def answers_to(self, name: str) -> bool:
        """Whether ``name`` (from ``submit_node``) designates this node."""
        return name in (self.key, self.ip_addr, self.name)


# What events return: named outcomes for the scheduler's parts to perform

Dispatch = tuple['Node', 'Job']
"""A job placed on a node, ``(node, job)``: to be sent there. A plain pair, not a named
tuple: two are made for every job, and a named tuple costs ten times as much to make."""


@dataclasses.dataclass(slots=True)
class Rescheduled:
    """Jobs taken off a node (lost, leaving, its computation failed there, or it did not come
    back after a restart): those put back in their queues (their saved node changes), those
    ended here (their status says how; their clients must be told), and the dispatches the
    requeued ones allow."""
    requeued: list[Job] = dataclasses.field(default_factory=list)
    ended: list[Job] = dataclasses.field(default_factory=list)
    dispatches: list[Dispatch] = dataclasses.field(default_factory=list)
    kept: list[Job] = dataclasses.field(default_factory=list)
    """Jobs a node that was presumed lost still ran when it came back, on it again."""


@dataclasses.dataclass(slots=True)
class ClusterRemoved:
    """A cluster forgotten: the nodes to uninstall it from, its queued jobs (ended
    Cancelled), its jobs that were on nodes (ended Cancelled; the uninstall stops them
    there), and the dispatches the freed slots allow to other clusters."""
    nodes: list[Node]
    cancelled: list[Job]
    interrupted: list[Dispatch]
    dispatches: list[Dispatch]


@dataclasses.dataclass(slots=True)
class ClusterAdded:
    """A new cluster, and the nodes to offer it to or install it on."""
    cluster: Cluster
    nodes: list[Node]


@dataclasses.dataclass(slots=True)
class NodeAdded:
    """A node that joined, and the clusters to offer it to or install on it."""
    node: Node
    clusters: list[Cluster]


@dataclasses.dataclass(slots=True)
class Placed:
    """A job submitted, or one that ended: the job (None for a late or repeated report) and
    the dispatches the change allows."""
    job: Optional[Job]
    dispatches: list[Dispatch]


@dataclasses.dataclass(slots=True)
class Cancellation:
    """A cancel: the job (None if unknown or ended), and the node to tell when it is on one
    (None: it ended here, before it ran)."""
    job: Optional[Job]
    node: Optional[Node]
    dispatches: list[Dispatch] = dataclasses.field(default_factory=list)
    """What the node that was kept free for the job (``State.fill_node``) takes instead."""


class State:
    """Every cluster, node and unfinished job the scheduler knows, with their indexes."""

    def __init__(self, max_depth: int = MAX_DISPATCH_DEPTH, max_node_losses: int = 3,
                 epoch: int = 0, next_cid: int = 1) -> None:
        self.max_depth = max_depth
        self.max_node_losses = max_node_losses
        self.nodes: dict[str, Node] = {}  # key -> Node
        # key -> the last Node of every node that joined since the scheduler started: what
        # nodes have, to tell a job that waits for one that left from one no node could run
        self.seen: dict[str, Node] = {}
        self.total = Offer(0)  # what all the nodes have, for clusters' shares of it
        # counts changes of which nodes a cluster may use (joined, left, failed, closed):
        # what was worked out of them (``usable_offers``) is kept until it changes
        self.node_changes = 0
        self.clusters: dict[int, Cluster] = {}  # cid -> Cluster
        self.jobs: dict[int, Job] = {}  # jid -> Job, every unfinished job
        # nodes with a free slot, least loaded first
        self.free_nodes: LoadIndex[Node] = LoadIndex()
        # those of them with CPUs no job holds, by how many: where larger jobs are placed
        self.roomy: FreeCpuIndex[Node] = FreeCpuIndex()
        # node key -> {jid: Job} it held before a restart
        self.awaiting: dict[str, dict[int, Job]] = {}
        self.next_cid = itertools.count(next_cid).__next__
        # job ids of each incarnation of the scheduler are apart, so a result for a job of a
        # previous incarnation that was never saved can never be taken for a new job's
        self.next_jid = itertools.count((epoch << 40) + 1).__next__
        self.tick = itertools.count(1).__next__

    def restore(self, clusters: Iterable[dict[str, Any]],
                jobs: Iterable[dict[str, Any]]) -> None:
        """Rebuild clusters and unfinished jobs saved before a restart. Jobs that were on a
        node wait in ``awaiting`` for that node; the others are queued."""
        cluster: Optional[Cluster]
        for row in clusters:
            cluster = Cluster(row['cid'], row['name'], row['code'], row['patterns'],
                              row['reentrant'], row['cleanup'], row['allocate'],
                              row.get('need', ONE_CPU))
            cluster.files, cluster.uploads = row['files'], row['uploads']
            cluster.directory = row['directory']
            cluster.credential = row['credential']
            self.clusters[cluster.cid] = cluster
        for row in jobs:
            cluster = self.clusters.get(row['cid'])
            if cluster is None:
                continue
            job = Job(row['jid'], row['uid'], cluster, row['args'], row['priority'],
                      row['timeout'], row['files'], row['pinned'], row['tag'],
                      refs=row['refs'], need=row.get('need', ONE_CPU))
            job.lost_nodes = row['lost_nodes']
            cluster.jobs[job.uid] = job
            cluster.job_bytes += job.size
            self.jobs[job.jid] = job
            if row['node'] is not None:
                self.awaiting.setdefault(row['node'], {})[job.jid] = job
            elif job.pinned is None:
                cluster.queue.push(job)
            else:
                cluster.pinned[job.pinned].push(job)

    def reattach(self, node: Node, held: Iterable[int]) -> Rescheduled:
        """A node came back holding the jobs ``held``. Jobs it held before a restart of the
        scheduler stay on it (those it lost go back to the queue); so do jobs it held when it
        was presumed lost (frozen, cut off) that are still waiting in their queue: they ran on
        all along, and running them again elsewhere would only waste their work. Held jobs
        that now run elsewhere, or have ended, are not its own: the caller tells it to drop
        them. Returns ``Rescheduled`` (``kept``: the jobs taken back from their queue)."""
        outcome = Rescheduled()
        held = set(held)
        for jid, job in self.awaiting.pop(node.key, {}).items():
            if jid in held:
                self._attach(node, job)
            else:
                self._requeue(job)
                outcome.requeued.append(job)
        for jid in held:
            waiting = self.jobs.get(jid)
            if waiting is not None and waiting.queued and waiting.pinned is None:
                waiting.cluster.queue.forget(waiting)
                freed = self._unreserve(waiting)
                if freed is not None:
                    outcome.dispatches.extend(self.fill_node(freed))
                waiting.status = RUNNING  # as it was when its node fell silent
                self._attach(node, waiting)
                outcome.kept.append(waiting)
        self._load_changed(node)
        return self._place_requeued(outcome)

    def _attach(self, node: Node, job: Job) -> None:
        node.jobs[job.jid] = job
        job.node = node
        cluster, need = job.cluster, job.need
        node.jobs_of[cluster.cid] += 1
        cluster.in_flight += 1
        node.held.take(need)
        cluster.held.take(need)
        node.held_of[cluster.cid] += need.cpus
        if not need.light:
            node.heavy_cpus += need.cpus

    def _detach(self, node: Node, job: Job) -> None:
        """``job`` leaves ``node``: what it held there is free again."""
        del node.jobs[job.jid]
        cluster, need = job.cluster, job.need
        node.jobs_of[cluster.cid] -= 1
        cluster.in_flight -= 1
        node.held.give(need)
        cluster.held.give(need)
        node.held_of[cluster.cid] -= need.cpus
        if not need.light:
            node.heavy_cpus -= need.cpus

    def _unreserve(self, job: Job) -> Optional[Node]:
        """``job`` no longer waits for the node kept free for it: returns that node (to be
        filled), or None."""
        node = job.reserved_on
        if node is None:
            return None
        job.reserved_on = None
        if node.reserved is job:
            node.reserved = None
            self._load_changed(node)
        return node

    def expire_awaiting(self) -> Rescheduled:
        """The grace period after a restart is over: jobs of nodes that did not come back are
        handled as lost with their node."""
        outcome = Rescheduled()
        for waiting in self.awaiting.values():
            for job in waiting.values():
                self._lose(job, outcome)
        self.awaiting = {}
        return self._place_requeued(outcome)

    def _place_requeued(self, outcome: Rescheduled,
                        also: Iterable[Cluster] = ()) -> Rescheduled:
        for cluster in {job.cluster for job in outcome.requeued}.union(also):
            if cluster.cid in self.clusters:
                outcome.dispatches.extend(self.place(cluster))
        return outcome

    def _requeue(self, job: Job) -> None:
        job.node = None
        job.start_time = None
        job.status = CREATED
        if job.pinned is None:
            job.cluster.queue.push(job)
        else:
            job.cluster.pinned[job.pinned].push(job)

    def _lose(self, job: Job, outcome: Rescheduled) -> None:
        """``job`` was on a node that died: requeue it if its cluster allows (and it has not
        outlived too many nodes already), else end it."""
        job.lost_nodes += 1
        if job.cancelling:
            self._end(job, CANCELLED)
        elif job.lost_nodes >= self.max_node_losses:
            self._end(job, ABANDONED)
        elif job.cluster.reentrant and job.pinned is None:
            self._requeue(job)
            outcome.requeued.append(job)
            return
        else:
            self._end(job, CANCELLED)
        outcome.ended.append(job)

    # clusters

    def add_cluster(self, name: str, code: bytes, patterns: list[tuple[str, int]],
                    reentrant: bool, cleanup: bool, allocate: bool = False,
                    need: Need = ONE_CPU) -> ClusterAdded:
        """A new cluster (whose jobs need ``need`` unless they say otherwise) and the nodes to
        offer it to: its computation is installed on each at once, or, with ``allocate``, once
        the client's NodeAllocate has accepted it. Returns ``ClusterAdded``."""
        cluster = Cluster(self.next_cid(), name, code, patterns, reentrant, cleanup, allocate,
                          need)
        self.clusters[cluster.cid] = cluster
        nodes = [node for node in self.nodes.values()
                 if node_matches(patterns, node.ip_addr, node.name, node.port)]
        for node in nodes:
            node.clusters[cluster.cid] = OFFERED if allocate else INSTALLING
        return ClusterAdded(cluster, nodes)

    def remove_cluster(self, cluster: Cluster) -> ClusterRemoved:
        """Forget a cluster; returns ``ClusterRemoved``."""
        del self.clusters[cluster.cid]
        queued, running = [], []
        freed = set()
        for job in cluster.jobs.values():
            del self.jobs[job.jid]
            if job.node is None:
                job.status = CANCELLED
                queued.append(job)
                node = self._unreserve(job)
                if node is not None:
                    freed.add(node)
            else:
                running.append((job.node, job))
                freed.add(job.node)
                self._detach(job.node, job)
        nodes = [node for node in self.nodes.values() if node.clusters.pop(cluster.cid, None)]
        for node in nodes:
            node.jobs_of.pop(cluster.cid, None)
            node.held_of.pop(cluster.cid, None)
        for waiting in self.awaiting.values():
            for job in cluster.jobs.values():
                waiting.pop(job.jid, None)
        cluster.jobs.clear()
        cluster.job_bytes = 0
        cluster.queue = ClusterQueue()
        cluster.pinned.clear()
        cluster.ready_nodes.clear()
        dispatches = []
        for node in freed:
            self._load_changed(node)
            dispatches.extend(self.fill_node(node))
        return ClusterRemoved(nodes, queued, running, dispatches)

    def retire(self, cluster: Cluster) -> list[Node]:
        """A cluster with nothing to run whose client is long gone keeps its results but
        frees its nodes: returns the nodes to uninstall it from."""
        nodes = [node for node in self.nodes.values() if node.clusters.pop(cluster.cid, None)]
        for node in nodes:
            node.jobs_of.pop(cluster.cid, None)
            node.held_of.pop(cluster.cid, None)
        cluster.ready_nodes.clear()
        cluster.allocations.clear()
        cluster.paused.clear()
        cluster.cpu_limits.clear()
        cluster.resetting.clear()
        cluster.dormant = True
        return nodes

    def revive(self, cluster: Cluster) -> list[Node]:
        """A retired cluster's client came back: the nodes to install it on again."""
        cluster.dormant = False
        nodes = [node for node in self.nodes.values()
                 if node_matches(cluster.patterns, node.ip_addr, node.name, node.port)]
        for node in nodes:
            node.clusters[cluster.cid] = OFFERED if cluster.allocate else INSTALLING
        return nodes

    # nodes

    def add_node(self, key: str, name: str, ip_addr: str, port: int, cpus: int,
                 offer: Optional[Offer] = None) -> NodeAdded:
        """A node that joined (with ``offer``, if it has more than CPUs to give), and the
        clusters to offer it to (see ``add_cluster``); returns ``NodeAdded``."""
        node = Node(key, name, ip_addr, port, cpus, self.max_depth, offer)
        self.nodes[key] = self.seen[key] = node
        self.node_changes += 1
        self.total.add(node.offer)
        clusters = [cluster for cluster in self.clusters.values()
                    if not cluster.dormant and node_matches(cluster.patterns, ip_addr, name,
                                                            port)]
        for cluster in clusters:
            node.clusters[cluster.cid] = OFFERED if cluster.allocate else INSTALLING
        self._load_changed(node)
        return NodeAdded(node, clusters)

    def remove_node(self, node: Node) -> Rescheduled:
        """A node is gone. Its jobs of reentrant clusters go back to their queues, ahead of
        later ones; the others, jobs being cancelled, jobs pinned to it (running or waiting)
        and jobs that have now lost ``max_node_losses`` nodes end here (Cancelled, or
        Abandoned for the last). Returns ``Rescheduled``."""
        self.node_changes += 1
        if self.nodes.get(node.key) is node:
            del self.nodes[node.key]
            self.total.add(node.offer, -1)
        self._no_room(node)
        outcome = Rescheduled()
        also = []  # the cluster of the job the node was kept for: placed anew
        if node.reserved is not None:
            also.append(node.reserved.cluster)
            self._unreserve(node.reserved)
        for cid in node.clusters:
            cluster = self.clusters.get(cid)
            if cluster is not None:
                cluster.ready_nodes.discard(node)
                cluster.allocations.pop(node.key, None)
                cluster.paused.discard(node.key)
                cluster.cpu_limits.pop(node.key, None)
                cluster.resetting.discard(node.key)
                waiting = cluster.pinned.pop(node.key, None)
                for job in waiting.jobs() if waiting else ():
                    self._end(job, CANCELLED)
                    outcome.ended.append(job)
        node.clusters = {}
        for job in sorted(node.jobs.values(), key=lambda job: job.jid):
            self._detach(node, job)
            self._lose(job, outcome)
        node.jobs_of.clear()
        node.held_of.clear()
        return self._place_requeued(outcome, also)

    def allocate(self, node: Node, cid: int, cpus: int, setup_args: Optional[bytes],
                 files: Sequence[str]) -> bool:
        """The client's NodeAllocate answered for a node: 0 CPUs refuses it; otherwise the
        computation is to be installed there (returns True)."""
        cluster = self.clusters.get(cid)
        if cluster is None or node.clusters.get(cid) != OFFERED:
            return False
        if cpus <= 0:
            node.clusters[cid] = FAILED
            return False
        node.clusters[cid] = INSTALLING
        cluster.allocations[node.key] = (min(cpus, node.cpus), setup_args, files)
        self.node_changes += 1
        return True

    def compute_ready(self, node: Node, cid: int) -> list[Dispatch]:
        """A node has installed a computation: it may now take that cluster's jobs."""
        cluster = self.clusters.get(cid)
        if cluster is None or node.clusters.get(cid) != INSTALLING:
            return []
        node.clusters[cid] = READY
        cluster.ready_nodes.add(node)
        return self.fill_node(node)

    def compute_failed(self, node: Node, cid: int, reason: str = '') -> Rescheduled:
        """Setup failed on a node, or its worker host died: the node takes no more of the
        cluster's jobs, and those sent there that never started go back to the queue; jobs
        pinned to the node end here. Returns ``Rescheduled``."""
        cluster = self.clusters.get(cid)
        self.node_changes += 1
        if cid in node.clusters and node.clusters[cid] != CLOSING:  # closing: it ends anyway
            node.clusters[cid] = FAILED
        if cluster is None:
            return Rescheduled()
        cluster.setup_failures[node.key] = reason
        cluster.ready_nodes.discard(node)
        waiting = cluster.pinned.pop(node.key, None)
        outcome = Rescheduled(ended=waiting.jobs() if waiting else [])
        for job in outcome.ended:
            self._end(job, CANCELLED)
        for job in [job for job in node.jobs.values()
                    if job.cluster is cluster and job.status != RUNNING]:
            self._take_back(node, job)
            if job.pinned is None:
                self._requeue(job)
                outcome.requeued.append(job)
            else:
                self._end(job, CANCELLED)
                outcome.ended.append(job)
        self._load_changed(node)
        outcome.dispatches = self.place(cluster) + self.fill_node(node)
        return outcome

    def usable_offers(self, cluster: Cluster, ever: bool = False) -> list[Offer]:
        """What each node that runs the cluster, or may still set it up, has for its jobs
        (all of a node's CPUs, or what its NodeAllocate gave it); nodes not yet asked count
        as they would be: the cluster's patterns match them. With ``ever``, nodes that left
        count too, as they were."""
        offers = []
        for node in (self.seen if ever else self.nodes).values():
            state = node.clusters.get(cluster.cid)
            if state in (FAILED, CLOSING) or node.slots == 0 and self.nodes.get(node.key) is node:
                continue
            if state is None and (cluster.dormant or not node_matches(
                    cluster.patterns, node.ip_addr, node.name, node.port)):
                continue
            cpus = min(node.cpus, cluster.cpus_on(node))
            offers.append(node.offer if cpus == node.cpus else
                          Offer(cpus, node.offer.memory, node.offer.gpus, node.offer.named))
        return offers

    def setting_up(self, cluster: Cluster) -> bool:
        """Whether a node may still set the cluster up (it is installing or offered there)."""
        return any(node.clusters.get(cluster.cid) in (INSTALLING, OFFERED)
                   or node.key in cluster.resetting for node in self.nodes.values())

    def abandon_queued(self, cluster: Cluster) -> list[Job]:
        """End the cluster's jobs that wait for a node (none will set it up): Abandoned."""
        waiting = cluster.queue.jobs() + [job for queue in cluster.pinned.values()
                                          for job in queue.jobs()]
        cluster.queue = ClusterQueue()
        cluster.pinned.clear()
        for job in waiting:
            self._unreserve(job)  # none is: a node kept for one runs the cluster (READY)
            self._end(job, ABANDONED)
        return waiting

    # a cluster's own use of its nodes (``allocate_node``, ``close_node``, ...)

    def allocate_nodes(self, cluster: Cluster, patterns: list[tuple[str, int]],
                       offer: bool) -> tuple[list[Node], list[Dispatch]]:
        """``allocate_node``: the cluster may also use nodes matching ``patterns`` (offered to
        its NodeAllocate first with ``offer``); nodes it had stopped using
        (``deallocate_node``) take its jobs again. Returns the nodes to offer it to or install
        it on, and the dispatches the resumed nodes allow."""
        cluster.patterns.extend(pattern for pattern in patterns
                                if pattern not in cluster.patterns)
        cluster.allocate = cluster.allocate or offer
        new, dispatches = [], []
        for node in self.nodes.values():
            if not node_matches(patterns, node.ip_addr, node.name, node.port):
                continue
            if node.key in cluster.paused:
                cluster.paused.discard(node.key)
                dispatches.extend(self.fill_node(node))
            elif cluster.cid not in node.clusters and not cluster.dormant:
                node.clusters[cluster.cid] = OFFERED if cluster.allocate else INSTALLING
                new.append(node)
        return new, dispatches

    def deallocate_node(self, cluster: Cluster, node: Node) -> bool:
        """``deallocate_node``: the node keeps the computation and finishes the cluster's
        jobs it has, and takes no more of them until ``allocate_node``."""
        if node.clusters.get(cluster.cid) not in (READY, INSTALLING):
            return False
        cluster.paused.add(node.key)
        return True

    def set_node_cpus(self, cluster: Cluster, node: Node, cpus: int) -> int:
        """``set_node_cpus``: how many of the node's CPUs the cluster uses from now on
        (a negative number: all but that many), at most what its allocation gave it, or -1
        if the node is not the cluster's. Other clusters' shares do not change."""
        if node.clusters.get(cluster.cid) not in (READY, INSTALLING):
            return -1
        allocation = cluster.allocated_cpus(node)
        cpus = cpus if cpus >= 0 else allocation + cpus
        cluster.cpu_limits[node.key] = max(0, min(cpus, allocation))
        self.node_changes += 1
        self._load_changed(node)
        return cluster.cpu_limits[node.key]

    def close_node(self, cluster: Cluster, node: Node, resetup: bool) -> Optional[list[Job]]:
        """``close_node``/``resetup_node``: the node takes no more of the cluster's jobs;
        jobs waiting for it alone (``submit_node``) end Cancelled (returned); those it has go
        on to their end, then it uninstalls the computation (``finish_closing``), and sets it
        up again with ``resetup``. None if the node is not the cluster's."""
        if node.clusters.get(cluster.cid) not in (READY, INSTALLING, FAILED):
            return None
        node.clusters[cluster.cid] = CLOSING
        cluster.ready_nodes.discard(node)
        cluster.paused.discard(node.key)
        cluster.cpu_limits.pop(node.key, None)
        if resetup:
            cluster.resetting.add(node.key)
        waiting = cluster.pinned.pop(node.key, None)
        ended = waiting.jobs() if waiting else []
        for job in ended:
            self._end(job, CANCELLED)
        return ended

    def jobs_released(self, node: Node, cid: int, released: Iterable[int]) -> Rescheduled:
        """The node handed back the cluster's jobs it had not started (``released``), after
        the client closed it or set it aside: they go back to their queues, except jobs
        submitted for a node the client closed, which end Cancelled. Returns
        ``Rescheduled``."""
        outcome = Rescheduled()
        cluster = self.clusters.get(cid)
        if cluster is None:
            return outcome
        closing = node.clusters.get(cid) == CLOSING
        for jid in released:
            job = node.jobs.get(jid)
            if job is None or job.cluster is not cluster or job.status == RUNNING:
                continue
            self._take_back(node, job)
            if closing and job.pinned is not None:
                job.node = None
                self._end(job, CANCELLED)
                outcome.ended.append(job)
            else:
                self._requeue(job)
                outcome.requeued.append(job)
        self._load_changed(node)
        outcome.dispatches = self.place(cluster) + self.fill_node(node)
        return outcome

    def finish_closing(self, node: Node, cid: int) -> Optional[bool]:
        """A node closing a cluster's computation has ended its jobs of it: None while it
        has not (or is not closing it); else the computation is to be uninstalled there, and
        True if it is to be set up again (the node is offered to the cluster anew)."""
        cluster = self.clusters.get(cid)
        if cluster is None or node.clusters.get(cid) != CLOSING or node.jobs_of[cid]:
            return None
        cluster.allocations.pop(node.key, None)
        cluster.setup_failures.pop(node.key, None)
        if node.key in cluster.resetting:
            cluster.resetting.discard(node.key)
            node.clusters[cid] = OFFERED if cluster.allocate else INSTALLING
            return True
        del node.clusters[cid]
        node.jobs_of.pop(cid, None)
        return False

    def node_leaving(self, node: Node, unstarted: Iterable[int]) -> Rescheduled:
        """A node shutting down hands back the jobs it has not started (``unstarted`` ids)
        and takes no more. Returns ``Rescheduled`` (nothing ends)."""
        node.slots = 0
        self.node_changes += 1
        self._no_room(node)
        outcome = Rescheduled()
        also = []  # the cluster of the job the node was kept for: placed anew
        if node.reserved is not None:
            also.append(node.reserved.cluster)
            self._unreserve(node.reserved)
        for jid in unstarted:
            job = node.jobs.get(jid)
            if job is not None and job.status != RUNNING:
                self._take_back(node, job)
                self._requeue(job)
                outcome.requeued.append(job)
        return self._place_requeued(outcome, also)

    def node_resumed(self, node: Node) -> list[Dispatch]:
        """A node that left (``node_leaving``) but kept its link takes jobs again."""
        node.slots = node.cpus * node.max_depth
        self.node_changes += 1
        self._load_changed(node)
        return self.fill_node(node)

    def _take_back(self, node: Node, job: Job) -> None:
        self._detach(node, job)

    # jobs

    def submit(self, cluster: Cluster, uid: int, args: bytes, priority: int = 0,
               timeout: Optional[float] = None, files: Sequence[FileData] = (),
               pinned: Optional[str] = None, tag: Optional[bytes] = None,
               size: Optional[int] = None, refs: Sequence[str] = (),
               need: Optional[Need] = None) -> Placed:
        """Queue a job (of ``job_size`` ``size``, if counted already; needing ``need``, else
        what its cluster's jobs need); returns ``Placed``: the job and the dispatches it
        allows."""
        need = need or cluster.need
        job = Job(self.next_jid(), uid, cluster, args, priority, timeout, files, pinned, tag,
                  size, refs, need)
        cluster.jobs[uid] = job
        cluster.job_bytes += job.size
        self.jobs[job.jid] = job
        if pinned is None:
            # jobs of a larger need already waiting: no node has room for one now (every
            # event that frees room fills that node), so none is looked for
            waiting = not need.light and need in cluster.queue.by_need
            cluster.queue.push(job)
            return Placed(job, [] if waiting else self.place(cluster))
        cluster.pinned[pinned].push(job)
        node = self.nodes.get(pinned)
        return Placed(job, self.fill_node(node) if node is not None else [])

    def place(self, cluster: Cluster) -> list[Dispatch]:
        """Send a cluster's queued jobs to nodes with room for them, least loaded first."""
        dispatches: list[Dispatch] = []
        for need, queue in cluster.queue.waiting():
            def has_room(node: Node, need: Need = need) -> bool:
                return cluster.room_on(node, need)
            while queue:
                node = (self.free_nodes.least_loaded(has_room) if need.light
                        else self.roomy.best_fit(need.cpus, has_room))
                if node is None:
                    break
                job = cluster.queue.pop(need)
                assert job is not None  # one is queued
                dispatches.extend(self._dispatch_queued(node, job))
        return dispatches

    def fill_node(self, node: Node) -> list[Dispatch]:
        """Give a node's room to the job it was kept free for, then to jobs pinned to it,
        then to queued jobs, cluster by fair share.

        When it is the turn of a job that needs more than the node has free now (more CPUs,
        a GPU), the node is kept for that job (``reserved``): it takes no other job until
        the ones it has end and that job fits. So a job of eight CPUs is not starved by a
        stream of one-CPU jobs, each of which would fit first; and since the node goes to
        whichever cluster's turn it is, a cluster of large jobs cannot take every node that
        way either."""
        dispatches: list[Dispatch] = []
        reserved = node.reserved
        if reserved is not None:
            node.reserved = None
            if not reserved.queued or not reserved.cluster.could_run_on(node, reserved.need):
                reserved.reserved_on = None  # it went elsewhere, or ended, or this node no
                # longer runs its cluster's jobs (closed, set aside, failed, fewer CPUs)
            elif reserved.cluster.room_on(node, reserved.need):
                reserved.reserved_on = None
                reserved.cluster.queue.forget(reserved)
                self._dispatch(node, reserved)
                dispatches.append((node, reserved))
            else:
                node.reserved = reserved
                return dispatches
        ready = [self.clusters[cid] for cid, state in node.clusters.items() if state == READY]
        for cluster in ready:
            waiting = cluster.pinned.get(node.key)
            while waiting:
                job = waiting.peek()
                assert job is not None  # one waits
                if not cluster.room_on(node, job.need):
                    break
                waiting.pop()
                self._dispatch(node, job)
                dispatches.append((node, job))
        # ``Cluster.room_on``, unrolled: on every job's path, and what it checks of the
        # node (taking jobs, kept for none) and of the clusters (ready, not set aside,
        # their limits here) holds for the whole loop
        usable = []
        for cluster in ready:
            if cluster.queue.live and node.key not in cluster.paused:
                cpus = cluster.cpus_on(node)
                usable.append((cluster, cluster.limit_on(node, cpus), cpus))
        jobs_of, held_of, held, offer = node.jobs_of, node.held_of, node.held, node.offer
        while node.light_room():
            candidates: list[Candidate] = []
            for cluster, limit, cpus in usable:
                for need, queue in cluster.queue.by_need.items():
                    head = queue.peek()
                    assert head is not None  # a queue is dropped when it empties
                    if need.light:
                        fits = jobs_of[cluster.cid] < limit
                    else:
                        fits = (held.leaves_room(need, offer)
                                and held_of[cluster.cid] + need.cpus <= cpus)
                        if not fits and (head.reserved_on is not None
                                         or not cluster.could_run_on(node, need)):
                            continue
                    if fits or not need.light:
                        candidates.append((cluster, (-head.priority, head.jid), (need, fits)))
            chosen: Optional[Candidate]
            if len(candidates) == 1:
                chosen = candidates[0]
            else:
                chosen = fair_share_pick(candidates, held_of, self.total)
            if chosen is not None and not chosen[2][1]:
                # a node is kept only for a cluster that holds no more of the pool than one
                # whose job fits now: one holding a whole node does not take another this way
                share = chosen[0].held.share_of(self.total)
                fitting = [candidate for candidate in candidates if candidate[2][1]]
                if any(candidate[0].held.share_of(self.total) < share
                       for candidate in fitting):
                    chosen = fair_share_pick(fitting, held_of, self.total)
            if chosen is None:
                break
            cluster, _, (need, fits) = chosen
            if not fits:  # its turn, and it needs more than is free: the node waits for it
                head = cluster.queue.by_need[need].peek()
                assert head is not None
                node.reserved, head.reserved_on = head, node
                self._no_room(node)
                break
            job = cluster.queue.pop(need)
            assert job is not None  # the candidate's queue had it at its head
            dispatches.extend(self._dispatch_queued(node, job))
        return dispatches

    def _dispatch_queued(self, node: Node, job: Job) -> list[Dispatch]:
        """Send a job taken from its queue to ``node``; a node that was kept free for it
        elsewhere is filled with other jobs."""
        freed = self._unreserve(job)
        self._dispatch(node, job)
        dispatches = [(node, job)]
        if freed is not None and freed is not node:
            dispatches.extend(self.fill_node(freed))
        return dispatches

    def _dispatch(self, node: Node, job: Job) -> None:
        self._attach(node, job)
        job.cluster.last_served = self.tick()
        self._load_changed(node)

    def _load_changed(self, node: Node) -> None:
        if node.reserved is None and node.light_room() and self.nodes.get(node.key) is node:
            self.free_nodes.update(node, node.load)
            self.roomy.update(node, node.cpus - node.held.cpus, node.load)
        else:
            self._no_room(node)

    def _no_room(self, node: Node) -> None:
        self.free_nodes.discard(node)
        self.roomy.discard(node)

    def _end(self, job: Job, status: int) -> None:
        del self.jobs[job.jid]
        del job.cluster.jobs[job.uid]
        job.cluster.job_bytes -= job.size
        job.cluster.done += 1
        job.status = status

    def job_started(self, node: Node, jid: int, start_time: float) -> Optional[Job]:
        """The job began on its node; None if it is no longer this node's."""
        job = node.jobs.get(jid)
        if job is not None:
            job.status = RUNNING
            job.start_time = start_time
        return job

    def job_done(self, node: Node, jid: int, status: int,
                 runtime: Optional[float] = None) -> Placed:
        """A node reports a final status (and how long the job ran). Returns ``Placed``: the
        job (None for a late or repeated report) and the dispatches the freed slot allows."""
        job = node.jobs.get(jid)
        if job is None:
            return Placed(None, [])
        cluster = job.cluster
        if runtime is not None:
            cluster.ran(runtime)
        self._detach(node, job)
        self._end(job, status)
        job.node = None
        node.jobs_done += 1
        self._load_changed(node)
        return Placed(job, self.fill_node(node))

    def cancel(self, cluster: Cluster, uid: int) -> Cancellation:
        """Cancel a job (``Cancellation``): a queued one ends here (no node); for one on a node,
        the node is to be told, and reports its end. No job if it is unknown."""
        job = cluster.jobs.get(uid)
        if job is None:
            return Cancellation(None, None)
        if job.node is not None:
            job.cancelling = True
            return Cancellation(job, job.node)
        for waiting in self.awaiting.values():
            if waiting.pop(job.jid, None) is not None:
                break  # it was on a node before a restart, not in a queue
        else:
            if job.pinned is None:
                cluster.queue.forget(job)
            else:
                cluster.pinned[job.pinned].forget(job)
        freed = self._unreserve(job)
        self._end(job, CANCELLED)
        return Cancellation(job, None, self.fill_node(freed) if freed is not None else [])


def upload_path(cluster: Cluster, ref: str) -> str:
    """Where the scheduler keeps a cluster's upload ``ref``."""
    assert cluster.directory is not None  # made for its first upload
    name = cluster.uploads[ref][0] if ref in cluster.uploads else ''
    return os.path.join(upload_directory(cluster.directory, ref), safe_relative_path(name))


def upload_directory(cluster_directory: str, ref: str) -> str:
    return os.path.join(cluster_directory, UPLOADS_DIRECTORY, ref)
