"""The scheduler's state: clusters, nodes and jobs, and what each event does to them.

Pure bookkeeping, no I/O: the server calls an event method (a job submitted, a node joined, a
result arrived, a node lost) and performs what it returns, usually a list of ``(node, job)``
dispatches. Indexes keep every event O(1) or O(log n) in the number of jobs and nodes; the
only loops are over the clusters installed on one node (a handful) and, when a cluster or a
node first appears, over the nodes or clusters it may pair with.
"""

import collections
import itertools

from ..constants import CANCELLED, CREATED, RUNNING
from .policy import LoadIndex, fair_share_pick, node_matches

INSTALLING = 'installing'
READY = 'ready'
FAILED = 'failed'


class Job:
    __slots__ = ('jid', 'uid', 'cluster', 'args', 'node', 'status', 'start_time', 'cancelling')

    def __init__(self, jid, uid, cluster, args):
        self.jid = jid
        self.uid = uid
        self.cluster = cluster
        self.args = args
        self.node = None
        self.status = CREATED
        self.start_time = None
        self.cancelling = False  # cancel sent to its node; never to be run again

    def __repr__(self):
        return '<Job %s (cluster %s job %s)>' % (self.jid, self.cluster.cid, self.uid)


class Cluster:
    def __init__(self, cid, name, code, patterns, reentrant, cleanup):
        self.cid = cid
        self.name = name
        self.code = code
        self.patterns = patterns
        self.reentrant = reentrant
        self.cleanup = cleanup
        self.queue = collections.deque()  # may hold cancelled jobs; ``queued`` counts live ones
        self.queued = 0
        self.jobs = {}  # uid -> Job, every job not yet final
        self.in_flight = 0  # jobs dispatched to nodes
        self.last_served = 0
        self.ready_nodes = set()
        self.results = {}  # uid -> result message, until the client acknowledges it
        self.owner = None  # the client's link while it is connected
        self.orphaned_since = None  # when the client left without closing

    def __repr__(self):
        return '<Cluster %s %s>' % (self.cid, self.name)

    def pop_next(self):
        while self.queue:
            job = self.queue.popleft()
            if job.status != CANCELLED:
                self.queued -= 1
                return job
        return None


class Node:
    def __init__(self, key, name, ip_addr, port, cpus, slots):
        self.key = key
        self.name = name
        self.ip_addr = ip_addr
        self.port = port
        self.cpus = cpus
        self.slots = slots
        self.jobs = {}  # jid -> Job dispatched here and not finished
        self.jobs_of = collections.Counter()  # cid -> how many of ``jobs`` are that cluster's
        self.clusters = {}  # cid -> INSTALLING / READY / FAILED
        self.jobs_done = 0
        self.busy = 0  # as the node last reported
        self.last_heard = 0.0
        self.link = None  # the node's link, for the server

    def __repr__(self):
        return '<Node %s>' % (self.key,)

    @property
    def load(self):
        return len(self.jobs) / self.cpus


class State:
    """Every cluster, node and unfinished job the scheduler knows, with their indexes."""

    def __init__(self, dispatch_depth):
        self.dispatch_depth = dispatch_depth
        self.nodes = {}  # key -> Node
        self.clusters = {}  # cid -> Cluster
        self.jobs = {}  # jid -> Job, every unfinished job
        self.free_nodes = LoadIndex()  # nodes with a free slot, least loaded first
        self.next_cid = itertools.count(1).__next__
        self.next_jid = itertools.count(1).__next__
        self.tick = itertools.count(1).__next__

    # clusters

    def add_cluster(self, name, code, patterns, reentrant, cleanup):
        """A new cluster and the nodes its computation should be installed on."""
        cluster = Cluster(self.next_cid(), name, code, patterns, reentrant, cleanup)
        self.clusters[cluster.cid] = cluster
        nodes = [node for node in self.nodes.values()
                 if node_matches(patterns, node.ip_addr, node.name, node.port)]
        for node in nodes:
            node.clusters[cluster.cid] = INSTALLING
        return cluster, nodes

    def remove_cluster(self, cluster):
        """Forget a cluster: returns the nodes to uninstall it from, its queued jobs (now
        cancelled), its ``(node, job)`` pairs still running, and the dispatches that the freed
        slots allow."""
        del self.clusters[cluster.cid]
        nodes = [node for node in self.nodes.values() if node.clusters.pop(cluster.cid, None)]
        for node in nodes:
            node.jobs_of.pop(cluster.cid, None)
        queued, running = [], []
        for job in cluster.jobs.values():
            del self.jobs[job.jid]
            if job.node is None:
                job.status = CANCELLED
                queued.append(job)
            else:
                del job.node.jobs[job.jid]
                running.append((job.node, job))
        cluster.jobs.clear()
        cluster.queue.clear()
        cluster.queued = cluster.in_flight = 0
        cluster.ready_nodes.clear()
        dispatches = []
        for node in {node for node, _ in running}:
            self._load_changed(node)
            dispatches.extend(self.fill_node(node))
        return nodes, queued, running, dispatches

    # nodes

    def add_node(self, key, name, ip_addr, port, cpus):
        """A node that joined, and the clusters to install on it."""
        node = Node(key, name, ip_addr, port, cpus, cpus * self.dispatch_depth)
        self.nodes[key] = node
        clusters = [cluster for cluster in self.clusters.values()
                    if node_matches(cluster.patterns, ip_addr, name, port)]
        for cluster in clusters:
            node.clusters[cluster.cid] = INSTALLING
        self._load_changed(node)
        return node, clusters

    def remove_node(self, node):
        """A node is gone. Its jobs of reentrant clusters go back to the front of their
        queues, in their original order; the others, and jobs being cancelled, are returned
        as lost. Returns
        ``(requeued, lost, dispatches)``."""
        if self.nodes.get(node.key) is node:
            del self.nodes[node.key]
        self.free_nodes.discard(node)
        for cid in node.clusters:
            cluster = self.clusters.get(cid)
            if cluster is not None:
                cluster.ready_nodes.discard(node)
        node.clusters = {}
        requeued, lost = [], []
        for job in sorted(node.jobs.values(), key=lambda job: job.jid, reverse=True):
            cluster = job.cluster
            cluster.in_flight -= 1
            job.node = None
            job.start_time = None
            if cluster.reentrant and not job.cancelling:
                job.status = CREATED
                cluster.queue.appendleft(job)
                cluster.queued += 1
                requeued.append(job)
            else:
                del self.jobs[job.jid]
                del cluster.jobs[job.uid]
                job.status = CANCELLED
                lost.append(job)
        node.jobs = {}
        node.jobs_of.clear()
        dispatches = []
        for cluster in {job.cluster for job in requeued}:
            dispatches.extend(self.place(cluster))
        requeued.reverse()
        return requeued, lost, dispatches

    def compute_ready(self, node, cid):
        """A node has installed a computation: it may now take that cluster's jobs."""
        cluster = self.clusters.get(cid)
        if cluster is None or node.clusters.get(cid) != INSTALLING:
            return []
        node.clusters[cid] = READY
        cluster.ready_nodes.add(node)
        return self.fill_node(node)

    def compute_failed(self, node, cid):
        cluster = self.clusters.get(cid)
        if cid in node.clusters:
            node.clusters[cid] = FAILED
        if cluster is not None:
            cluster.ready_nodes.discard(node)
        return cluster

    # jobs

    def submit(self, cluster, uid, args):
        """Queue a job; returns it with the dispatches it allows."""
        job = Job(self.next_jid(), uid, cluster, args)
        cluster.jobs[uid] = job
        self.jobs[job.jid] = job
        cluster.queue.append(job)
        cluster.queued += 1
        return job, self.place(cluster)

    def place(self, cluster):
        """Send a cluster's queued jobs to free nodes, least loaded first."""
        dispatches = []
        cid = cluster.cid
        while cluster.queued:
            node = self.free_nodes.least_loaded(lambda node: node.clusters.get(cid) == READY)
            if node is None:
                break
            job = cluster.pop_next()
            self._dispatch(node, job)
            dispatches.append((node, job))
        return dispatches

    def fill_node(self, node):
        """Give a node's free slots to queued jobs, cluster by fair share."""
        dispatches = []
        ready = None
        while len(node.jobs) < node.slots:
            if ready is None:
                ready = [self.clusters[cid] for cid, state in node.clusters.items()
                         if state == READY]
            cluster = fair_share_pick(ready, node.jobs_of)
            if cluster is None:
                break
            job = cluster.pop_next()
            self._dispatch(node, job)
            dispatches.append((node, job))
        return dispatches

    def _dispatch(self, node, job):
        node.jobs[job.jid] = job
        job.node = node
        cluster = job.cluster
        node.jobs_of[cluster.cid] += 1
        cluster.in_flight += 1
        cluster.last_served = self.tick()
        self._load_changed(node)

    def _load_changed(self, node):
        if len(node.jobs) < node.slots and self.nodes.get(node.key) is node:
            self.free_nodes.update(node, node.load)
        else:
            self.free_nodes.discard(node)

    def job_started(self, node, jid, start_time):
        """The job began on its node; None if it is no longer this node's."""
        job = node.jobs.get(jid)
        if job is not None:
            job.status = RUNNING
            job.start_time = start_time
        return job

    def job_done(self, node, jid, status):
        """A node reports a final status. Returns the job (None for a late or repeated
        report) and the dispatches the freed slot allows."""
        job = node.jobs.pop(jid, None)
        if job is None:
            return None, []
        cluster = job.cluster
        cluster.in_flight -= 1
        node.jobs_of[cluster.cid] -= 1
        del self.jobs[jid]
        del cluster.jobs[job.uid]
        job.status = status
        job.node = None
        node.jobs_done += 1
        self._load_changed(node)
        return job, self.fill_node(node)

    def cancel(self, cluster, uid):
        """Cancel a job: a queued one ends here (returns ``(job, None)``); for one on a node
        returns ``(job, node)`` and the node reports its end. ``(None, None)`` if unknown."""
        job = cluster.jobs.get(uid)
        if job is None:
            return None, None
        if job.node is not None:
            job.cancelling = True
            return job, job.node
        job.status = CANCELLED
        cluster.queued -= 1
        del cluster.jobs[uid]
        del self.jobs[job.jid]
        return job, None
