"""The scheduler daemon: listeners, the state store, and its long-lived duties.

Nodes connect on ``--port`` and clients on ``--scheduler_port``; each connection is served by
one greenlet (``nodes.NodeSide``, ``clients.ClientSide``) that authenticates the peer and then
reads its messages top to bottom, turning each into an event on the model (``model.State``).
Beside them run the duties: the store's flusher (group commits), the pulse watchdog, and
discovery pings.

At start the scheduler reloads what its store kept: clusters, unfinished jobs and undelivered
results. Clients and nodes reconnect on their own; nodes say which jobs they still hold, and
jobs of nodes that do not come back within the grace period are handled as lost.

The scheduler never unpickles anything: computations, arguments and results are opaque bytes
that it routes between clients and nodes.
"""

import collections
import logging
import signal
import socket
import time

import gevent
import gevent.event
from gevent.server import StreamServer

from .. import discovery
from ..auth import AuthenticationError, handshake
from ..daemonize import write_pid_file
from ..constants import (COMMIT_INTERVAL, MAX_DISPATCH_DEPTH, HANDSHAKE_TIMEOUT, NO_NODE_PINGS,
                         PULSES_MISSED_BEFORE_DEAD, RESULT_RETENTION)
from ..duties import Duties, log_greenlet_errors
from ..httpd import Metrics, StatusServer
from ..hublink import HubLink
from ..link import set_nodelay
from ..protocol import ProtocolError, encode
from ..tls import TLS_HANDSHAKE_RECORD, TLSError, TLSSocket
from .clients import ClientSide
from .model import State
from .nodes import NodeSide

logger = logging.getLogger(__name__)


class Listeners:
    """The scheduler's sockets, bound before it detaches (``--daemon``), so that a port in use
    is reported on the terminal, with exit status 2."""

    def __init__(self, options):
        self.addresses = options.ip_addr or ['']
        self.tcp = []  # (socket, 'node' or 'client')
        for address in self.addresses:
            for port, role in ((options.port, 'node'), (options.scheduler_port, 'client')):
                self.tcp.append((tcp_listener(address, port), role))
        self.udp = discovery.open_sockets([address for address in self.addresses if address],
                                          options.port)
        self.httpd = tcp_listener(*options.httpd) if options.httpd else None


def tcp_listener(address, port, backlog=1024):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart on the same port
    try:
        sock.bind((address, port))
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise OSError('%s:%d: %s' % (address or '*', port, exc.strerror)) from None
    return sock


class Scheduler(NodeSide, ClientSide):
    """The shared scheduler. Tunables are class attributes; the rest comes from the command
    line (``cli.scheduler_parser``)."""

    handshake_timeout = HANDSHAKE_TIMEOUT
    """Seconds a new connection has to authenticate and say who it is."""

    max_depth = MAX_DISPATCH_DEPTH
    """Most jobs in flight per node CPU (see ``policy.dispatch_depth``)."""

    missed_pulses = PULSES_MISSED_BEFORE_DEAD
    """A node silent for this many pulse intervals is presumed dead; after a restart, nodes
    have as long to come back before the jobs they held are handled as lost."""

    commit_interval = COMMIT_INTERVAL
    """Seconds the flusher lets a batch of state changes grow before committing it."""

    def __init__(self, options, store, listeners, node_tls=None, cluster_tls=None):
        self.options = options
        self.store = store
        self.listeners = listeners
        self.node_tls = node_tls
        self.cluster_tls = cluster_tls
        self.stopped = gevent.event.Event()
        self.duties = Duties(self.stopped)
        self.store_dirty = gevent.event.Event()
        store.notify = self.store_dirty.set
        self.servers = []
        self.started = time.time()
        self.credentials = {}  # cid -> the credential that lets a client resume the cluster
        self.metrics = Metrics(self)
        self.handshaking = collections.OrderedDict()  # greenlet -> peer address, oldest first
        self.handshaking_from = collections.Counter()  # peer address -> how many of those
        self.restore()

    def restore(self):
        """Reload the store; a scheduler restarted with the same ``--state_dir`` goes on."""
        self.scheduler_id = self.store.scheduler_id
        self.state = State(self.max_depth, self.options.max_node_losses, self.store.epoch,
                           self.store.meta('next_cid') or 1)
        clusters, jobs, results = self.store.load()
        self.state.restore(clusters, jobs)
        now = time.monotonic()
        for row in clusters:
            self.credentials[row['cid']] = row['credential']
            self.state.clusters[row['cid']].orphaned_since = now
        for cid, message in results:
            self.state.clusters[cid].results[message['uid']] = message
        for cluster in self.state.clusters.values():
            self.prepare_acknowledgements(cluster)
        self.awaiting_until = now + self.missed_pulses * self.options.pulse_interval
        if clusters:
            logger.info('restored %d clusters, %d unfinished jobs (%d on nodes) and %d '
                        'undelivered results', len(clusters), len(jobs),
                        sum(len(waiting) for waiting in self.state.awaiting.values()),
                        len(results))

    def run(self):
        """Serve until SIGTERM or SIGINT; then save what is pending and stop."""
        log_greenlet_errors()
        for sock, role in self.listeners.tcp:
            server = StreamServer(sock, self.serve_node if role == 'node' else self.serve_client)
            server.start()
            self.servers.append(server)
        if self.listeners.httpd is not None:
            StatusServer(self, self.listeners.httpd).start()
        udp = self.listeners.udp
        for sock in udp.values():
            self.duties.spawn(discovery.receive_loop, sock, self.options.node_secret,
                              lambda kind, body, source, sock=sock:
                              self.on_datagram(sock, kind, body, source))
        flusher = self.duties.spawn(self.flush_store)
        self.duties.spawn(self.discovery_loop, udp)
        self.duties.spawn(self.pulse_watchdog)
        self.duties.spawn(self.flush_acknowledgements)
        for signum in (signal.SIGTERM, signal.SIGINT):
            gevent.signal_handler(signum, self.stopped.set)
        if self.options.pid_file:  # ``--daemon``
            write_pid_file(self.options.pid_file)  # now it answers SIGTERM: ready
        logger.info('dispyscheduler serving nodes on port %d and clients on port %d (%s)',
                    self.options.port, self.options.scheduler_port,
                    ', '.join(address or 'all addresses' for address in self.listeners.addresses))
        self.stopped.wait()
        logger.info('stopping')
        for server in self.servers:
            server.close()
        failed = flusher.dead and flusher.exception is not None
        self.duties.kill()
        if not failed:
            self.store.commit_now()
        for node in list(self.state.nodes.values()):
            node.link.close()
        for cluster in self.state.clusters.values():
            if cluster.owner is not None:
                cluster.owner.close()
        for sock in udp.values():
            sock.close()
        self.store.close()

    def accept(self, sock, tls_context, secret, peer_role, address):
        """TLS (if configured) and authentication of a new connection; its Link, or None
        after logging why the peer was refused.

        Connections that have not authenticated yet are capped per address and overall, the
        oldest dropped first, so idle or slow strangers cannot crowd out the users."""
        source = address[0]
        if self.handshaking_from[source] >= self.options.max_unauthenticated_per_source:
            logger.warning('refused a %s connection from %s: %d connections from there are '
                           'still in their handshake', peer_role, source,
                           self.handshaking_from[source])
            return None
        while len(self.handshaking) >= self.options.max_unauthenticated:
            oldest, oldest_source = self.handshaking.popitem(last=False)
            self.handshaking_from[oldest_source] -= 1
            logger.warning('dropped the oldest connection still in its handshake (from %s): '
                           '%d are open', oldest_source, self.options.max_unauthenticated)
            oldest.kill(block=False)
        me = gevent.getcurrent()
        self.handshaking[me] = source
        self.handshaking_from[source] += 1
        try:
            return self.authenticate(sock, tls_context, secret, peer_role, address)
        finally:
            if self.handshaking.pop(me, None) is not None:
                self.handshaking_from[source] -= 1
                if not self.handshaking_from[source]:
                    del self.handshaking_from[source]

    def authenticate(self, sock, tls_context, secret, peer_role, address):
        set_nodelay(sock)
        deadline = time.monotonic() + self.handshake_timeout
        try:
            with gevent.Timeout(self.handshake_timeout):
                if tls_context is not None:
                    if sock.recv(1, socket.MSG_PEEK) not in (TLS_HANDSHAKE_RECORD, b''):
                        # a plaintext peer: tell it in its own language, then close
                        sock.sendall(encode('error', {'reason': 'TLS is required on this port'}))
                        raise TLSError('plaintext peer on a TLS port')
                    sock = TLSSocket(sock, tls_context, server_side=True)
                    sock.do_handshake()
                link = HubLink(sock, '%s:%s' % address[:2])
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

    # duties

    def flush_store(self):
        """Commit what handlers recorded, in batches, off the hub (on its threadpool); then
        run what waited for it (acknowledgements)."""
        threadpool = gevent.get_hub().threadpool
        while True:
            self.store_dirty.wait()
            self.store_dirty.clear()
            gevent.sleep(self.commit_interval)
            statements, actions = self.store.take_batch()
            if statements:
                threadpool.apply(self.store.commit, (statements,))
            for action, args in actions:
                action(*args)

    def wait_until_durable(self):
        """Block this greenlet until what was recorded so far is committed."""
        done = gevent.event.Event()
        self.store.when_durable(done.set)
        done.wait()

    def pulse_watchdog(self):
        """Presume silent nodes dead, give up on nodes that did not return after a restart,
        and clean up clusters whose clients left long ago."""
        interval = self.options.pulse_interval
        while True:
            gevent.sleep(interval)
            now = time.monotonic()
            silence = self.missed_pulses * interval
            for node in list(self.state.nodes.values()):
                if now - node.last_heard > silence:
                    self.node_lost(node, 'no pulse for %d seconds' % (now - node.last_heard))
            if self.state.awaiting and now > self.awaiting_until:
                missing = ', '.join(sorted(self.state.awaiting))
                requeued, lost, dispatches = self.state.expire_awaiting()
                logger.warning('nodes %s did not come back after the restart (%d jobs '
                               'requeued, %d ended)', missing, len(requeued), len(lost))
                self.handle_lost_jobs(requeued, lost, dispatches, 'the node running this job '
                                      'did not come back after the scheduler restarted')
            self.warn_clusters_without_nodes(now)
            self.clean_up_after_gone_clients(now)

    def warn_clusters_without_nodes(self, now):
        """Tell a client whose cluster no node has set up for ``NO_NODE_PINGS`` discovery
        rounds (once), so that jobs waiting for ever are not a mystery."""
        wait = NO_NODE_PINGS * self.options.ping_interval
        for cluster in self.state.clusters.values():
            if cluster.ready_nodes or cluster.dormant:
                cluster.nodeless_since = None
            elif cluster.nodeless_since is None:
                cluster.nodeless_since = now
            elif now - cluster.nodeless_since > wait and cluster.owner is not None:
                cluster.nodeless_since = float('inf')  # said once
                known = ', '.join(sorted(self.state.nodes)) or 'none'
                self.warn_client(cluster, 'no node has set up this cluster in %d seconds; its '
                                 'nodes are %s; nodes known to the scheduler: %s' % (
                                     wait, ', '.join(
                                         '%s%s' % (pattern, ':%d' % port if port else '')
                                         for pattern, port in cluster.patterns), known))

    def clean_up_after_gone_clients(self, now):
        """A cluster whose client has been gone ``--zombie_interval`` with nothing left to run
        frees its nodes; its undelivered results wait ``RESULT_RETENTION`` intervals for a
        client to collect them, then the cluster is removed."""
        zombie_after = self.options.zombie_interval * 60
        for cluster in list(self.state.clusters.values()):
            if (cluster.owner is None and cluster.orphaned_since is not None
                    and not cluster.in_flight and not cluster.queued):
                gone = now - cluster.orphaned_since
                if gone > zombie_after * RESULT_RETENTION or (gone > zombie_after
                                                              and not cluster.results):
                    logger.info('cluster %s: client gone for %d minutes; removing it',
                                cluster.cid, gone // 60)
                    self.close_cluster(cluster)
                elif gone > zombie_after and not cluster.dormant:
                    logger.info('cluster %s: client gone for %d minutes; freeing its nodes, '
                                'keeping %d results for it', cluster.cid, gone // 60,
                                len(cluster.results))
                    for node in self.state.retire(cluster):
                        node.link.send('uninstall', {'cid': cluster.cid,
                                                     'cleanup': cluster.cleanup})

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
                        targets.extend(ip for ip in discovery.resolve(host) if ip not in linked)
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
