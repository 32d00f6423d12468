"""The scheduler daemon's I/O: two StreamServers, discovery, the pulse watchdog.

Nodes connect on ``--port`` and clients on ``--scheduler_port``; each connection is served by
one greenlet that authenticates the peer and then reads its messages top to bottom, turning
each into an event on the model (``model.State``) and sending what the event asks for. Two
long-lived duties run beside them: discovery pings and the pulse watchdog.

The scheduler never unpickles anything: computations, arguments and results are opaque bytes
that it routes between clients and nodes.
"""

import logging
import os
import shutil
import signal
import socket
import tempfile
import time

import gevent
import gevent.event
from gevent.server import StreamServer

from .. import discovery
from ..auth import AuthenticationError, handshake
from ..constants import (CANCELLED, DISPATCH_DEPTH, FILE_TIMEOUT, HANDSHAKE_TIMEOUT,
                         NODE_CLOSED, NODE_INITIALIZED, PULSES_MISSED_BEFORE_DEAD, TERMINATED)
from ..files import (MAX_FILES, FileRefused, IncomingFiles, check_manifest_entry, check_size,
                     read_chunks, safe_relative_path)
from ..duties import Duties
from ..link import Link, set_nodelay
from ..protocol import ProtocolError
from ..tls import TLSError, TLSSocket
from .model import FAILED, READY, State

logger = logging.getLogger(__name__)


class Scheduler:
    """The shared scheduler. Tunables are class attributes; the rest comes from the command
    line (``cli.scheduler_parser``)."""

    handshake_timeout = HANDSHAKE_TIMEOUT
    """Seconds a new connection has to authenticate and say who it is."""

    dispatch_depth = DISPATCH_DEPTH
    """Jobs in flight per node CPU (one running, the rest waiting on the node)."""

    missed_pulses = PULSES_MISSED_BEFORE_DEAD
    """A node silent for this many pulse intervals is presumed dead."""

    def __init__(self, options, node_tls=None, cluster_tls=None):
        self.options = options
        self.node_tls = node_tls
        self.cluster_tls = cluster_tls
        self.state = State(self.dispatch_depth)
        self.scheduler_id = os.urandom(8).hex()
        self.stopped = gevent.event.Event()
        self.duties = Duties(self.stopped)
        self.servers = []
        self.started = time.time()

    # lifecycle

    def run(self):
        """Serve until SIGTERM or SIGINT."""
        addresses = self.options.ip_addr or ['']
        for address in addresses:
            for port, handler in ((self.options.port, self.serve_node),
                                  (self.options.scheduler_port, self.serve_client)):
                server = StreamServer((address, port), handler)
                server.init_socket()
                self.servers.append(server)
        for server in self.servers:
            server.start()
        udp = discovery.open_sockets([address for address in addresses if address],
                                     self.options.port)
        for sock in udp.values():
            self.duties.spawn(discovery.receive_loop, sock, self.options.node_secret,
                            lambda kind, body, source, sock=sock:
                            self.on_datagram(sock, kind, body, source))
        self.duties.spawn(self.discovery_loop, udp)
        self.duties.spawn(self.pulse_watchdog)
        for signum in (signal.SIGTERM, signal.SIGINT):
            gevent.signal_handler(signum, self.stopped.set)
        logger.info('dispyscheduler serving nodes on port %d and clients on port %d (%s)',
                    self.options.port, self.options.scheduler_port,
                    ', '.join(address or 'all addresses' for address in addresses))
        self.stopped.wait()
        logger.info('stopping')
        for server in self.servers:
            server.close()
        self.duties.kill()
        for node in list(self.state.nodes.values()):
            node.link.close()
        for cluster in self.state.clusters.values():
            if cluster.owner is not None:
                cluster.owner.close()
        for sock in udp.values():
            sock.close()

    def accept(self, sock, tls_context, secret, peer_role, address):
        """TLS (if configured) and authentication of a new connection; its Link, or None
        after logging why the peer was refused."""
        set_nodelay(sock)
        deadline = time.monotonic() + self.handshake_timeout
        try:
            with gevent.Timeout(self.handshake_timeout):
                if tls_context is not None:
                    sock = TLSSocket(sock, tls_context, server_side=True)
                    sock.do_handshake()
                link = Link(sock, '%s:%s' % address[:2])
                handshake(link, secret, 'scheduler', peer_role, initiator=False,
                          deadline=deadline)
                return link
        except AuthenticationError:
            logger.warning('%s at %s failed authentication', peer_role, address[0])
        except gevent.Timeout:
            logger.warning('%s at %s did not complete the handshake in %d seconds', peer_role,
                           address[0], self.handshake_timeout)
        except (ProtocolError, TLSError, OSError) as exc:
            logger.warning('dropped %s connection from %s: %s', peer_role, address[0], exc)
        return None

    # nodes

    def serve_node(self, sock, address):
        link = self.accept(sock, self.node_tls, self.options.node_secret, 'node', address)
        if link is None:
            return
        try:
            info = link.expect('node_info', time.monotonic() + self.handshake_timeout)
        except (ProtocolError, OSError) as exc:
            logger.warning('dropped node connection from %s: %s', address[0], exc)
            return
        key = '%s:%d' % (info['ip_addr'], info['port'])
        old = self.state.nodes.get(key)
        if old is not None:
            self.node_lost(old, 'the node connected again')
        node, clusters = self.state.add_node(key, info['name'], info['ip_addr'], info['port'],
                                             max(1, info['cpus']))
        node.platform = info['platform']
        node.link = link
        node.last_heard = time.monotonic()
        writer = gevent.spawn(link.run_writer)
        link.send('welcome', {'pulse_interval': self.options.pulse_interval,
                              'scheduler_id': self.scheduler_id})
        for cluster in clusters:
            self.offer_or_install(node, cluster)
        logger.info('node %s (%s) joined with %d CPUs', key, node.name, node.cpus)
        reason = 'its connection closed'
        try:
            link.run_reader(lambda kind, body: self.on_node_message(node, kind, body))
        except ProtocolError as exc:
            reason = 'it sent a bad frame (%s)' % (exc,)
        finally:
            self.node_lost(node, reason)
            writer.kill(block=False)

    def offer_or_install(self, node, cluster):
        """Install a cluster's computation on a node, or first ask the client's NodeAllocate
        how many of the node's CPUs to use (the answer comes as ``node_allocation``)."""
        if not cluster.allocate:
            self.install(node, cluster)
        elif cluster.owner is not None:
            cluster.owner.send('node_offer', {'key': node.key, 'ip_addr': node.ip_addr,
                                              'name': node.name, 'cpus': node.cpus,
                                              'platform': node.platform})

    def install(self, node, cluster):
        """Send the computation and then its files (from the scheduler's copy, in chunks)."""
        cpus, setup_args, node_files = cluster.allocations.get(node.key, (0, None, ()))
        files = [entry for entry in cluster.files
                 if entry[0] not in cluster.node_files or entry[0] in node_files]
        node.link.send('compute', {'cid': cluster.cid, 'name': cluster.name,
                                   'code': cluster.code, 'files': files, 'cpus': cpus,
                                   'setup_args': setup_args})
        if files:
            gevent.spawn(self.stream_files, node, cluster, files)

    def stream_files(self, node, cluster, files):
        link = node.link
        for name, _, _ in files:
            path = os.path.join(cluster.directory, safe_relative_path(name))
            for offset, data, last in read_chunks(path):
                if link.closed:
                    return
                link.send('compute_file', {'cid': cluster.cid, 'name': name, 'offset': offset,
                                           'data': data, 'last': last})
                link.wait_until_drained()

    def on_node_message(self, node, kind, body):
        node.last_heard = time.monotonic()
        if kind == 'job_done':
            job, dispatches = self.state.job_done(node, body['jid'], body['status'])
            node.link.send('result_ack', {'ids': [body['jid']]})
            if job is not None:
                self.deliver(job, node, body)
                self.dispatch(dispatches)
        elif kind == 'job_started':
            job = self.state.job_started(node, body['jid'], body['start_time'])
            if job is not None and job.cluster.owner is not None:
                job.cluster.owner.send('job_status', {
                    'uid': job.uid, 'status': job.status, 'ip_addr': node.ip_addr,
                    'start_time': body['start_time']})
        elif kind == 'provisional':
            job = node.jobs.get(body['jid'])
            if job is not None and job.cluster.owner is not None:
                job.cluster.owner.send('provisional_result', {
                    'uid': job.uid, 'result': body['result'], 'ip_addr': node.ip_addr})
        elif kind == 'job_file':
            job = node.jobs.get(body['jid'])
            if job is not None and job.cluster.owner is not None:
                job.cluster.owner.send('file_part', {
                    'uid': job.uid, 'name': body['name'], 'offset': body['offset'],
                    'data': body['data'], 'last': body['last']})
        elif kind == 'pulse':
            node.busy = body['busy']
        elif kind == 'compute_ready':
            cluster = self.state.clusters.get(body['cid'])
            if cluster is None:  # the cluster closed while the node installed it
                node.link.send('uninstall', {'cid': body['cid'], 'cleanup': True})
                return
            dispatches = self.state.compute_ready(node, cluster.cid)
            self.notify_node(cluster, node, NODE_INITIALIZED)
            self.dispatch(dispatches)
        elif kind == 'compute_failed':
            cluster, stranded, dispatches = self.state.compute_failed(node, body['cid'])
            if cluster is not None:
                self.warn_client(cluster, 'computation could not be set up on node %s: %s'
                                 % (node.key, body['reason']))
                for job in stranded:
                    self.end_job(job, CANCELLED, 'job was submitted to node %s, where the '
                                 'computation could not be set up' % (node.key,))
                self.dispatch(dispatches)
        else:
            raise ProtocolError('unexpected %r from a node' % (kind,))

    def node_lost(self, node, reason):
        """A node's link is gone: its jobs go back to the queue or end, as their cluster asks."""
        node.link.close()
        if self.state.nodes.get(node.key) is not node:
            return
        used_by = [self.state.clusters[cid] for cid, state in node.clusters.items()
                   if state == READY and cid in self.state.clusters]
        requeued, lost, dispatches = self.state.remove_node(node)
        for cluster in used_by:
            self.notify_node(cluster, node, NODE_CLOSED)
        logger.warning('node %s lost: %s (%d jobs requeued, %d cancelled)', node.key, reason,
                       len(requeued), len(lost))
        for job in lost:
            self.end_job(job, CANCELLED, 'job was cancelled' if job.cancelling else
                         'node %s (%s) was lost while running this job: %s'
                         % (node.key, node.name, reason))
        self.dispatch(dispatches)

    def dispatch(self, dispatches):
        for node, job in dispatches:
            node.link.send('job', {'jid': job.jid, 'cid': job.cluster.cid, 'args': job.args,
                                   'timeout': job.timeout, 'files': job.files})

    def pulse_watchdog(self):
        """Presume silent nodes dead and clean up clusters whose clients left long ago."""
        interval = self.options.pulse_interval
        while True:
            gevent.sleep(interval)
            now = time.monotonic()
            silence = self.missed_pulses * interval
            for node in list(self.state.nodes.values()):
                if now - node.last_heard > silence:
                    self.node_lost(node, 'no pulse for %d seconds' % (now - node.last_heard))
            zombie_after = self.options.zombie_interval * 60
            for cluster in list(self.state.clusters.values()):
                if (cluster.owner is None and cluster.orphaned_since is not None
                        and now - cluster.orphaned_since > zombie_after
                        and not cluster.in_flight and not cluster.queued):
                    logger.info('cluster %s: client gone for %d minutes; cleaning up',
                                cluster.cid, (now - cluster.orphaned_since) // 60)
                    self.close_cluster(cluster)

    # clients

    def serve_client(self, sock, address):
        link = self.accept(sock, self.cluster_tls, self.options.cluster_secret, 'client',
                           address)
        if link is None:
            return
        try:
            request = link.expect('cluster_new', time.monotonic() + self.handshake_timeout)
            patterns = resolve_patterns(request['nodes'])
            if not all(isinstance(name, str) for name in request['node_files']):
                raise ProtocolError('cluster_new: node_files must be file names')
            staging = self.receive_cluster_files(link, request['files'])
        except FileRefused as exc:
            logger.warning('refused cluster from %s: %s', address[0], exc)
            link.send_now('error', {'reason': str(exc)})
            return
        except (ProtocolError, OSError) as exc:
            logger.warning('dropped client connection from %s: %s', address[0], exc)
            return
        cluster, nodes = self.state.add_cluster(request['name'], request['code'], patterns,
                                                request['reentrant'], request['cleanup'],
                                                request['allocate'])
        cluster.files = request['files']
        cluster.node_files = set(request['node_files'])
        if staging is not None:
            cluster.directory = os.path.join(self.options.dest_path_prefix, str(cluster.cid))
            shutil.rmtree(cluster.directory, ignore_errors=True)
            os.rename(staging, cluster.directory)
        cluster.owner = link
        writer = gevent.spawn(link.run_writer)
        link.send('cluster_ok', {'cid': cluster.cid, 'max_file_size': self.options.max_file_size})
        for node in nodes:
            self.offer_or_install(node, cluster)
        logger.info('cluster %s (%s) from %s, %d nodes match', cluster.cid, cluster.name,
                    address[0], len(nodes))
        try:
            link.run_reader(lambda kind, body: self.on_client_message(cluster, kind, body))
        except ProtocolError as exc:
            logger.warning('client of cluster %s sent a bad frame: %s', cluster.cid, exc)
        finally:
            writer.kill(block=False)
            if cluster.owner is link:
                cluster.owner = None
                cluster.orphaned_since = time.monotonic()
                if cluster.cid in self.state.clusters:
                    logger.info('client of cluster %s left without closing it', cluster.cid)

    def receive_cluster_files(self, link, manifest):
        """Receive a new cluster's files (announced in ``manifest``) into a staging directory;
        returns its path, or None when there are none."""
        if not manifest:
            return None
        if len(manifest) > MAX_FILES:
            raise FileRefused('%d files; at most %d are accepted' % (len(manifest), MAX_FILES))
        modes = {}
        for entry in manifest:
            check_manifest_entry(entry, self.options.max_file_size)
            modes[entry[0]] = entry[2]
        staging = tempfile.mkdtemp(prefix='incoming-', dir=self.options.dest_path_prefix)
        incoming = IncomingFiles(staging, self.options.max_file_size)
        try:
            while len(incoming.done) < len(modes):
                chunk = link.expect('cluster_file', time.monotonic() + FILE_TIMEOUT)
                if chunk['name'] not in modes:
                    raise FileRefused('file %r was not announced' % (chunk['name'],))
                incoming.chunk(chunk['name'], chunk['offset'], chunk['data'], chunk['last'],
                               modes[chunk['name']])
        except BaseException:
            incoming.abort()
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return staging

    def on_client_message(self, cluster, kind, body):
        if cluster.cid not in self.state.clusters and kind != 'result_ack':
            if kind == 'submit':  # sent while the cluster was closing
                self.end_submitted(cluster, body['uid'], CANCELLED, 'cluster is closed')
            return
        if kind == 'submit':
            if body['uid'] in cluster.jobs or body['uid'] in cluster.results:
                return  # a resend of a job already here
            self.submit(cluster, body)
        elif kind == 'node_allocation':
            node = self.state.nodes.get(body['key'])
            if node is not None and self.state.allocate(node, cluster.cid, body['cpus'],
                                                        body['setup_args'], body['files']):
                self.install(node, cluster)
        elif kind == 'result_ack':
            for uid in body['ids']:
                cluster.results.pop(uid, None)
        elif kind == 'cancel':
            job, node = self.state.cancel(cluster, body['uid'])
            if node is not None:
                node.link.send('cancel_job', {'jid': job.jid})
            elif job is not None:
                self.end_job(job, CANCELLED, 'job was cancelled before it ran')
        elif kind == 'close':
            self.close_cluster(cluster)
            cluster.owner.send('closed', {})
        else:
            raise ProtocolError('unexpected %r from a client' % (kind,))

    def submit(self, cluster, body):
        """A new job: its files and its node (``submit_node``) are checked first; a job that
        cannot run ends at once with the reason."""
        files = body['files']
        try:
            for entry in files:
                if not (isinstance(entry, list) and len(entry) == 3
                        and isinstance(entry[1], bytes) and isinstance(entry[2], int)):
                    raise FileRefused('invalid job file entry')
                safe_relative_path(entry[0])
                check_size(entry[0], len(entry[1]), self.options.max_file_size)
        except FileRefused as exc:
            self.end_submitted(cluster, body['uid'], TERMINATED, str(exc))
            return
        pinned = None
        if body['node'] is not None:
            node = next((node for node in self.state.nodes.values()
                         if node.answers_to(body['node']) and cluster.cid in node.clusters
                         and node.clusters[cluster.cid] != FAILED), None)
            if node is None:
                self.end_submitted(cluster, body['uid'], CANCELLED, 'node %s is not available '
                                   'to this cluster' % (body['node'],))
                return
            pinned = node.key
        job, dispatches = self.state.submit(cluster, body['uid'], body['args'],
                                            body['priority'], body['timeout'], files, pinned)
        self.dispatch(dispatches)

    def end_submitted(self, cluster, uid, status, reason):
        self.send_result(cluster, {'uid': uid, 'status': status, 'result': None,
                                   'exception': reason, 'stdout': '', 'stderr': '',
                                   'start_time': None, 'end_time': time.time(),
                                   'ip_addr': None})

    def notify_node(self, cluster, node, status):
        if cluster.owner is not None:
            cluster.owner.send('node_status', {'ip_addr': node.ip_addr, 'name': node.name,
                                               'cpus': node.cpus, 'status': status})

    def close_cluster(self, cluster):
        if cluster.cid not in self.state.clusters:
            return
        nodes, queued, running, dispatches = self.state.remove_cluster(cluster)
        for node in nodes:
            node.link.send('uninstall', {'cid': cluster.cid, 'cleanup': cluster.cleanup})
        for job in queued:
            self.end_job(job, CANCELLED, 'cluster was closed before the job ran')
        for node, job in running:
            self.end_job(job, CANCELLED, 'cluster was closed while the job ran on %s' % node.key)
        self.dispatch(dispatches)
        if cluster.directory is not None:
            shutil.rmtree(cluster.directory, ignore_errors=True)
        logger.info('cluster %s (%s) closed', cluster.cid, cluster.name)

    def deliver(self, job, node, reply):
        """Pass a node's result to the job's client, and keep it until acknowledged."""
        message = {'uid': job.uid, 'status': reply['status'], 'result': reply['result'],
                   'exception': reply['exception'], 'stdout': reply['stdout'],
                   'stderr': reply['stderr'], 'start_time': reply['start_time'],
                   'end_time': reply['end_time'], 'ip_addr': node.ip_addr}
        self.send_result(job.cluster, message)

    def end_job(self, job, status, reason):
        """Tell the client a job ended without a result from a node."""
        self.send_result(job.cluster, {
            'uid': job.uid, 'status': status, 'result': None, 'exception': reason,
            'stdout': '', 'stderr': '', 'start_time': job.start_time, 'end_time': time.time(),
            'ip_addr': job.node.ip_addr if job.node is not None else None})

    def send_result(self, cluster, message):
        cluster.results[message['uid']] = message
        if cluster.owner is not None:
            cluster.owner.send('job_end', message)

    def warn_client(self, cluster, reason):
        logger.warning('cluster %s: %s', cluster.cid, reason)
        if cluster.owner is not None:
            cluster.owner.send('cluster_warning', {'reason': reason})

    # discovery

    def discovery_loop(self, udp):
        """Ping nodes every ``--ping_interval``: unicast to ``-n`` hosts not yet linked,
        broadcast when no ``-n`` was given (or ``-n '*'``)."""
        while True:
            linked = {node.ip_addr for node in self.state.nodes.values()}
            for address, sock in udp.items():
                if not address and len(udp) > 1:
                    continue  # the wildcard socket only listens for broadcasts
                body = {'addr': self.announced_address(address), 'port': self.options.port}
                targets = []
                for host in self.options.nodes or ['*']:
                    if host == '*':
                        targets.extend(discovery.broadcast_targets(address))
                    else:
                        targets.extend(ip for ip in resolve(host) if ip not in linked)
                for target in targets:
                    discovery.send(sock, self.options.node_secret, 'ping', body,
                                   (target, self.options.node_port))
            gevent.sleep(self.options.ping_interval)

    def on_datagram(self, sock, kind, body, source):
        if kind == 'announce' and discovery.valid_port(body['port']):
            address = sock.getsockname()[0]
            discovery.send(sock, self.options.node_secret, 'ping',
                           {'addr': self.announced_address(address if address != '0.0.0.0'
                                                           else ''),
                            'port': self.options.port},
                           (source[0], body['port']))

    def announced_address(self, address):
        """The address nodes should connect to: the ``--ext_ip_addr`` paired with ``address``
        (NAT), else ``address`` itself; '' lets a node use the ping's source address."""
        ext = self.options.ext_ip_addr or []
        ips = self.options.ip_addr or []
        if address in ips and ips.index(address) < len(ext):
            return ext[ips.index(address)]
        if not address and ext:
            return ext[0]
        return address


def resolve(host):
    try:
        return sorted({info[4][0] for info in socket.getaddrinfo(host, None, socket.AF_INET)})
    except OSError as exc:
        logger.warning('cannot resolve node %s: %s', host, exc)
        return []


def resolve_patterns(nodes):
    """A cluster's ``nodes`` as ``(pattern, port)`` pairs; a host name also matches the
    addresses it resolves to."""
    patterns = []
    for entry in nodes:
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)
                and isinstance(entry[1], int)):
            raise ProtocolError('cluster_new: bad nodes entry %r' % (entry,))
        pattern, port = entry
        patterns.append((pattern, port))
        if not any(ch in pattern for ch in '*?[') and not _is_ip(pattern):
            patterns.extend((ip, port) for ip in resolve(pattern))
    return patterns


def _is_ip(text):
    try:
        socket.inet_aton(text)
        return text.count('.') == 3
    except OSError:
        return False
