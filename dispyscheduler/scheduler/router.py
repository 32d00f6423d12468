"""Performing what the model decided: jobs to nodes, ends of jobs to clients, each recorded.

Every event on the model that places or ends jobs returns an outcome (``model.Dispatch`` pairs,
``model.Rescheduled``); the router sends each job to its node, tells each job's client how it
ended, and records both in the store, so the node and client parts need not know how. A
result leaves for the client before the bookkeeping, so it is not delayed by it.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Iterable, Optional

from ..constants import CANCELLED
from ..wire.messages import JobDone, JobEnd
from .durability import Durability
from .model import Cluster, Dispatch, Node, Rescheduled, State
from .queues import Job
from .outbox import message_size
from .sessions import Peers

if TYPE_CHECKING:
    from .httpd import Metrics

logger = logging.getLogger(__name__)


class Router:
    def __init__(self, state: State, peers: Peers, durability: Durability,
                 metrics: Metrics) -> None:
        self.state = state
        self.peers = peers
        self.durability = durability
        self.metrics = metrics

    def dispatch(self, dispatches: Iterable[Dispatch]) -> None:
        """Send placed jobs to their nodes (the node's waiting acknowledgements go along)."""
        for node, job in dispatches:
            session = self.peers.node(node.key)
            if session is not None:
                session.send_job(job)
            if job.submitted_at is not None:  # its first placement
                self.metrics.job_placed(time.monotonic() - job.submitted_at)
                job.submitted_at = None
            self.durability.job_moved(job)

    def reschedule(self, outcome: Rescheduled, reason: str) -> None:
        """Jobs taken off a node: the requeued ones are recorded and placed, the ended ones
        told to their clients (``reason`` says why, for those that ended Cancelled); jobs a
        returning node kept are recorded on it again."""
        for job in outcome.requeued + outcome.kept:
            self.durability.job_moved(job)
        for job in outcome.ended:
            self.end_job(job, job.status, 'job was cancelled' if job.cancelling else
                         reason if job.status == CANCELLED else
                         '%s; it has now lost %d nodes and is given up'
                         % (reason, job.lost_nodes))
        self.dispatch(outcome.dispatches)

    def deliver(self, job: Job, node: Node, done: JobDone) -> None:
        """Pass a node's result to the job's client, and keep it until acknowledged."""
        self.send_result(job.cluster, JobEnd.relay(done, job.uid, node.ip_addr, job.tag), job)

    def end_job(self, job: Job, status: int, reason: str) -> None:
        """Tell the client a job ended without a result from a node."""
        self.send_result(job.cluster, JobEnd.failure(
            job.uid, status, reason, job.start_time,
            job.node.ip_addr if job.node is not None else None, job.tag), job)

    def refuse_submission(self, cluster: Cluster, uid: int, status: int, reason: str) -> None:
        """A submission refused at once: it ends without becoming a job."""
        self.send_result(cluster, JobEnd.failure(uid, status, reason))

    def send_result(self, cluster: Cluster, message: JobEnd, job: Optional[Job] = None) -> None:
        """Keep a job's final message until the client acknowledges it (saved, and then in
        the store only), and send it now if its client's window has room (else it waits)."""
        size = message_size(message)
        if cluster.results.add(message, size):  # first: it leaves at once
            session = self.peers.client(cluster.cid)
            if session is not None:  # else it is sent again when a client attaches
                session.job_ended(message, cluster.stored_results.get(message.uid))
        self.metrics.job_ended(message.status)
        if cluster.cid in self.state.clusters:
            self.durability.job_ended(cluster.cid, job.jid if job is not None else None,
                                      message, size)
            self.durability.when_durable(cluster.results.saved, message.uid)

    def send_waiting(self, cluster: Cluster) -> None:
        """Send a cluster's waiting results that fit in its client's window now, reading those
        kept only in the store from it."""
        results = cluster.results
        while cluster.cid in self.state.clusters:
            session = self.peers.client(cluster.cid)
            taken = results.take()
            if session is None or not taken:
                return
            generation = results.generation
            on_disk = [uid for uid, message in taken if message is None]
            loaded = self.durability.load_results(cluster.cid, on_disk) if on_disk else {}
            if results.generation != generation or cluster.cid not in self.state.clusters:
                return  # another link took over meanwhile, or the cluster was closed
            for uid, message in taken:
                if message is None:
                    message = loaded.get(uid)
                if message is not None:
                    session.job_ended(message, cluster.stored_results.get(uid))
                elif uid in results:  # not acknowledged meanwhile: it should have been there
                    logger.error('internal error: result %d of cluster %d is not in the store',
                                 uid, cluster.cid)

    def notify_node(self, cluster: Cluster, node: Node, status: int, reason: str = '') -> None:
        """Tell a cluster's client that a node set it up, no longer runs it, or could not set
        it up (``reason`` says why)."""
        session = self.peers.client(cluster.cid)
        if session is not None:
            session.node_status(node, status, reason)

    def warn_client(self, cluster: Cluster, reason: str) -> bool:
        """Log a cluster's warning and tell its client; whether the client was there."""
        logger.warning('cluster %s: %s', cluster.cid, reason)
        session = self.peers.client(cluster.cid)
        if session is not None:
            session.warn(reason)
        return session is not None
