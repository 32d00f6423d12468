"""TLS for both links with pyOpenSSL.

``TLSSocket`` wraps a connected socket and offers the few socket calls ``link.Link`` uses
(``recv``, ``sendall``, ``settimeout``, ``shutdown``, ``close``). The socket runs in
non-blocking mode and waits with ``select.poll``; the daemons monkey-patch ``select``, so the
same code waits cooperatively there and blocks a thread in the client. OpenSSL connections
are not thread-safe, so every call into one holds a lock, and no lock is held while waiting.
"""

from __future__ import annotations

import datetime
import select
import socket
import threading
import time
from typing import Any, Callable, TypeVar

from OpenSSL import SSL

MIN_TLS_VERSION = SSL.TLS1_2_VERSION
TLS_HANDSHAKE_RECORD = b'\x16'  # the first byte a TLS client sends
SEND_CHUNK = 256 * 1024

T = TypeVar('T')


class TLSConfigError(ValueError):
    """A certificate, key or CA file cannot be used; the message names the file."""


def _check_file(path: str, what: str) -> bytes:
    try:
        with open(path, 'rb') as handle:
            return handle.read()
    except OSError as exc:
        raise TLSConfigError('cannot read %s %s: %s' % (what, path, exc.strerror)) from None


def _check_dates(path: str, data: bytes) -> None:
    """A certificate that has expired, or is not valid yet, is refused at start, not at the
    first handshake."""
    from cryptography import x509
    try:
        certificate = x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise TLSConfigError('cannot load certificate %s: %s' % (path, exc)) from None
    now = datetime.datetime.now(datetime.timezone.utc)
    if certificate.not_valid_after_utc < now:
        raise TLSConfigError('certificate %s expired on %s' % (
            path, certificate.not_valid_after_utc.strftime('%Y-%m-%d %H:%M UTC')))
    if certificate.not_valid_before_utc > now:
        raise TLSConfigError('certificate %s is not valid before %s' % (
            path, certificate.not_valid_before_utc.strftime('%Y-%m-%d %H:%M UTC')))


def make_context(certfile: str | None = None, keyfile: str | None = None,
                 cafile: str | None = None) -> SSL.Context:
    """A pyOpenSSL context, for either side: our certificate and key (the key may be in the
    certificate file; a server needs them, a client shows them where the server verifies its
    peers), and, with ``cafile``, verification of the peer's certificate against that CA (both
    ways when both sides have one: mutual TLS). Raises ``TLSConfigError`` with a one-line
    reason."""
    context = SSL.Context(SSL.TLS_METHOD)
    context.set_min_proto_version(MIN_TLS_VERSION)
    if certfile:
        _check_dates(certfile, _check_file(certfile, 'certificate'))
        if keyfile:
            _check_file(keyfile, 'key')
        try:
            context.use_certificate_chain_file(certfile)
        except SSL.Error as exc:
            raise TLSConfigError('cannot load certificate %s: %s'
                                 % (certfile, _reason(exc))) from None
        try:
            context.use_privatekey_file(keyfile or certfile)
            context.check_privatekey()
        except SSL.Error as exc:
            raise TLSConfigError('cannot use key %s with certificate %s: %s'
                                 % (keyfile or certfile, certfile, _reason(exc))) from None
    if cafile:
        _check_file(cafile, 'CA file')
        try:
            context.load_verify_locations(cafile)
        except SSL.Error as exc:
            raise TLSConfigError('cannot load CA file %s: %s' % (cafile, _reason(exc))) from None
        context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT,
                           lambda conn, cert, errno, depth, ok: bool(ok))
    return context


def _reason(exc: SSL.Error) -> str:
    try:
        return '; '.join(str(err[2]) for err in exc.args[0]) or str(exc)
    except (IndexError, TypeError):
        return str(exc)


class TLSError(ConnectionError):
    """The TLS layer failed (handshake refused, peer not speaking TLS, bad certificate)."""


class TLSSocket:
    """A TLS connection over a connected socket, with the socket calls ``Link`` needs."""

    def __init__(self, sock: socket.socket, context: SSL.Context, server_side: bool) -> None:
        sock.setblocking(False)
        self.raw = sock
        self.conn = SSL.Connection(context, sock)
        if server_side:
            self.conn.set_accept_state()
        else:
            self.conn.set_connect_state()
        self.lock = threading.Lock()
        self.timeout: float | None = None

    def settimeout(self, timeout: float | None) -> None:
        self.timeout = timeout

    def getpeername(self) -> Any:
        return self.raw.getpeername()

    def getsockname(self) -> Any:
        return self.raw.getsockname()

    def fileno(self) -> int:
        return self.raw.fileno()

    def do_handshake(self) -> None:
        try:
            self._retry(self.conn.do_handshake)
        except SSL.Error as exc:
            raise TLSError('TLS handshake failed: %s' % (_reason(exc),)) from None

    def recv_into(self, buffer: memoryview) -> int:
        """``recv`` into ``buffer`` (pyOpenSSL's own ``recv_into`` takes no memoryview of a
        slice everywhere: a copy of what came is cheap beside TLS)."""
        data = self.recv(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def recv(self, size: int) -> bytes:
        try:
            return self._retry(self.conn.recv, size)
        except SSL.ZeroReturnError:
            return b''
        except SSL.SysCallError as exc:
            if exc.args and exc.args[0] == -1:  # EOF without close_notify
                return b''
            raise ConnectionError('TLS connection broke: %s' % (exc,)) from None
        except SSL.Error as exc:
            raise TLSError('TLS error: %s' % (_reason(exc),)) from None

    def sendall(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        try:
            while view:
                sent = self._retry(self.conn.send, view[:SEND_CHUNK])
                view = view[sent:]
        except SSL.SysCallError as exc:
            raise ConnectionError('TLS connection broke: %s' % (exc,)) from None
        except SSL.Error as exc:
            raise TLSError('TLS error: %s' % (_reason(exc),)) from None

    def shutdown(self, how: int) -> None:
        self.raw.shutdown(how)

    def close(self) -> None:
        self.raw.close()

    def _retry(self, operation: Callable[..., T], *args: Any) -> T:
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while True:
            try:
                with self.lock:
                    return operation(*args)
            except SSL.WantReadError:
                self._wait(select.POLLIN, deadline)
            except SSL.WantWriteError:
                self._wait(select.POLLOUT, deadline)

    def _wait(self, events: int, deadline: float | None) -> None:
        poller = select.poll()
        poller.register(self.raw.fileno(), events)
        if deadline is None:
            poller.poll()
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not poller.poll(remaining * 1000):
            raise TimeoutError('timed out')
