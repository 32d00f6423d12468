"""The daemons' kind of ``Link``: frames leave from the hub, without waking the writer.

Waking a link's writer greenlet for every message costs a switch, an event and a lock on each
side of each hop, and on a one-job-at-a-time path every hop pays it. A ``HubLink`` instead
writes the first frame queued since its last write at once, from the sender's greenlet, and
asks the hub to flush the frames queued after it once that greenlet yields (a hub callback,
so what one handler, or one batch of handlers, sends after its first frame still leaves in
one write). No write ever waits: whatever the socket does not take at once (a slow peer, a
full buffer, a TLS socket, which cannot write partially) goes to the writer greenlet as
before, so no handler and no hub callback ever blocks on a peer.
"""

from __future__ import annotations

import logging
import os
import select
from typing import Any, Callable

import gevent
import gevent.socket
from gevent.monkey import get_original

from ..constants import FILE_CHUNK_SIZE
from ..wire.files import chunks_of
from ..wire.link import Link, Socket
from ..wire.messages import Message
from ..wire.protocol import encode, encode_bulk

logger = logging.getLogger(__name__)

poll = get_original('select', 'poll')  # the system's: only ever asked with a zero timeout


class HubLink(Link):
    """A ``Link`` in a gevent daemon; use it exactly like a ``Link``."""

    def __init__(self, sock: Socket, peer: str | None = None, **options: Any) -> None:
        super().__init__(sock, peer, **options)
        self.flush_pending = False
        # a TLS socket or a wrapper cannot be written partially without waiting
        self.nonblocking = isinstance(sock, gevent.socket.socket)
        # for a TLS socket, which may hold decrypted data, always yield
        self.readable: select.poll | None = None
        if self.nonblocking:
            self.readable = poll()
            self.readable.register(sock.fileno(), select.POLLIN)
        self.loop = gevent.get_hub().loop

    def send_now(self, message: Message) -> None:
        """As ``Link.send_now``; a frame the socket takes at once (most) skips gevent's
        ``sendall``, which asks the kernel for the socket's buffer size on every call."""
        frame = encode(message)
        sent = self.send_nowait(frame)
        if sent < len(frame):
            self.sock.sendall(memoryview(frame)[sent:])

    def after_batch(self) -> None:
        """One busy peer must not starve the others: when more is waiting to be read (the next
        read would not yield), let the other greenlets run first. When nothing is, the next
        read waits in the hub anyway, and the flush runs then (yielding here would cost two
        greenlet switches for nothing)."""
        if self.readable is None or self.readable.poll(0):
            gevent.sleep(0)

    def wake_writer(self) -> None:
        if self.flush_pending:  # joins the frames already waiting for the flush
            return
        if len(self.outbox) == 1:  # the first since the last flush leaves at once
            self.flush()
        self.flush_pending = True  # those that follow before the sender yields, together
        self.loop.run_callback(self.flush)

    def flush(self) -> None:
        """Send what is queued, as far as the socket takes it without waiting; the writer
        greenlet sends the rest."""
        self.flush_pending = False
        if self.closed or not self.outbox:
            return
        if not self.nonblocking or self.sending.locked():  # the writer owns the socket now
            super().wake_writer()
            return
        data = b''.join(self.outbox) if len(self.outbox) > 1 else self.outbox[0]
        self.outbox.clear()
        try:
            sent = self.send_nowait(data)
        except OSError as exc:
            logger.debug('send to %s failed: %s', self.peer, exc)
            self.close()
            return
        if sent < len(data):
            self.outbox.appendleft(data[sent:])
            super().wake_writer()
        else:
            self.drained.set()

    def send_file(self, path: str, make: Callable[[int, bytes, bool, int], Message],
                  chunk_size: int = FILE_CHUNK_SIZE) -> bool:
        """The file at ``path`` as messages ``make(offset, data, last, size)``, one per
        chunk, each once the one before has left (flow control); False if the link closed
        on the way. On a plain socket each chunk goes as a bulk frame whose bytes pass from
        the file to the socket in the kernel (``os.sendfile``); through TLS, as a message.
        ``OSError`` if the file cannot be read (the link is closed if it was cut mid-frame)."""
        with open(path, 'rb') as handle:
            fd = handle.fileno()
            size = os.fstat(fd).st_size
            if not self.nonblocking:
                return self.send_stream(make(offset, data, last, size)
                                        for offset, data, last in chunks_of(handle, chunk_size))
            offset = 0
            while True:
                count = min(chunk_size, size - offset)
                last = offset + count >= size
                if not self.send_region(encode_bulk(make(offset, b'', last, size), count), fd,
                                        offset, count):
                    return False
                offset += count
                if last:
                    return True

    def send_region(self, head: bytes, fd: int, offset: int, count: int) -> bool:
        """``head`` then ``count`` bytes of file ``fd`` from ``offset`` (``send_exclusive``);
        False if the link is closed. ``OSError`` if the file ended early (the frame promised
        more: the link is closed)."""
        left = [count]

        def from_file() -> None:
            out, position = self.sock.fileno(), offset
            while left[0]:
                try:
                    sent = os.sendfile(out, fd, position, left[0])
                except BlockingIOError:
                    gevent.socket.wait_write(out)
                    continue
                if not sent:
                    return
                position += sent
                left[0] -= sent

        if not self.send_exclusive(head, from_file):
            return False
        if left[0]:
            self.close()
            raise OSError('file ended %d bytes early' % (left[0],))
        return True

    def send_nowait(self, data: bytes) -> int:
        """How much of ``data`` the socket takes without waiting for the peer (a TLS socket:
        none); raises ``OSError`` if the connection is broken."""
        if not self.nonblocking:
            return 0
        try:
            # timeout 0: never waits. A gevent socket (``nonblocking``), whose send takes a
            # timeout: its stubs give it the stdlib's send, and a TLSSocket has none
            return self.sock.send(data, 0, 0.0)  # type: ignore[union-attr,call-arg]
        except BlockingIOError:
            return 0
