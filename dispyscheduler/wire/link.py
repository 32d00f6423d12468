"""One long-lived connection that carries framed messages both ways.

The same class serves the daemons and the client. It is written against the stdlib
(``threading``, blocking socket calls): in the daemons, which monkey-patch the stdlib with
gevent, its reader and writer are greenlets; in a user's program they are plain threads.

Sending never blocks the caller: ``send`` appends an encoded frame to an outbox and wakes the
writer, which joins everything queued since its last pass into one ``sendall``. The reader
hands every frame of a read to the handler. The daemons use ``hublink.HubLink``, which sends
from the hub and yields after each read so one busy peer cannot starve the others.
"""

from __future__ import annotations

import collections
import logging
import socket
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, TypeVar, Union

from ..constants import BULK_RECV_SIZE, HANDSHAKE_MAX_FRAME, MAX_FRAME_SIZE, RECV_SIZE
from .messages import Error, Message
from .protocol import FrameDecoder, ProtocolError, encode, encode_bulk, refusal

if TYPE_CHECKING:
    from .tls import TLSSocket

logger = logging.getLogger(__name__)

M = TypeVar('M', bound=Message)

Socket = Union[socket.socket, 'TLSSocket']
"""What a link runs over: a connected socket, or a TLS connection over one."""


class ConnectionClosed(ConnectionError):
    """The peer closed the connection, or it broke."""


class Link:
    """A framed connection over a socket (plain or ``tls.TLSSocket``).

    Use ``send_now``/``recv_now`` for the handshake, then start ``run_writer`` in its own
    thread or greenlet and call ``run_reader(handler)``, which returns only when the
    connection ends.
    """

    recv_size = RECV_SIZE

    direct = False
    """Whether ``send`` may write in the caller's thread when nothing is queued (saves waking
    the writer: the client's links, where each thread is costly to wake; the daemons keep the
    writer greenlet, so that a slow peer never blocks a reader)."""

    def __init__(self, sock: Socket, peer: str | None = None,
                 max_frame_size: int = MAX_FRAME_SIZE) -> None:
        self.sock = sock
        self.peer = peer or _peer_name(sock)
        self.max_frame_size = max_frame_size
        # a peer not yet authenticated gets small frames only: a hello is tiny
        self.decoder = FrameDecoder(min(HANDSHAKE_MAX_FRAME, max_frame_size))
        # decoded during the handshake, not yet handled
        self.inbox: collections.deque[Message] = collections.deque()
        self.outbox: collections.deque[bytes] = collections.deque()
        self.drained = threading.Event()  # set when the writer has taken all queued frames
        self.sending = threading.Lock()  # one sendall at a time, in order
        self.wakeup = threading.Event()
        self.closed = False

    def __repr__(self) -> str:
        return '<Link %s>' % (self.peer,)

    # handshake phase: synchronous, with a deadline

    def send_now(self, message: Message) -> None:
        self.sock.sendall(encode(message))

    def recv_now(self, deadline: float | None = None) -> Message:
        """Return the next message, waiting at most until ``deadline`` (``time.monotonic``)."""
        while not self.inbox:
            if deadline is None:
                self.inbox.extend(self.decoder.messages_from(self._recv()))
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise socket.timeout('timed out waiting for the peer')
            self.sock.settimeout(remaining)
            try:
                self.inbox.extend(self.decoder.messages_from(self._recv()))
            finally:
                self.sock.settimeout(None)
        return self.inbox.popleft()

    def expect(self, kind: type[M], deadline: float | None = None) -> M:
        """The next message, which must be of class ``kind``; an error frame in its place
        raises ``refusal(error)``, anything else ``ProtocolError``."""
        message = self.recv_now(deadline)
        if type(message) is kind:
            return message
        if type(message) is Error:
            raise refusal(message)
        raise ProtocolError('expected %s from %s, got %s' % (kind.kind, self.peer,
                                                            message.kind))

    # running phase

    def send(self, message: Message, *more: Message) -> bool:
        """Queue one message (or several), which the writer sends with whatever else is
        queued.

        Returns False, dropping the message, when the link is closed: whoever owns the link
        learns of that from its reader, so senders elsewhere need not handle it."""
        if self.closed:
            return False
        frame = encode(message)
        if more:
            frame = b''.join([frame] + [encode(other) for other in more])
        if self.direct and not self.outbox and self.sending.acquire(blocking=False):
            try:
                if not self.outbox:  # nothing queued before it: it may go now, in order
                    self.sock.sendall(frame)
                    return True
            except OSError as exc:
                logger.debug('send to %s failed: %s', self.peer, exc)
                self.close()
                return False
            finally:
                self.sending.release()
        self.outbox.append(frame)
        self.wake_writer()
        return True

    def wake_writer(self) -> None:
        if not self.wakeup.is_set():
            self.wakeup.set()

    def wait_until_drained(self) -> None:
        """Wait until the writer has taken every queued frame: back-pressure for bulk data,
        so a big file passes through in a chunk or two rather than all at once."""
        while self.outbox and not self.closed:
            self.drained.clear()
            self.drained.wait(1.0)

    def send_bulk(self, message: Message, data: bytes | memoryview) -> bool:
        """``message`` with ``data`` as its ``data``, as a bulk frame (``encode_bulk``: the
        data go after the message as they are, never copied into a frame), once what is
        queued has left (flow control for a large value sent a chunk at a time); False if
        the link is closed."""
        return self.send_exclusive(encode_bulk(message, memoryview(data).nbytes),
                                   lambda: self.sock.sendall(data))

    def send_exclusive(self, head: bytes, rest: Callable[[], Any]) -> bool:
        """``head``, then whatever ``rest()`` writes to the socket, once what is queued has
        left, with the socket to itself meanwhile (frames sent by others wait in the
        outbox); False if the link is closed, or breaks on the way (then closed)."""
        self.wait_until_drained()
        if self.closed:
            return False
        with self.sending:
            try:
                self.sock.sendall(head)
                rest()
            except (OSError, ValueError) as exc:  # ValueError: the socket was closed under us
                logger.debug('send to %s failed: %s', self.peer, exc)
                self.close()
                return False
        return True

    def send_stream(self, messages: Iterable[Message]) -> bool:
        """Bulk data, a message at a time, each once the one before has left (a big file
        passes through in a chunk or two); False if the link closed on the way. What
        producing the messages raises (a file that cannot be read) is the caller's."""
        for message in messages:
            if not self.send(message):
                return False
            self.wait_until_drained()
        return not self.closed

    def authenticated(self) -> None:
        """The handshake succeeded: frames up to the full size limit are accepted now."""
        self.decoder.max_frame_size = self.max_frame_size

    def run_writer(self) -> None:
        """Send queued frames until the link is closed; a send error closes the link."""
        try:
            while not self.closed:
                self.wakeup.wait()
                self.wakeup.clear()
                if self.outbox:
                    with self.sending:
                        chunks = []
                        while self.outbox:
                            chunks.append(self.outbox.popleft())
                        self.drained.set()
                        if chunks:  # (else another sender took them while this one waited)
                            self.sock.sendall(b''.join(chunks) if len(chunks) > 1
                                              else chunks[0])
        except (OSError, ValueError) as exc:  # ValueError: the socket was closed under us
            logger.debug('send to %s failed: %s', self.peer, exc)
        finally:
            self.close()

    def run_reader(self, handle: Callable[[Message], Any]) -> None:
        """Call ``handle(message)`` for every message until the connection ends.

        Returns normally when the peer closes or the link is closed here; lets
        ``ProtocolError`` and exceptions of ``handle`` propagate (after closing the link).
        """
        try:
            while not self.closed:
                try:
                    messages = self.receive()
                except (ConnectionClosed, OSError) as exc:
                    if not self.closed:
                        logger.debug('link to %s ended: %s', self.peer, exc)
                    return
                for message in messages:
                    handle(message)
                self.after_batch()
        finally:
            self.close()
            self.sock.close()

    def receive(self) -> Iterable[Message]:
        """The messages one read brings (waiting for input if none has come); raises
        ``ConnectionClosed`` or ``OSError`` once the connection has ended. ``run_reader``
        reads with it."""
        if self.inbox:  # decoded during the handshake
            messages = list(self.inbox)
            self.inbox.clear()
            return messages
        sink = self.decoder.raw_sink()
        if sink is not None:  # a chunk of a file, read straight into its own buffer
            with sink:
                count = self.sock.recv_into(sink)
            if not count:
                raise ConnectionClosed('%s closed the connection' % (self.peer,))
            return self.decoder.raw_received(count)
        return self.decoder.messages_from(self._recv())

    def after_batch(self) -> None:
        """Called after the frames of each read are handled. In a program's own thread there
        is nothing to do (threads are preempted); a daemon yields here (``HubLink``)."""

    def _recv(self) -> bytes:
        # a large frame under way (a chunk of a file) is read in few calls
        data = self.sock.recv(min(max(self.recv_size, self.decoder.missing), BULK_RECV_SIZE))
        if not data:
            raise ConnectionClosed('%s closed the connection' % (self.peer,))
        return data

    def close(self) -> None:
        """Stop both loops; the reader closes the socket on its way out."""
        if self.closed:
            return
        self.closed = True
        self.wakeup.set()
        self.drained.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _peer_name(sock: Socket) -> str:
    try:
        host, port = sock.getpeername()[:2]
        return '%s:%s' % (host, port)
    except OSError:
        return '?'


def set_nodelay(sock: socket.socket) -> None:
    """Small frames must leave at once; the writer already coalesces them."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass
