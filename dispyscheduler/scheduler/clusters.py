"""The scheduler's side of client links: new and resumed clusters, submissions, cancels, close.

A cluster outlives its client's connection: a client that reconnects (or a new process holding
the cluster's credential) resumes it and is sent every result it has not acknowledged.
Submissions are acknowledged once saved.
"""

from __future__ import annotations

import hmac
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from typing import TYPE_CHECKING, Any, Callable, Optional


from ..resources import Need, ResourceError
from ..wire import messages as m
from ..config import SchedulerConfig
from ..constants import (CANCELLED, FILE_TIMEOUT, MAX_KEPT_SHORTFALLS, MAX_NODE_NAMES,
                         MAX_UPLOADS, NODE_INITIALIZED, TERMINATED)
from ..runtime.discovery import resolve
from ..runtime.duties import remove_later
from ..wire.files import (MAX_FILES, FileRefused, IncomingFiles, check_manifest, check_size,
                          refusal_reason, safe_relative_path)
from ..runtime.hublink import HubLink
from ..wire.protocol import ProtocolError
from .admission import Admission
from .durability import Durability
from .policy import node_matches
from .model import FAILED, OFFERED, READY, Cluster, Node, State, upload_directory
from .queues import job_size
from .nodes import NodeService
from .payloads import cluster_directory, forget_result
from .router import Router
from .sessions import ClientSession, Peers

if TYPE_CHECKING:
    from OpenSSL import SSL

    from .httpd import Metrics

logger = logging.getLogger(__name__)

UPLOAD_REF = re.compile('[0-9a-f]{1,64}')
"""What a client may name an upload: it names a directory at the scheduler."""


class ClusterService:
    def __init__(self, config: SchedulerConfig, state: State, peers: Peers, router: Router,
                 durability: Durability, admission: Admission, nodes: NodeService,
                 metrics: Metrics, tls_context: Optional[SSL.Context] = None) -> None:
        self.config = config
        self.state = state
        self.peers = peers
        self.router = router
        self.durability = durability
        self.admission = admission
        self.nodes = nodes
        self.metrics = metrics
        self.tls_context = tls_context
        self.acknowledgers: dict[int, Callable[[list[int]], None]] = {}  # cid -> its sender
        self.handlers: dict[type, Callable[[Cluster, ClientSession, Any], None]] = {
            m.Submit: self.on_submit, m.ResultAck: self.on_result_ack,
            m.NodeAllocation: self.on_node_allocation, m.Cancel: self.on_cancel,
            m.Close: self.on_close, m.Upload: self.on_upload,
            m.NodeControl: self.on_node_control, m.ForgetValues: self.on_forget_values,
        }
        self.uploading: dict[tuple[int, str], IncomingFiles] = {}  # (cid, ref) -> arriving
        # (cid, need) -> (``State.node_changes`` when worked out, ``unmet``'s answer)
        self.shortfalls: dict[tuple[int, Need], tuple[int, list[str]]] = {}
        # (cid, ref) -> why an upload could not be kept (a full disk, say): said once, and
        # a value's jobs end with it
        self.refused: dict[tuple[int, str], str] = {}
        # what a client's ``node_control`` asks of one of its nodes
        self.node_actions: dict[str, Callable[[Cluster, Node, m.NodeControl],
                                              tuple[int, str]]] = {
            'deallocate': self.deallocate_node, 'set_cpus': self.set_node_cpus,
            'send_file': self.send_file, 'close': self.close_node, 'resetup': self.close_node,
        }
        # pings hosts for ``discover_nodes``, and tells a new cluster of nodes it would use
        # that serve another scheduler (the server sets them: ``Pinger``'s)
        self.discover: Callable[[list[str], int], None] = lambda hosts, port: None
        self.warn_of_busy_nodes: Callable[[Cluster], None] = lambda cluster: None

    def serve(self, sock: socket.socket, address: tuple[str, int]) -> None:
        """A client connected (a StreamServer handler): admit it, create or resume its
        cluster, then serve it until its link ends; the cluster stays."""
        link = self.admission.accept(sock, self.tls_context, self.config.cluster_secret,
                                     'client', address)
        if link is None:
            return
        try:
            request = link.recv_now(time.monotonic() + self.admission.handshake_timeout)
            if type(request) is m.ClusterNew:
                cluster = self.new_cluster(link, request)
            elif type(request) is m.ClusterResume:
                cluster = self.resumed_cluster(request)
            else:
                raise ProtocolError('expected cluster_new or cluster_resume, got %r'
                                    % (request.kind,))
        except (FileRefused, ResourceError) as exc:
            logger.warning('refused cluster from %s: %s', address[0], exc)
            tell(link, str(exc))
            return
        except (ProtocolError, OSError) as exc:
            logger.warning('dropped client connection from %s: %s', address[0], exc)
            if not link.closed:
                tell(link, str(exc))
            return
        session = ClientSession(link, cluster.cid)
        self.attach(session, cluster, resumed=type(request) is m.ClusterResume,
                    source=address[0])
        session.run(lambda message: self.on_message(cluster, session, message))
        if self.peers.client_detached(session):
            cluster.results.detach()
            cluster.orphaned_since = time.monotonic()
            if cluster.cid in self.state.clusters:
                logger.info('client of cluster %s left without closing it', cluster.cid)

    def attach(self, session: ClientSession, cluster: Cluster, resumed: bool,
               source: str) -> None:
        """A client's session now serves its cluster: told it is accepted, and, for a
        resumed cluster, sent what it missed."""
        old = self.peers.client_attached(session)
        cluster.orphaned_since = None
        if old is not None:
            old.close()  # a client back on a new connection before its old one was noticed
        session.cluster_ok(cluster.credential, self.config.max_file_size,
                           self.config.max_cluster_jobs, self.config.max_cluster_bytes)
        cluster.results.attach()
        if not resumed:
            logger.info('cluster %s (%s) from %s', cluster.cid, cluster.name, source)
            self.warn_of_busy_nodes(cluster)
            for node in list(self.state.nodes.values()):
                if cluster.cid in node.clusters:
                    self.nodes.offer_or_install(node, cluster)
            return
        logger.info('cluster %s (%s) resumed from %s; %d results to deliver', cluster.cid,
                    cluster.name, source, len(cluster.results))
        if cluster.dormant:
            for node in self.state.revive(cluster):
                self.nodes.offer_or_install(node, cluster)
        self.catch_up(session, cluster)

    def new_cluster(self, link: HubLink, request: m.ClusterNew) -> Cluster:
        """Receive a new cluster (computation, files) and save it before answering. One
        whose jobs need what none of the nodes it may use has is refused (``ResourceError``),
        unless no such node has joined yet."""
        patterns = resolve_patterns(request.nodes)
        need = Need.from_wire(request.resources)
        if not need.light:
            offers = [node.offer for node in self.state.seen.values()
                      if node_matches(patterns, node.ip_addr, node.name, node.port)]
            missing = need.shortfall(offers) if offers else []
            if missing:
                raise ResourceError('no node this cluster may use could ever run its jobs: '
                                    'each needs %s' % '; '.join(missing))
        staging = self.receive_cluster_files(link, request.files)
        cluster = self.state.add_cluster(request.name, request.code, patterns,
                                         request.reentrant, request.cleanup,
                                         request.allocate, need).cluster
        cluster.files = request.files
        cluster.credential = os.urandom(16)
        if staging is not None:
            cluster.directory = os.path.join(self.config.dest_path_prefix, str(cluster.cid))
            shutil.rmtree(cluster.directory, ignore_errors=True)
            os.rename(staging, cluster.directory)
        self.durability.put_cluster(cluster)
        self.durability.wait_until_durable()
        return cluster

    def resumed_cluster(self, request: m.ClusterResume) -> Cluster:
        cluster = self.state.clusters.get(request.cid)
        if cluster is None or not hmac.compare_digest(cluster.credential, request.credential):
            raise ProtocolError('no cluster %s with that credential here (it was closed, or '
                                'cleaned up after --zombie_interval)' % (request.cid,))
        return cluster

    def catch_up(self, session: ClientSession, cluster: Cluster) -> None:
        """A resumed cluster's client gets what it missed: the jobs still to end, their
        results so far, the nodes, node offers."""
        session.jobs_pending([(job.uid, job.tag) for job in cluster.jobs.values()])
        self.router.send_waiting(cluster)
        for node in list(self.state.nodes.values()):
            state = node.clusters.get(cluster.cid)
            if state == READY:
                session.node_status(node, NODE_INITIALIZED)
            elif state == OFFERED:
                self.nodes.offer_or_install(node, cluster)

    def receive_cluster_files(self, link: HubLink, manifest: list[m.FileSpec]) -> str | None:
        """Receive a new cluster's files (announced in ``manifest``) into a staging directory;
        returns its path, or None when there are none."""
        if not manifest:
            return None
        if len(manifest) > MAX_FILES:
            raise FileRefused('%d files; at most %d are accepted' % (len(manifest), MAX_FILES))
        check_manifest(self.config.dest_path_prefix, manifest, self.config.max_file_size)
        modes = {name: mode for name, _, mode in manifest}
        staging = tempfile.mkdtemp(prefix='incoming-', dir=self.config.dest_path_prefix)
        incoming = IncomingFiles(staging, self.config.max_file_size, manifest)
        try:
            while len(incoming.done) < len(modes):
                chunk = link.expect(m.ClusterFile, time.monotonic() + FILE_TIMEOUT)
                if chunk.name not in modes:
                    raise FileRefused('file %r was not announced' % (chunk.name,))
                incoming.chunk(chunk.name, chunk.offset, chunk.data, chunk.last,
                               modes[chunk.name])
        except BaseException:
            incoming.abort()
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return staging

    # what a client says

    def on_message(self, cluster: Cluster, session: ClientSession,
                   message: m.Message) -> None:
        handler = self.handlers.get(type(message))
        if handler is None:
            raise ProtocolError('unexpected %r from a client' % (message.kind,))
        if cluster.cid not in self.state.clusters and type(message) is not m.ResultAck:
            if type(message) is m.Submit:  # sent while the cluster was closing
                self.refuse(cluster, message.uid, CANCELLED, 'cluster is closed')
            return
        handler(cluster, session, message)

    def on_submit(self, cluster: Cluster, session: ClientSession, submit: m.Submit) -> None:
        """A new job: its files and its node (``submit_node``) are checked first; a job that
        cannot run ends at once with the reason."""
        if submit.uid in cluster.jobs or submit.uid in cluster.results:
            self.acknowledge_submit(cluster, submit.uid)  # a resend: already here
            return
        try:
            for name, data, _ in submit.files:
                safe_relative_path(name)
                check_size(name, len(data), self.config.max_file_size)
        except FileRefused as exc:
            self.refuse(cluster, submit.uid, TERMINATED, str(exc))
            return
        missing = [ref for ref in submit.refs if ref not in cluster.uploads]
        if missing:  # its upload was refused
            self.refuse(cluster, submit.uid, TERMINATED, 'an argument of the job (%s) could not '
                        'be kept by the scheduler: %s' % (missing[0], self.refused.get(
                            (cluster.cid, missing[0]), 'it did not arrive')))
            return
        try:
            need = Need.from_wire(submit.resources) if submit.resources else cluster.need
        except ResourceError as exc:
            self.refuse(cluster, submit.uid, TERMINATED, str(exc))
            return
        missing = self.unmet(cluster, need)
        if missing:
            self.refuse(cluster, submit.uid, TERMINATED, 'no node this cluster may use could '
                        'ever run the job: it needs %s' % '; '.join(missing))
            return
        size = job_size(submit.args, submit.files)
        refusal = self.over_limits(cluster, size)
        if refusal is not None:
            self.refuse(cluster, submit.uid, CANCELLED, refusal)
            return
        timeout = submit.timeout
        if timeout is not None and not 0 < timeout < float('inf'):
            self.refuse(cluster, submit.uid, TERMINATED, 'invalid time limit %r' % (timeout,))
            return
        pinned = None
        if submit.node is not None:
            node = next((node for node in self.state.nodes.values()
                         if node.answers_to(submit.node) and cluster.cid in node.clusters
                         and node.clusters[cluster.cid] != FAILED), None)
            if node is None:
                self.refuse(cluster, submit.uid, CANCELLED, 'node %s is not available to '
                            'this cluster' % (submit.node,))
                return
            if not node.offer.covers(need):
                self.refuse(cluster, submit.uid, TERMINATED, 'node %s could never run the '
                            'job: it needs %s; the node has %s' % (
                                submit.node, need.describe(), node.offer.describe()))
                return
            pinned = node.key
        placed = self.state.submit(cluster, submit.uid, submit.args, submit.priority,
                                   submit.timeout, submit.files, pinned, submit.tag, size,
                                   tuple(submit.refs), need)
        job = placed.job
        assert job is not None  # a submission makes one
        job.submitted_at = time.monotonic()
        self.router.dispatch(placed.dispatches)  # first: a job sent to a node leaves at once
        self.metrics.job_submitted()
        self.durability.put_job(job)
        self.acknowledge_submit(cluster, job.uid)

    def unmet(self, cluster: Cluster, need: Need) -> list[str]:
        """What of ``need`` no node the cluster may use has (``Need.shortfall``), counting
        nodes that have left (one may come back); [] if one has it all, or if no such node
        has joined yet (the job waits for one). Worked out once for each need until the
        cluster's nodes change."""
        if need.light:
            return []
        key = (cluster.cid, need)
        known = self.shortfalls.get(key)
        if known is None or known[0] != self.state.node_changes:
            if len(self.shortfalls) > MAX_KEPT_SHORTFALLS:
                self.shortfalls.clear()
            offers = self.state.usable_offers(cluster, ever=True)
            known = self.shortfalls[key] = (self.state.node_changes,
                                            need.shortfall(offers) if offers else [])
        return known[1]

    def over_limits(self, cluster: Cluster, size: int) -> Optional[str]:
        """Why a job of ``size`` bytes does not fit in the cluster's limits now, if it does
        not. (The client's ``submit()`` waits for room, so only a client that ignores the
        limits it was given meets this.)"""
        config = self.config
        if len(cluster.jobs) >= config.max_cluster_jobs:
            return ('the cluster has %d jobs at the scheduler, its limit (--max_cluster_jobs)'
                    % len(cluster.jobs))
        if config.max_cluster_bytes and cluster.job_bytes + size > config.max_cluster_bytes:
            return ('the job has %d bytes of arguments and files and the cluster %d, more than '
                    'its limit of %d (--max_cluster_bytes)'
                    % (size, cluster.job_bytes, config.max_cluster_bytes))
        return None

    def on_result_ack(self, cluster: Cluster, session: ClientSession, ack: m.ResultAck) -> None:
        for uid in ack.ids:
            if cluster.results.acknowledged(uid):
                self.durability.result_acknowledged(cluster.cid, uid)
                if cluster.stored_results:
                    forget_result(cluster, uid)
        if cluster.results.waiting:
            self.router.send_waiting(cluster)  # what waited for room in the window

    def on_node_allocation(self, cluster: Cluster, session: ClientSession,
                           allocation: m.NodeAllocation) -> None:
        node = self.state.nodes.get(allocation.key)
        cpus = allocation.cpus
        missing = [ref for ref in allocation.files if ref not in cluster.uploads]
        if node is not None and missing:  # its upload was refused: the client was told why
            self.router.warn_client(cluster, 'node %s not used: a file for it did not arrive'
                                    % (node.key,))
            cpus = 0
        if node is not None and self.state.allocate(node, cluster.cid, cpus,
                                                    allocation.setup_args, allocation.files):
            self.nodes.install(node, cluster)

    def on_upload(self, cluster: Cluster, session: ClientSession, chunk: m.Upload) -> None:
        """A chunk of a file for some nodes only: kept under its ref until the cluster
        closes. A refused file is named to the client, and the nodes that want it are not
        used."""
        key = (cluster.cid, chunk.ref)
        incoming = self.uploading.pop(key, None)
        try:
            if chunk.offset == 0:
                if incoming is not None:  # sent again after a reconnect
                    incoming.abort()
                incoming = self.start_upload(cluster, chunk)
            elif incoming is None:
                raise FileRefused('chunk at offset %d before its start' % (chunk.offset,))
            path = incoming.chunk(chunk.name, chunk.offset, chunk.data, chunk.last,
                                  chunk.mode)
            if path is None:
                self.uploading[key] = incoming
                return
        except (FileRefused, OSError) as exc:
            if incoming is not None:
                incoming.abort()
            reason = refusal_reason(exc)
            if chunk.offset == 0 or key not in self.refused:  # the first reason, not the
                self.refused[key] = reason  # next chunks' "before its start"
                if not chunk.value:  # a value's jobs end with the reason
                    self.router.warn_client(cluster, 'file %r was refused: %s'
                                            % (chunk.name, reason))
            return
        self.refused.pop(key, None)
        cluster.uploads[chunk.ref] = (chunk.name, chunk.size, chunk.mode)
        self.durability.sync_file(path)  # before the jobs that need it are acknowledged
        self.durability.put_cluster(cluster)

    def on_forget_values(self, cluster: Cluster, session: ClientSession,
                         forget: m.ForgetValues) -> None:
        """Values no job of the client's needs any more: gone from here and the nodes."""
        forgotten = {}
        for ref in forget.refs:
            if ref not in cluster.uploads or not UPLOAD_REF.fullmatch(ref):
                continue
            forgotten[ref] = cluster.uploads.pop(ref)[0]
            remove_later(upload_directory(cluster.directory or '', ref))
        if forgotten:
            self.durability.put_cluster(cluster)
            self.nodes.forget_values(cluster, forgotten)

    def start_upload(self, cluster: Cluster, chunk: m.Upload) -> IncomingFiles:
        if not UPLOAD_REF.fullmatch(chunk.ref):
            raise FileRefused('invalid upload reference %r' % (chunk.ref,))
        if chunk.ref not in cluster.uploads and len(cluster.uploads) >= MAX_UPLOADS \
                and not chunk.value:  # values go when their jobs are done
            raise FileRefused('the cluster has uploaded %d files, its limit' % MAX_UPLOADS)
        if cluster_directory(cluster, self.config.dest_path_prefix):
            self.durability.put_cluster(cluster)
        assert cluster.directory is not None
        directory = upload_directory(cluster.directory, chunk.ref)
        entry = (chunk.name, chunk.size, chunk.mode)
        limit = 0 if chunk.value else self.config.max_file_size  # a value is no file
        check_manifest(directory, [entry], limit)
        return IncomingFiles(directory, limit, [entry])

    def on_node_control(self, cluster: Cluster, session: ClientSession,
                        control: m.NodeControl) -> None:
        """A client's own use of a node; answered with what dispy's method returns."""
        value, reason = self.node_control(cluster, control)
        session.node_control_done(control.rid, value, reason)

    def node_control(self, cluster: Cluster, control: m.NodeControl) -> tuple[int, str]:
        """``(value, reason)``: what dispy's method returns, and why it was refused."""
        if control.action in ('allocate', 'allocate_offered'):
            return self.allocate_nodes(cluster, control)
        if control.action == 'discover':
            self.discover([control.node], control.port or self.config.node_port)
            return 0, ''
        act = self.node_actions.get(control.action)
        if act is None:
            return -1, 'unknown node action %r' % (control.action,)
        node = next((node for node in self.state.nodes.values()
                     if node.answers_to(control.node) and cluster.cid in node.clusters), None)
        if node is None:
            return -1, 'node %s is not one of this cluster\'s' % (control.node,)
        return act(cluster, node, control)

    def allocate_nodes(self, cluster: Cluster, control: m.NodeControl) -> tuple[int, str]:
        try:
            patterns = resolve_patterns([(control.node, control.port)])
        except ProtocolError as exc:
            return -1, str(exc)
        nodes, dispatches = self.state.allocate_nodes(cluster, patterns,
                                                      control.action == 'allocate_offered')
        self.durability.put_cluster(cluster)
        for node in nodes:
            self.nodes.offer_or_install(node, cluster)
        self.router.dispatch(dispatches)
        return 0, ''

    def deallocate_node(self, cluster: Cluster, node: Node,
                        control: m.NodeControl) -> tuple[int, str]:
        if not self.state.deallocate_node(cluster, node):
            return -1, 'node %s does not run this cluster' % (node.key,)
        self.nodes.release_jobs(node, cluster)
        return 0, ''

    def set_node_cpus(self, cluster: Cluster, node: Node,
                      control: m.NodeControl) -> tuple[int, str]:
        cpus = self.state.set_node_cpus(cluster, node, control.cpus)
        if cpus < 0:
            return -1, 'node %s does not run this cluster' % (node.key,)
        self.nodes.set_cpus(node, cluster, cpus)
        self.router.dispatch(self.state.fill_node(node))
        return cpus, ''

    def send_file(self, cluster: Cluster, node: Node, control: m.NodeControl) -> tuple[int, str]:
        if node.clusters[cluster.cid] != READY:
            return -1, 'node %s has not set the computation up' % (node.key,)
        if not self.nodes.send_file(node, cluster, control.ref):
            return -1, 'the file could not be sent to %s' % (node.key,)
        return 0, ''

    def close_node(self, cluster: Cluster, node: Node, control: m.NodeControl) -> tuple[int, str]:
        """``close_node`` and ``resetup_node``."""
        ended = self.state.close_node(cluster, node, control.action == 'resetup')
        if ended is None:
            return -1, 'node %s is closing, or has not set the computation up' % (node.key,)
        for job in ended:
            self.router.end_job(job, CANCELLED, 'node %s was closed' % (node.key,))
        self.nodes.release_jobs(node, cluster)
        if control.terminate:
            for job in [job for job in node.jobs.values() if job.cluster is cluster]:
                self.cancel(cluster, job.uid)
        self.nodes.finish_closing(node, cluster)
        return 0, ''

    def on_cancel(self, cluster: Cluster, session: ClientSession, cancel: m.Cancel) -> None:
        self.cancel(cluster, cancel.uid)

    def cancel(self, cluster: Cluster, uid: int) -> None:
        """A client's ``cancel``, or ``close_node(..., terminate_pending=True)``'s."""
        cancellation = self.state.cancel(cluster, uid)
        if cancellation.job is not None and cancellation.node is not None:
            self.nodes.cancel_job(cancellation.node, cancellation.job.jid)
        elif cancellation.job is not None:
            self.router.end_job(cancellation.job, CANCELLED, 'job was cancelled before it ran')

    def on_close(self, cluster: Cluster, session: ClientSession, close: m.Close) -> None:
        self.close_cluster(cluster)
        session.closed()

    # submissions

    def acknowledge_submit(self, cluster: Cluster, uid: int) -> None:
        """Tell the client its job is saved (once it is): it need not send it again. One
        message per batch carries every job of the cluster saved in it."""
        send = self.acknowledgers.get(cluster.cid)
        if send is None:
            send = self.acknowledgers[cluster.cid] = self.submissions_saved(cluster)
        self.durability.acknowledge_when_durable(('submitted', cluster.cid), send, uid)

    def submissions_saved(self, cluster: Cluster) -> Callable[[list[int]], None]:
        """What tells ``cluster``'s client that its jobs ``uids`` are saved (one for each
        cluster, kept in ``acknowledgers``: it is asked for on every submission)."""
        def send(uids: list[int]) -> None:
            # a job that has ended meanwhile needs none: its result says it was received
            waiting = [uid for uid in uids if uid in cluster.jobs]
            session = self.peers.client(cluster.cid)
            if waiting and session is not None:
                session.submitted(waiting)
        return send

    def refuse(self, cluster: Cluster, uid: int, status: int, reason: str) -> None:
        """A submission refused at once: it ends without becoming a job."""
        self.router.refuse_submission(cluster, uid, status, reason)
        self.acknowledge_submit(cluster, uid)

    # clusters ending

    def close_cluster(self, cluster: Cluster) -> None:
        """Forget a cluster: its nodes uninstall it, its jobs end Cancelled, its files go."""
        if cluster.cid not in self.state.clusters:
            return
        removed = self.state.remove_cluster(cluster)
        self.nodes.uninstall(removed.nodes, cluster)
        for job in removed.cancelled:
            self.router.end_job(job, CANCELLED, 'cluster was closed before the job ran')
        for node, job in removed.interrupted:
            self.router.end_job(job, CANCELLED, 'cluster was closed while the job ran on %s'
                                % node.key)
        self.router.dispatch(removed.dispatches)
        self.durability.delete_cluster(cluster.cid)
        self.acknowledgers.pop(cluster.cid, None)
        for key in [key for key in self.uploading if key[0] == cluster.cid]:
            self.uploading.pop(key).abort()
        for key in [key for key in self.refused if key[0] == cluster.cid]:
            del self.refused[key]
        if cluster.directory is not None:
            shutil.rmtree(cluster.directory, ignore_errors=True)
        logger.info('cluster %s (%s) closed', cluster.cid, cluster.name)

    def retire(self, cluster: Cluster) -> None:
        """A cluster whose client is long gone frees its nodes, and keeps its results."""
        self.nodes.uninstall(self.state.retire(cluster), cluster)

    def connected(self, cluster: Cluster) -> bool:
        """Whether the cluster's client is connected now."""
        return self.peers.client(cluster.cid) is not None


def tell(link: HubLink, reason: str) -> None:
    """Say why a client is refused, if it is still there to hear it (it may have reset)."""
    try:
        link.send_now(m.Error(reason=reason))
    except OSError as exc:
        logger.debug('could not tell %s why: %s', link.peer, exc)


def resolve_patterns(nodes: list[m.NodePattern]) -> list[tuple[str, int]]:
    """A cluster's ``nodes`` as ``(pattern, port)`` pairs; a host name also matches the
    addresses it resolves to. At most ``MAX_NODE_NAMES`` names are looked up (each for at
    most ``NAME_LOOKUP_TIMEOUT`` seconds): more is refused before any lookup."""
    names = {pattern for pattern, _ in nodes
             if not any(ch in pattern for ch in '*?[') and not _is_ip(pattern)}
    if len(names) > MAX_NODE_NAMES:
        raise ProtocolError('nodes names %d hosts; at most %d host names are looked up (give '
                            'addresses or patterns such as 10.0.0.*)'
                            % (len(names), MAX_NODE_NAMES))
    addresses = {name: resolve(name) for name in names}
    patterns = []
    for pattern, port in nodes:
        patterns.append((pattern, port))
        patterns.extend((ip, port) for ip in addresses.get(pattern, ()))
    return patterns


def _is_ip(text: str) -> bool:
    try:
        socket.inet_aton(text)
        return text.count('.') == 3
    except OSError:
        return False
