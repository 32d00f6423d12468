"""The scheduler daemon: its parts, wired together, and its listening sockets.

The parts, each owning its state and reached by the others through named calls:

- ``State`` (model.py): clusters, nodes and jobs; pure bookkeeping that returns outcomes;
- ``Durability`` (durability.py): the SQLite store and the flusher that commits in batches;
- ``Peers`` (sessions.py): a session per node link and per client link;
- ``Router`` (router.py): performs outcomes: jobs to nodes, ends of jobs to clients;
- ``NodeService`` (nodes.py) and ``ClusterService`` (clusters.py): what nodes and clients say;
- ``Admission`` (admission.py): TLS, authentication and the caps on strangers;
- ``Watchdogs`` (watchdogs.py) and ``Pinger`` (pinger.py): the periodic duties;
- the status page and metrics (``httpd.py``).

At start the scheduler reloads what its store kept: clusters, unfinished jobs and undelivered
results. Clients and nodes reconnect on their own; nodes say which jobs they still hold, and
jobs of nodes that do not come back within the grace period are handled as lost.

The scheduler never unpickles anything: computations, arguments and results are opaque bytes
that it routes between clients and nodes.
"""

from __future__ import annotations

import logging
import signal
import socket
import time
from typing import TYPE_CHECKING, Any, Optional

import gevent
import gevent.event
from gevent.server import StreamServer

from ..runtime import discovery
from ..config import SchedulerConfig
from ..constants import MAX_DISPATCH_DEPTH
from ..runtime.daemonize import write_pid_file
from ..runtime.duties import Duties, log_greenlet_errors
from .httpd import Metrics, StatusServer, status
from .admission import Admission
from .clusters import ClusterService
from .durability import Durability
from .model import State
from .nodes import NodeService
from .pinger import Pinger
from .payloads import restore_results
from .router import Router
from .sessions import Peers
from .store import Store
from .watchdogs import Watchdogs

if TYPE_CHECKING:
    from OpenSSL import SSL

logger = logging.getLogger(__name__)


class Listeners:
    """The scheduler's sockets, bound before it detaches (``--daemon``), so that a port in use
    is reported on the terminal, with exit status 2. A port of 0 is a free one, chosen at the
    first address and used at the others; the discovery sockets take the node port's number."""

    def __init__(self, config: SchedulerConfig) -> None:
        self.addresses = config.ip_addr or ['']
        self.node: list[socket.socket] = []
        self.client: list[socket.socket] = []
        self.node_port, self.client_port = config.port, config.scheduler_port
        for address in self.addresses:
            self.node.append(tcp_listener(address, self.node_port))
            self.node_port = self.node[-1].getsockname()[1]
            self.client.append(tcp_listener(address, self.client_port))
            self.client_port = self.client[-1].getsockname()[1]
        self.udp = discovery.open_sockets([address for address in self.addresses if address],
                                          self.node_port)
        self.httpd = tcp_listener(*config.httpd) if config.httpd else None

    def close(self) -> None:
        for sock in self.node + self.client + list(self.udp.values()):
            sock.close()
        if self.httpd is not None:
            self.httpd.close()


def tcp_listener(address: str, port: int, backlog: int = 1024) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart on the same port
    try:
        sock.bind((address, port))
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise OSError('%s:%d: %s' % (address or '*', port, exc.strerror)) from None
    return sock


class Scheduler:
    """The shared scheduler: builds its parts from ``config`` and the reopened store, and runs
    them. Tunables are class attributes."""

    max_depth = MAX_DISPATCH_DEPTH
    """Most jobs in flight per node CPU (see ``policy.dispatch_depth``)."""

    def __init__(self, config: SchedulerConfig, store: Store, listeners: Listeners,
                 node_tls: Optional[SSL.Context] = None,
                 cluster_tls: Optional[SSL.Context] = None) -> None:
        self.config = config
        self.listeners = listeners
        self.stopped = gevent.event.Event()
        self.duties = Duties(self.stopped)
        self.started = time.time()
        self.scheduler_id = store.scheduler_id
        self.state = State(self.max_depth, config.max_node_losses, store.epoch,
                           store.meta('next_cid') or 1)
        self.durability = Durability(store)
        self.peers = Peers()
        self.metrics = Metrics(self.state)
        self.router = Router(self.state, self.peers, self.durability, self.metrics)
        admission = Admission(config.max_unauthenticated, config.max_unauthenticated_per_source)
        self.nodes = NodeService(config, self.state, self.peers, self.router, self.durability,
                                 admission, self.scheduler_id, node_tls)
        self.clusters = ClusterService(config, self.state, self.peers, self.router,
                                       self.durability, admission, self.nodes, self.metrics,
                                       cluster_tls)
        self.restore(store)
        self.watchdogs = Watchdogs(config, self.state, self.nodes, self.clusters, self.router)
        self.pinger = Pinger(config, self.state, listeners.udp, listeners.node_port)
        self.clusters.discover = self.pinger.ping
        self.pinger.warn_client = self.router.warn_client
        self.clusters.warn_of_busy_nodes = self.pinger.warn_of_busy_nodes
        self.status_server: Optional[StatusServer] = None

    def restore(self, store: Store) -> None:
        """Reload the store; a scheduler restarted with the same ``--state_dir`` goes on."""
        clusters, jobs, results = store.load()
        self.state.restore(clusters, jobs)
        now = time.monotonic()
        for cluster in self.state.clusters.values():
            cluster.orphaned_since = now
        for cid, uid, size in results:
            self.state.clusters[cid].results.restored(uid, size)
        for cluster in self.state.clusters.values():
            restore_results(cluster, cluster.results.__contains__)
        if clusters:
            logger.info('restored %d clusters, %d unfinished jobs (%d on nodes) and %d '
                        'undelivered results', len(clusters), len(jobs),
                        sum(len(waiting) for waiting in self.state.awaiting.values()),
                        len(results))

    def status(self) -> dict[str, Any]:
        """The scheduler at a glance (``/status``, ``dispyscheduler-status``)."""
        return status(self.state, self.peers, self.started, self.config.pulse_interval)

    def run(self) -> int:
        """Serve until SIGTERM or SIGINT; then save what is pending and stop. Returns the
        exit status: 1 if a duty failed (a full disk, say) or the last commit did."""
        log_greenlet_errors()
        servers = [StreamServer(sock, self.nodes.serve) for sock in self.listeners.node]
        servers += [StreamServer(sock, self.clusters.serve) for sock in self.listeners.client]
        for server in servers:
            server.start()
        if self.listeners.httpd is not None:
            self.status_server = StatusServer(self.status, self.metrics.registry,
                                              self.listeners.httpd)
            self.status_server.start()
        self.pinger.run_receivers(self.duties.spawn)
        flusher = self.duties.spawn(self.durability.run_flusher)
        self.duties.spawn(self.pinger.run)
        self.duties.spawn(self.watchdogs.run)
        self.duties.spawn(self.nodes.flush_acknowledgements)
        for signum in (signal.SIGTERM, signal.SIGINT):
            gevent.signal_handler(signum, self.stopped.set)
        if self.config.pid_file:  # ``--daemon``
            write_pid_file(self.config.pid_file)  # now it answers SIGTERM: ready
        logger.info('dispyscheduler serving nodes on port %d and clients on port %d (%s)',
                    self.listeners.node_port, self.listeners.client_port,
                    ', '.join(address or 'all addresses'
                              for address in self.listeners.addresses))
        self.stopped.wait()
        logger.info('stopping')
        for server in servers:
            server.close()
        failed = flusher.dead and flusher.exception is not None
        self.duties.kill()
        status = self.duties.status
        if not failed and self.durability.commit_now() is not None:
            status = 1
        self.peers.close_all()
        self.listeners.close()
        self.durability.close()
        return status
