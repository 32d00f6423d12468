"""Mutual authentication of a new link: hello, then HMAC-SHA256 challenge-response.

Both sides send ``hello`` with the protocol version, their role and a fresh random nonce. The
side that connected (the initiator) proves first; the other side checks that proof before it
offers its own, so a peer without the secret never receives an HMAC it could attack offline.
A proof covers both roles and both nonces, so a recorded handshake cannot be replayed and a
proof cannot be reflected back. The secret itself never crosses the wire, and proofs are
compared in constant time.

Discovery datagrams carry an HMAC tag with the node secret; a datagram with a wrong tag is
ignored.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import TYPE_CHECKING

from ..constants import PROTOCOL_VERSION
from .messages import Auth, Error, Hello, Message
from .protocol import (
    AUTH_FAILED,
    AuthenticationError,
    ProtocolError,
    pack_datagram,
    unpack_datagram,
)

if TYPE_CHECKING:
    from .link import Link

NONCE_SIZE = 32
TAG_SIZE = 32

__all__ = ['AUTH_FAILED', 'AuthenticationError', 'handshake', 'make_proof', 'sign_datagram',
           'open_datagram']


def as_key(secret: str | bytes | None) -> bytes:
    return secret.encode() if isinstance(secret, str) else bytes(secret or b'')


def make_proof(key: bytes, prover_role: str, prover_nonce: bytes, verifier_role: str,
               verifier_nonce: bytes) -> bytes:
    message = b'\0'.join([b'dispyscheduler-auth-1', prover_role.encode(), prover_nonce,
                          verifier_role.encode(), verifier_nonce])
    return hmac.new(key, message, hashlib.sha256).digest()


def handshake(conn: Link, secret: str | bytes, role: str, peer_role: str, initiator: bool,
              deadline: float) -> Hello:
    """Run hello and authentication on ``conn``; return the peer's hello body.

    ``conn`` is a ``link.Link`` before its reader and writer start. Raises
    ``AuthenticationError`` (after telling the peer) when either side's proof is wrong, and
    ``ProtocolError`` for a peer that does not speak this protocol.
    """
    key = as_key(secret)
    nonce = os.urandom(NONCE_SIZE)
    conn.send_now(Hello(version=PROTOCOL_VERSION, role=role, nonce=nonce))
    hello = conn.expect(Hello, deadline)
    reason: str | None  # why the peer is refused, if it is
    if hello.version != PROTOCOL_VERSION:
        reason = ('protocol version %s not supported (this side speaks %s)'
                  % (hello.version, PROTOCOL_VERSION))
        conn.send_now(Error(reason=reason))
        raise ProtocolError(reason)
    reason = None
    if hello.role != peer_role:
        reason = 'expected a %s, got a %r' % (peer_role, hello.role)
    elif len(hello.nonce) != NONCE_SIZE:
        reason = 'nonce of %d bytes, not %d' % (len(hello.nonce), NONCE_SIZE)
    if reason is not None:
        conn.send_now(Error(reason=reason))
        raise ProtocolError(reason)
    peer_nonce = hello.nonce
    mine = make_proof(key, role, nonce, peer_role, peer_nonce)
    expected = make_proof(key, peer_role, peer_nonce, role, nonce)
    if initiator:
        conn.send_now(Auth(proof=mine))
        _check_proof(conn, expected, deadline, tell_peer=False)
    else:
        _check_proof(conn, expected, deadline, tell_peer=True)
        conn.send_now(Auth(proof=mine))
    conn.authenticated()
    return hello


def _check_proof(conn: Link, expected: bytes, deadline: float, tell_peer: bool) -> None:
    auth = conn.expect(Auth, deadline)
    if not hmac.compare_digest(auth.proof, expected):
        if tell_peer:
            conn.send_now(Error(reason=AUTH_FAILED))
        raise AuthenticationError(AUTH_FAILED)


def sign_datagram(secret: str | bytes, message: Message) -> bytes:
    payload = pack_datagram(message)
    return hmac.new(as_key(secret), payload, hashlib.sha256).digest() + payload


def open_datagram(secret: str | bytes, data: bytes) -> Message:
    """The message of a correctly tagged datagram; raise otherwise."""
    tag, payload = data[:TAG_SIZE], data[TAG_SIZE:]
    if not hmac.compare_digest(tag, hmac.new(as_key(secret), payload, hashlib.sha256).digest()):
        raise AuthenticationError('datagram with a wrong tag')
    return unpack_datagram(payload)
