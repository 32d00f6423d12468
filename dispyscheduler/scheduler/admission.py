"""Admission: a new connection's TLS and authentication, and the caps on connections that have
not authenticated yet, so idle or slow strangers cannot crowd out the users."""

from __future__ import annotations

import collections
import logging
import socket
import time
from typing import TYPE_CHECKING, Any, Optional

import gevent

from ..wire.auth import AuthenticationError, handshake
from ..constants import HANDSHAKE_TIMEOUT
from ..runtime.hublink import HubLink
from ..wire.link import Socket, set_nodelay
from ..wire.messages import Error
from ..wire.protocol import ProtocolError, encode
from ..wire.tls import TLS_HANDSHAKE_RECORD, TLSError, TLSSocket

if TYPE_CHECKING:
    from OpenSSL import SSL

logger = logging.getLogger(__name__)


class Admission:
    """Tunables are class attributes; the caps come from the configuration."""

    handshake_timeout = HANDSHAKE_TIMEOUT
    """Seconds a new connection has to authenticate and say who it is."""

    def __init__(self, max_unauthenticated: int, max_per_source: int) -> None:
        self.max_unauthenticated = max_unauthenticated
        self.max_per_source = max_per_source
        self.handshaking: collections.OrderedDict[Any, str] = collections.OrderedDict()
        # greenlet -> peer address, oldest first
        self.handshaking_from: dict[str, collections.OrderedDict[Any, None]] = {}
        # peer address -> its greenlets of those, oldest first

    def accept(self, sock: socket.socket, tls_context: Optional[SSL.Context], secret: str,
               peer_role: str, address: tuple[str, int]) -> Optional[HubLink]:
        """TLS (if configured) and authentication of a new connection; its link, or None
        after logging why the peer was refused.

        Connections that have not authenticated yet are capped per address and overall. Past
        a cap the oldest of them goes, never the newcomer: a program that opens connections
        and says nothing must not lock out the users of its host (who share its address), and
        a user's connection, quick to authenticate, is never the oldest for long."""
        source = address[0]
        same_source = self.handshaking_from.get(source)
        if same_source is not None and len(same_source) >= self.max_per_source:
            self.drop(next(iter(same_source)))
            logger.warning('dropped the oldest connection from %s: %d connections from there '
                           'are still in their handshake', source, self.max_per_source)
        while len(self.handshaking) >= self.max_unauthenticated:
            oldest, oldest_source = next(iter(self.handshaking.items()))
            self.drop(oldest)
            logger.warning('dropped the oldest connection still in its handshake (from %s): '
                           '%d are open', oldest_source, self.max_unauthenticated)
        me = gevent.getcurrent()
        self.handshaking[me] = source
        self.handshaking_from.setdefault(source, collections.OrderedDict())[me] = None
        try:
            return self.authenticate(sock, tls_context, secret, peer_role, address)
        finally:
            self.forget(me)

    def drop(self, greenlet: Any) -> None:
        """End a connection still in its handshake (its greenlet)."""
        self.forget(greenlet)
        greenlet.kill(block=False)

    def forget(self, greenlet: Any) -> None:
        source = self.handshaking.pop(greenlet, None)
        if source is not None:
            same_source = self.handshaking_from[source]
            del same_source[greenlet]
            if not same_source:
                del self.handshaking_from[source]

    def authenticate(self, sock: socket.socket, tls_context: Optional[SSL.Context],
                     secret: str, peer_role: str, address: tuple[str, int]) -> Optional[HubLink]:
        set_nodelay(sock)
        deadline = time.monotonic() + self.handshake_timeout
        link_sock: Socket = sock  # TLS, when configured, wraps the plain socket
        try:
            with gevent.Timeout(self.handshake_timeout):
                if tls_context is not None:
                    if sock.recv(1, socket.MSG_PEEK) not in (TLS_HANDSHAKE_RECORD, b''):
                        # a plaintext peer: tell it in its own language, then close
                        sock.sendall(encode(Error(reason='TLS is required on this port')))
                        raise TLSError('plaintext peer on a TLS port')
                    link_sock = TLSSocket(sock, tls_context, server_side=True)
                    link_sock.do_handshake()
                link = HubLink(link_sock, '%s:%s' % address[:2])
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
