"""The scheduler's half of discovery: pinging nodes (unicast to ``-n`` hosts not yet linked,
broadcast otherwise) and answering nodes that announce themselves. Nodes always open the
link; a ping only tells them where to."""

from __future__ import annotations

import logging
import socket
from typing import Any, Callable

import gevent

from ..runtime import discovery
from ..config import SchedulerConfig
from ..wire.messages import Announce, Message, Ping
from .model import State

logger = logging.getLogger(__name__)


class Pinger:
    def __init__(self, config: SchedulerConfig, state: State,
                 sockets: dict[str, socket.socket], node_link_port: int) -> None:
        self.config = config
        self.state = state
        self.sockets = sockets  # address ('' for the wildcard) -> UDP socket
        self.node_link_port = node_link_port  # where nodes connect: told in every ping

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
        """Ping ``hosts`` not linked yet (``'*'``: broadcast) at ``port``; also what a
        client's ``discover_nodes`` asks for."""
        linked = {node.ip_addr for node in self.state.nodes.values()}
        for address, sock in self.sockets.items():
            if not address and len(self.sockets) > 1:
                continue  # the wildcard socket only listens for broadcasts
            ping = Ping(addr=self.announced_address(address), port=self.node_link_port)
            targets = []
            for host in hosts:
                if host == '*':
                    targets.extend(discovery.broadcast_targets(address))
                else:
                    targets.extend(ip for ip in discovery.resolve(host) if ip not in linked)
            for target in targets:
                discovery.send(sock, self.config.node_secret, ping, (target, port))

    def on_datagram(self, sock: socket.socket, message: Message, source: tuple) -> None:
        if type(message) is Announce and discovery.valid_port(message.port):
            address = sock.getsockname()[0]
            ping = Ping(addr=self.announced_address(address if address != '0.0.0.0' else ''),
                        port=self.node_link_port)
            discovery.send(sock, self.config.node_secret, ping, (source[0], message.port))

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
