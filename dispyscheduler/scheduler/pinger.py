"""The scheduler's half of discovery: pinging nodes (unicast to ``-n`` hosts not yet linked,
broadcast otherwise) and answering nodes that announce themselves. Nodes always open the
link; a ping only tells them where to."""

from __future__ import annotations

import logging
import socket
import time
from typing import Any, Callable, Optional

import gevent

from ..constants import BUSY_WARNING_INTERVAL
from ..runtime import discovery
from ..config import SchedulerConfig
from ..wire.messages import Announce, Message, NodeBusy, Ping
from .model import Cluster, State
from .policy import node_matches

logger = logging.getLogger(__name__)


class Pinger:
    def __init__(self, config: SchedulerConfig, state: State,
                 sockets: dict[str, socket.socket], node_link_port: int) -> None:
        self.config = config
        self.state = state
        self.sockets = sockets  # address ('' for the wildcard) -> UDP socket
        self.node_link_port = node_link_port  # where nodes connect: told in every ping
        # node address -> (port, the scheduler it serves, when it said so)
        self.busy: dict[str, tuple[int, str, float]] = {}
        # tells a cluster's client (the server sets it: ``Router.warn_client``)
        self.warn_client: Callable[[Cluster, str], bool] = lambda cluster, reason: False

    def run_receivers(self, spawn: Callable[..., Any]) -> None:
        """A receive loop per socket, each started with ``spawn(function, *args)``."""
        for sock in self.sockets.values():
            spawn(discovery.receive_loop, sock, self.config.node_secret,
                  lambda message, source, sock=sock: self.on_datagram(sock, message, source))

    def run(self) -> None:
        """Ping nodes every ``--ping_interval``."""
        while True:
            self.ping(self.config.nodes or ['*'], self.config.node_port)
            gevent.sleep(self.config.ping_interval)

    def ping(self, hosts: list[str], port: int) -> None:
        """Ping ``hosts`` not linked yet (``'*'``: broadcast) at ``port`` (``host:port``: at
        that port); also what a client's ``discover_nodes`` asks for."""
        linked = {node.ip_addr for node in self.state.nodes.values()}
        for address, sock in self.sockets.items():
            if not address and len(self.sockets) > 1:
                continue  # the wildcard socket only listens for broadcasts
            ping = Ping(addr=self.announced_address(address), port=self.node_link_port)
            targets: list[tuple[str, int]] = []
            for host in hosts:
                name, _, own_port = host.partition(':')  # a node on a port of its own
                target_port = int(own_port) if own_port.isdigit() else port
                if name == '*':
                    targets.extend((ip, target_port)
                                   for ip in discovery.broadcast_targets(address))
                else:
                    targets.extend((ip, target_port) for ip in discovery.resolve(name)
                                   if ip not in linked)
            for target in targets:
                discovery.send(sock, self.config.node_secret, ping, target)

    def on_datagram(self, sock: socket.socket, message: Message, source: tuple) -> None:
        if type(message) is NodeBusy:
            self.on_node_busy(message, source[0])
            return
        if type(message) is Announce and discovery.valid_port(message.port):
            address = sock.getsockname()[0]
            ping = Ping(addr=self.announced_address(address if address != '0.0.0.0' else ''),
                        port=self.node_link_port)
            discovery.send(sock, self.config.node_secret, ping, (source[0], message.port))

    def on_node_busy(self, busy: NodeBusy, ip_addr: str) -> None:
        """A node this scheduler pinged serves another: the clusters that would use it are
        told (a warning in each program), and those created while it is remembered
        (``BUSY_WARNING_INTERVAL``)."""
        known = ip_addr in self.busy
        self.busy[ip_addr] = (busy.port, busy.serving[:100], time.monotonic())
        if not known:
            logger.warning('node %s:%d serves another scheduler (%s)', ip_addr, busy.port,
                           busy.serving[:100])
        for cluster in list(self.state.clusters.values()):
            self.warn_of_busy_nodes(cluster, only=ip_addr)

    def warn_of_busy_nodes(self, cluster: Cluster, only: Optional[str] = None) -> None:
        """Tell a cluster's client, once per node, of the nodes it would use that serve
        another scheduler."""
        now = time.monotonic()
        for ip_addr, (port, serving, when) in list(self.busy.items()):
            if now - when > BUSY_WARNING_INTERVAL:
                del self.busy[ip_addr]
            elif ((only is None or ip_addr == only) and ip_addr not in cluster.busy_warned
                  and node_matches(cluster.patterns, ip_addr, '', port)):
                if self.warn_client(cluster, 'node %s:%d serves another scheduler (%s) and is '
                                    'not used; it answers once that one releases it'
                                    % (ip_addr, port, serving)):
                    cluster.busy_warned.add(ip_addr)

    def announced_address(self, address: str) -> str:
        """The address nodes should connect to: the ``--ext_ip_addr`` paired with ``address``
        (NAT), else ``address`` itself; '' lets a node use the ping's source address."""
        ext = self.config.ext_ip_addr
        ips = self.config.ip_addr
        if address in ips and ips.index(address) < len(ext):
            return ext[ips.index(address)]
        if not address and ext:
            return ext[0]
        return address
