"""UDP discovery shared by both daemons: sockets, broadcast addresses, signed datagrams.

Nothing depends on a datagram arriving: pings repeat every ``--ping_interval`` and a node with
``--scheduler_node`` connects on its own. Datagrams carry an HMAC tag made with the node
secret; anything else that arrives on a discovery port is ignored.
"""

from __future__ import annotations

import fcntl
import ipaddress
import logging
import socket
import struct
from typing import Any, Callable, Iterable

import gevent

from ..wire.auth import AuthenticationError, open_datagram, sign_datagram
from ..constants import MAX_DATAGRAM_SIZE, NAME_LOOKUP_TIMEOUT
from ..wire.messages import Message
from ..wire.protocol import ProtocolError

logger = logging.getLogger(__name__)

SIOCGIFFLAGS = 0x8913
SIOCGIFADDR = 0x8915
SIOCGIFBRDADDR = 0x8919
SIOCGIFNETMASK = 0x891b
IFF_BROADCAST = 0x2
IFF_LOOPBACK = 0x8
IFF_UP = 0x1


def _ioctl(sock: socket.socket, request: int, name: str) -> bytes:
    packed = struct.pack('256s', name.encode()[:15])
    return fcntl.ioctl(sock.fileno(), request, packed)


def ipv4_interfaces() -> list[tuple[str, str, str | None, bool]]:
    """``(name, address, broadcast or None, is_loopback)`` of every IPv4 interface that is up."""
    found = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _, name in socket.if_nameindex():
            try:
                flags = struct.unpack_from('H', _ioctl(sock, SIOCGIFFLAGS, name), 16)[0]
                address = socket.inet_ntoa(_ioctl(sock, SIOCGIFADDR, name)[20:24])
            except OSError:
                continue  # down, or no IPv4 address
            if not flags & IFF_UP:
                continue
            broadcast = None
            if flags & IFF_BROADCAST:
                broadcast = socket.inet_ntoa(_ioctl(sock, SIOCGIFBRDADDR, name)[20:24])
                if broadcast == '0.0.0.0':  # none set (``ip addr add`` without ``brd +``):
                    mask = socket.inet_ntoa(_ioctl(sock, SIOCGIFNETMASK, name)[20:24])
                    broadcast = str(ipaddress.IPv4Network('%s/%s' % (address, mask),
                                                          strict=False).broadcast_address)
            found.append((name, address, broadcast, bool(flags & IFF_LOOPBACK)))
    return found


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def broadcast_targets(bound_addr: str) -> list[str]:
    """Where to broadcast from a socket bound to ``bound_addr`` ('' = all interfaces).

    A loopback address has no broadcast domain, so a daemon bound to one never broadcasts.
    """
    if bound_addr and is_loopback(bound_addr):
        return []
    targets = []
    for _, address, broadcast, loopback in ipv4_interfaces():
        if loopback or not broadcast or (bound_addr and address != bound_addr):
            continue
        targets.append(broadcast)
    if targets:
        targets.append('255.255.255.255')
    return targets


def resolve(host: str, timeout: float = NAME_LOOKUP_TIMEOUT) -> list[str]:
    """The IPv4 addresses of ``host``; empty, with a warning, if it cannot be resolved within
    ``timeout`` seconds."""
    try:
        host.encode('idna')  # here, not in getaddrinfo's thread, which reports it as a crash
        with gevent.Timeout(timeout):
            # AF_INET: an address is a str already (str() for the checker's sake)
            return sorted({str(info[4][0])
                           for info in socket.getaddrinfo(host, None, socket.AF_INET)})
    except (OSError, UnicodeError) as exc:
        logger.warning('cannot resolve %s: %s', host, exc)
    except gevent.Timeout:
        logger.warning('cannot resolve %s: no answer in %g seconds', host, timeout)
    return []


def udp_socket(address: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    sock.bind((address, port))
    return sock


def open_sockets(addresses: Iterable[str], port: int) -> dict[str, socket.socket]:
    """One socket per address (for unicast, and as the source of broadcasts) plus one on the
    wildcard address, which is the only kind that receives broadcasts."""
    sockets = {}
    for address in addresses:
        sockets[address] = udp_socket(address, port)
    if '' not in sockets:
        try:
            sockets[''] = udp_socket('', port)
        except OSError as exc:
            logger.warning('cannot listen for discovery broadcasts on UDP port %d: %s', port, exc)
    return sockets


def valid_port(port: object) -> bool:
    return isinstance(port, int) and 0 < port < 65536


def valid_address(address: str) -> bool:
    """An IPv4 address in dotted form ('' is valid too: "use the datagram's source")."""
    if address == '':
        return True
    try:
        return isinstance(ipaddress.ip_address(address), ipaddress.IPv4Address)
    except ValueError:
        return False


def send(sock: socket.socket, secret: str | bytes, message: Message,
         destination: tuple[str, int]) -> None:
    try:
        sock.sendto(sign_datagram(secret, message), destination)
    except (OSError, OverflowError, ValueError, UnicodeError) as exc:
        logger.debug('discovery %s to %s:%s failed: %s', message.kind, destination[0],
                     destination[1], exc)


def receive_loop(sock: socket.socket, secret: str | bytes,
                 handle: Callable[[Message, Any], Any]) -> None:
    """Call ``handle(message, source)`` for every well-formed, correctly signed datagram."""
    while True:
        data, source = sock.recvfrom(2 * MAX_DATAGRAM_SIZE)
        try:
            message = open_datagram(secret, data)
        except (AuthenticationError, ProtocolError) as exc:
            logger.debug('ignored datagram from %s: %s', source[0], exc)
            continue
        try:
            handle(message, source)
        except Exception:  # one odd datagram must not end discovery
            logger.exception('internal error: datagram %s from %s could not be handled',
                             message.kind, source[0])

