"""The scheduler's side of node links: joining, installing computations, results, loss.

One greenlet per node link (``serve``) authenticates the node, then reads its messages top to
bottom, turning each into an event on the model; the router performs what the model decided.
A result is acknowledged to its node only once it is saved.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional

import gevent

from ..config import SchedulerConfig
from ..constants import (ACK_DELAY, NODE_AVAIL_INFO, NODE_CLOSED, NODE_INITIALIZED,
                         NODE_SETUP_FAILED, TERMINATED)
from ..resources import Offer
from ..wire import messages as m
from ..wire.files import discard, remove_file, safe_relative_path
from ..wire.protocol import ProtocolError
from .admission import Admission
from .durability import Durability
from .model import CLOSING, READY, Cluster, Node, State, upload_path
from .queues import Job
from .payloads import cluster_directory, receive_part
from .router import Router
from .sessions import NodeSession, Peers

if TYPE_CHECKING:
    from OpenSSL import SSL

logger = logging.getLogger(__name__)


class NodeService:
    def __init__(self, config: SchedulerConfig, state: State, peers: Peers, router: Router,
                 durability: Durability, admission: Admission, scheduler_id: str,
                 tls_context: Optional[SSL.Context] = None) -> None:
        self.config = config
        self.state = state
        self.peers = peers
        self.router = router
        self.durability = durability
        self.admission = admission
        self.scheduler_id = scheduler_id
        self.tls_context = tls_context
        self.handlers: dict[type, Callable[[NodeSession, Node, Any], None]] = {
            m.JobDone: self.on_job_done, m.JobStarted: self.on_job_started,
            m.Provisional: self.on_provisional, m.JobFile: self.on_job_file,
            m.Pulse: self.on_pulse, m.ComputeReady: self.on_compute_ready,
            m.ComputeFailed: self.on_compute_failed, m.NodeLeaving: self.on_node_leaving,
            m.JobsReleased: self.on_jobs_released, m.Avail: self.on_avail,
            m.NodeResumed: self.on_node_resumed, m.ValuesLost: self.on_values_lost,
            m.PayloadPart: self.on_payload_part,
        }

    def serve(self, sock: socket.socket, address: tuple[str, int]) -> None:
        """A node connected (a StreamServer handler): admit it, then serve it until its link
        ends, and handle it as lost then."""
        link = self.admission.accept(sock, self.tls_context, self.config.node_secret, 'node',
                                     address)
        if link is None:
            return
        try:
            info = link.expect(m.NodeInfo, time.monotonic() + self.admission.handshake_timeout)
        except (ProtocolError, OSError) as exc:
            logger.warning('dropped node connection from %s: %s', address[0], exc)
            return
        key = '%s:%d' % (info.ip_addr, info.port)
        old = self.state.nodes.get(key)
        if old is not None:
            self.lose(old, 'the node connected again')
        session = NodeSession(link, key)
        node = self.join(session, info)
        reason = session.run(lambda message: self.on_message(session, node, message))
        session.payloads.abandon()
        self.lose(node, reason)

    def join(self, session: NodeSession, info: m.NodeInfo) -> Node:
        """A node that authenticated: into the model, told who we are, given its clusters,
        and told to drop jobs it held that are no longer its own."""
        cpus = max(1, info.cpus)
        added = self.state.add_node(session.key, info.name, info.ip_addr, info.port, cpus,
                                    Offer.from_wire(cpus, info.resources))
        node = added.node
        node.platform = info.platform
        node.avail = info.avail
        node.last_heard = time.monotonic()
        self.peers.node_joined(session)
        session.welcome(self.config.pulse_interval, self.scheduler_id)
        held = set(info.jobs)
        outcome = self.state.reattach(node, held)
        stale = held.difference(node.jobs)
        if outcome.kept:
            logger.info('node %s came back still running %d jobs that waited to run again; '
                        'they stay on it', node.key, len(outcome.kept))
        if stale:
            logger.info('node %s came back holding %d jobs that run elsewhere now or have '
                        'ended; told it to drop them', node.key, len(stale))
        for jid in stale:
            session.cancel_job(jid)
        for cluster in added.clusters:
            self.offer_or_install(node, cluster)
        self.router.reschedule(outcome, '')
        logger.info('node %s (%s) joined with %s%s', node.key, node.name,
                    node.offer.describe(), ', holding %d jobs' % len(node.jobs)
                    if node.jobs else '')
        return node

    def offer_or_install(self, node: Node, cluster: Cluster) -> None:
        """Install a cluster's computation on a node, or first ask the client's NodeAllocate
        how many of the node's CPUs to use (the answer comes as ``node_allocation``)."""
        if not cluster.allocate:
            self.install(node, cluster)
            return
        client = self.peers.client(cluster.cid)
        if client is not None:
            client.offer_node(node)

    def install(self, node: Node, cluster: Cluster) -> None:
        """Send the computation and then its files (from the scheduler's copy, in chunks)."""
        session = self.peers.node(node.key)
        if session is None:
            return
        cpus, setup_args, refs = cluster.allocations.get(node.key, (0, None, ()))
        files = node_files(cluster, refs)
        session.install(cluster.cid, cluster.name, cluster.code, list(files), cpus, setup_args)
        if files:
            gevent.spawn(self.stream_files, session, cluster.cid, files)

    @staticmethod
    def stream_files(session: NodeSession, cid: int, files: dict[m.FileSpec, str]) -> None:
        for (name, _, _), path in files.items():
            try:
                if not session.send_computation_file(cid, name, path):
                    return
            except OSError as exc:  # the node's setup fails, missing it
                logger.error('file %s of cluster %s could not be read: %s', path, cid, exc)
                return

    def send_file(self, node: Node, cluster: Cluster, ref: str) -> bool:
        """``send_file``: an uploaded file to the node's copy of the computation, before
        anything the client sends later (its chunks leave first)."""
        session = self.peers.node(node.key)
        if session is None or ref not in cluster.uploads:
            return False
        return session.send_upload(cluster, ref, value=False)

    def set_cpus(self, node: Node, cluster: Cluster, cpus: int) -> None:
        """The node runs at most ``cpus`` of the cluster's jobs at once; jobs it holds
        beyond that wait there (``set_node_cpus``)."""
        session = self.peers.node(node.key)
        if session is not None:
            session.set_cpus(cluster.cid, cpus)

    def release_jobs(self, node: Node, cluster: Cluster) -> None:
        """Take back the cluster's jobs the node has not started (``on_jobs_released``)."""
        session = self.peers.node(node.key)
        if session is not None:
            session.release_jobs(cluster.cid)

    def on_jobs_released(self, session: NodeSession, node: Node,
                         released: m.JobsReleased) -> None:
        outcome = self.state.jobs_released(node, released.cid, released.jobs)
        self.router.reschedule(outcome, 'node %s was closed before the job started there'
                               % (node.key,))
        cluster = self.state.clusters.get(released.cid)
        if cluster is not None and node.clusters.get(cluster.cid) == CLOSING:
            self.finish_closing(node, cluster)

    def finish_closing(self, node: Node, cluster: Cluster) -> None:
        """A node the client closed (``close_node``, ``resetup_node``) has ended the
        cluster's jobs it had: it uninstalls the computation (running ``cleanup``), and the
        client hears it is closed; with ``resetup_node`` it is set up again."""
        again = self.state.finish_closing(node, cluster.cid)
        if again is None:
            return
        session = self.peers.node(node.key)
        if session is not None:
            session.uninstall(cluster.cid, cluster.cleanup)
        self.router.notify_node(cluster, node, NODE_CLOSED)
        if again:
            self.offer_or_install(node, cluster)

    def forget_values(self, cluster: Cluster, names: dict[str, str]) -> None:
        """The nodes that were sent these values (ref -> file name) delete them."""
        for session in list(self.peers.nodes.values()):
            session.forget_values(cluster.cid, names)

    def uninstall(self, nodes: list[Node], cluster: Cluster) -> None:
        for node in nodes:
            session = self.peers.node(node.key)
            if session is not None:
                session.uninstall(cluster.cid, cluster.cleanup)

    def cancel_job(self, node: Node, jid: int) -> None:
        session = self.peers.node(node.key)
        if session is not None:
            session.cancel_job(jid)

    # what a node says

    def on_message(self, session: NodeSession, node: Node, message: m.Message) -> None:
        node.last_heard = time.monotonic()
        handler = self.handlers.get(type(message))
        if handler is None:
            raise ProtocolError('unexpected %r from a node' % (message.kind,))
        handler(session, node, message)

    def on_values_lost(self, session: NodeSession, node: Node, lost: m.ValuesLost) -> None:
        cluster = self.state.clusters.get(lost.cid)
        if cluster is not None:
            logger.warning('node %s could not write %d values of cluster %s (its log says '
                           'why); they go again with the next jobs that need them', node.key,
                           len(lost.names), cluster.cid)
            session.values_lost(cluster, lost.names)

    def on_payload_part(self, session: NodeSession, node: Node, part: m.PayloadPart) -> None:
        """A chunk of a large result (or provisional result), to the cluster's directory as
        it comes; one of a job no longer on this node is dropped (its end is a repeat)."""
        job = node.jobs.get(part.id)
        if job is None:
            return
        if part.offset == 0 and cluster_directory(job.cluster, self.config.dest_path_prefix):
            self.durability.put_cluster(job.cluster)
        receive_part(session.payloads, job.cluster, job.uid, part)

    @staticmethod
    def stored_payload(session: NodeSession, job: Job, name: str) -> tuple[Optional[str], str]:
        """The file of the payload ``name`` of ``job`` that streamed before the message
        naming it, or None (logged) and why it could not be kept."""
        path, reason = session.payloads.take(job.jid, name)
        if path is None:
            logger.error('a result of job %s of cluster %s could not be kept: %s', job.uid,
                         job.cluster.cid, reason)
        assert not isinstance(path, bytearray)  # the scheduler's are files
        return path, reason

    def on_job_done(self, session: NodeSession, node: Node, done: m.JobDone) -> None:
        job = node.jobs.get(done.jid)
        if job is None:  # a repeat, or a job that ended otherwise: nothing to keep
            session.acknowledge_result_now(done.jid)
            return
        if self.durability.unsaved_bytes > self.durability.max_unsaved_bytes:
            self.durability.wait_for_room()  # this node's results wait on the node meanwhile
            node.last_heard = time.monotonic()  # it was not read while it waited
            job = node.jobs.get(done.jid)
            if job is None:  # it ended otherwise meanwhile (its cluster closed, say)
                if done.stored:  # its result's file goes
                    discard(session.payloads.take(done.jid, done.stored)[0])
                session.acknowledge_result_now(done.jid)
                return
        if done.stored:
            path, reason = self.stored_payload(session, job, done.stored)
            if path is None:
                done = m.JobDone(done.jid, TERMINATED, None, 'its result could not be saved '
                                 'by the scheduler: %s' % reason, done.stdout, done.stderr,
                                 done.start_time, done.end_time)
            else:
                job.cluster.stored_results[job.uid] = path
                self.durability.sync_file(path)  # before the node is told it is saved
        self.router.deliver(job, node, done)  # first: the result leaves at once
        started = done.start_time
        ended = self.state.job_done(node, done.jid, done.status,
                                    done.end_time - started if started is not None else None)
        self.durability.acknowledge_when_durable(session, session.acknowledge_results,
                                                 done.jid)
        self.router.dispatch(ended.dispatches)
        if node.clusters.get(job.cluster.cid) == CLOSING:
            self.finish_closing(node, job.cluster)

    def on_job_started(self, session: NodeSession, node: Node, started: m.JobStarted) -> None:
        job = self.state.job_started(node, started.jid, started.start_time)
        client = self.peers.client(job.cluster.cid) if job is not None else None
        if job is not None and client is not None:
            client.job_started(job.uid, job.status, node.ip_addr, started.start_time)

    def on_provisional(self, session: NodeSession, node: Node,
                       provisional: m.Provisional) -> None:
        job = node.jobs.get(provisional.jid)
        if job is None:
            return
        path = None
        if provisional.stored:
            path = self.stored_payload(session, job, provisional.stored)[0]
            if path is None:
                return
        client = self.peers.client(job.cluster.cid)
        if client is not None:
            client.provisional_result(job.uid, provisional, node.ip_addr, path)
        elif path is not None:
            remove_file(path)

    def on_job_file(self, session: NodeSession, node: Node, chunk: m.JobFile) -> None:
        """A chunk of a file a job sends its client (``dispy_send_file``), passed on once
        the chunk before it has left: a client slower than the node holds the node's link
        (and so the job sending) rather than the scheduler's memory."""
        job = node.jobs.get(chunk.jid)
        client = self.peers.client(job.cluster.cid) if job is not None else None
        if job is not None and client is not None:
            client.file_part(job.uid, chunk)
            client.link.wait_until_drained()
            node.last_heard = time.monotonic()  # it was not read while it waited

    def on_pulse(self, session: NodeSession, node: Node, pulse: m.Pulse) -> None:
        node.busy = pulse.busy

    def on_avail(self, session: NodeSession, node: Node, avail: m.Avail) -> None:
        """What the node has free goes to the clusters it runs (``DispyNode.AvailInfo``)."""
        node.avail = avail.avail
        for cid, state in node.clusters.items():
            cluster = self.state.clusters.get(cid)
            if state == READY and cluster is not None:
                self.router.notify_node(cluster, node, NODE_AVAIL_INFO)

    def on_compute_ready(self, session: NodeSession, node: Node, ready: m.ComputeReady) -> None:
        cluster = self.state.clusters.get(ready.cid)
        if cluster is None:  # the cluster closed while the node installed it
            session.uninstall(ready.cid, True)
            return
        dispatches = self.state.compute_ready(node, cluster.cid)
        self.router.notify_node(cluster, node, NODE_INITIALIZED)
        self.router.dispatch(dispatches)

    def on_compute_failed(self, session: NodeSession, node: Node,
                          failed: m.ComputeFailed) -> None:
        cluster = self.state.clusters.get(failed.cid)
        outcome = self.state.compute_failed(node, failed.cid, failed.reason)
        if cluster is not None:
            self.router.notify_node(cluster, node, NODE_SETUP_FAILED, failed.reason)
            self.router.warn_client(cluster, 'computation could not be set up on node %s: %s'
                                    % (node.key, failed.reason))
            self.router.reschedule(outcome, 'job was submitted to node %s, where the '
                                   'computation could not be set up' % (node.key,))

    def on_node_resumed(self, session: NodeSession, node: Node,
                        resumed: m.NodeResumed) -> None:
        logger.info('node %s takes jobs again', node.key)
        self.router.dispatch(self.state.node_resumed(node))

    def on_node_leaving(self, session: NodeSession, node: Node,
                        leaving: m.NodeLeaving) -> None:
        outcome = self.state.node_leaving(node, set(leaving.jobs))
        logger.info('node %s is shutting down; %d unstarted jobs handed back', node.key,
                    len(outcome.requeued))
        self.router.reschedule(outcome, '')

    # loss

    def lose(self, node: Node, reason: str) -> None:
        """A node's link is gone (or it fell silent): its jobs go back to the queue or end,
        as their cluster asks."""
        session = self.peers.node(node.key)
        if self.state.nodes.get(node.key) is not node:
            return
        if session is not None:
            session.close()
            self.peers.node_left(session)
        used_by = [self.state.clusters[cid] for cid, state in node.clusters.items()
                   if state == READY and cid in self.state.clusters]
        outcome = self.state.remove_node(node)
        for cluster in used_by:
            self.router.notify_node(cluster, node, NODE_CLOSED)
        logger.warning('node %s lost: %s (%d jobs requeued, %d ended)', node.key, reason,
                       len(outcome.requeued), len(outcome.ended))
        self.router.reschedule(outcome, 'node %s (%s) was lost while running this job: %s'
                               % (node.key, node.name, reason))

    def flush_acknowledgements(self) -> None:
        """A duty: acknowledgements that found no job to travel with leave after
        ``ACK_DELAY``."""
        while True:
            gevent.sleep(ACK_DELAY)
            for session in list(self.peers.nodes.values()):
                session.flush_acknowledgements()


def node_files(cluster: Cluster, refs: Iterable[str]) -> dict[m.FileSpec, str]:
    """The files a node gets with the computation: its own, then the uploads its allocation
    names (one of the same name replaces it), each with where the scheduler keeps it."""
    by_name: dict[str, tuple[m.FileSpec, str]] = {}
    for name, size, mode in cluster.files:
        assert cluster.directory is not None  # a cluster with files keeps them there
        by_name[name] = ((name, size, mode),
                         os.path.join(cluster.directory, safe_relative_path(name)))
    for ref in refs:
        if ref in cluster.uploads:
            name, size, mode = cluster.uploads[ref]
            by_name[name] = ((name, size, mode), upload_path(cluster, ref))
    return dict(by_name.values())
