"""The client's connection to its scheduler, kept up for as long as the cluster lives.

A thread waiting for a job's end reads the link itself when no other thread does, and the
reader thread reads it the rest of the time (``seat.py``): every message is handled once, in
the order it came, whoever reads it.

When the link breaks (the scheduler restarted, the network dropped) the reader thread
reconnects with back-off, resumes the cluster with its credential and lets the cluster send
again what the scheduler had not acknowledged; the user's program sees only a delay. It gives
up after ``reconnect_timeout`` seconds, or at once if the scheduler no longer knows the
cluster or refuses the secret.
"""

import logging
import socket
import threading
import time
from typing import Callable, List, Optional, Sequence, Tuple

from ..wire.auth import AUTH_FAILED, AuthenticationError, handshake
from ..wire.backoff import Backoff
from ..constants import CONNECT_TIMEOUT, HANDSHAKE_TIMEOUT
from ..wire.link import ConnectionClosed, Link, Socket, set_nodelay
from ..wire.messages import Message
from ..wire.protocol import ProtocolError
from .job import JobEnd
from .seat import ReadSeat

logger = logging.getLogger('dispyscheduler')


class Refused(Exception):
    """The scheduler answered, and said no: reconnecting cannot help."""


class HandshakeDropped(ConnectionError):
    """The scheduler closed the connection before the handshake was done."""


Handler = Callable[[Message], None]
"""``handle(message)``: what the cluster does with one message from the scheduler."""


class SchedulerConnection:
    def __init__(self, hosts: Sequence[str], port: int, ip_addr: Optional[str],
                 local_port: Optional[int], secret: str,
                 tls_files: Tuple[Optional[str], Optional[str], Optional[str]],
                 reconnect_timeout: float) -> None:
        self.hosts = hosts
        self.port = port
        self.source = (ip_addr or '', local_port) if ip_addr or local_port else None
        self.secret = secret
        self.tls_files = tls_files
        self.reconnect_timeout = reconnect_timeout
        self.host: Optional[str] = None  # the one of ``hosts`` that answered
        self.link: Optional[Link] = None
        self.closing = False
        self.threads: List[threading.Thread] = []
        self.seat = ReadSeat()
        self.failure: Optional[BaseException] = None  # why a waiting thread's read failed
        # a TLS connection may hold decrypted input that poll() does not see: only the
        # reader thread reads it
        self.shared_reading = not any(tls_files)

    def connect(self) -> Link:
        """A new authenticated link; raises with a message that says what went wrong. A
        handshake the scheduler drops (it sheds the oldest of many connections still in their
        handshake from one address, which a user's may be when another program floods it)
        is tried again, with back-off, for up to ``CONNECT_TIMEOUT``."""
        deadline = time.monotonic() + CONNECT_TIMEOUT
        backoff = Backoff(0.05, 1.0)
        while True:
            try:
                return self.connect_once()
            except HandshakeDropped:
                delay = backoff.next_delay()
                if time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)

    def connect_once(self) -> Link:
        errors = []
        sock: Socket  # TLS, when configured, wraps the plain socket
        for host in self.hosts:
            try:
                sock = socket.create_connection((host, self.port), CONNECT_TIMEOUT, self.source)
                break
            except OSError as exc:
                errors.append('%s:%s: %s' % (host, self.port, exc))
        else:
            raise ConnectionError('cannot reach the scheduler (%s)' % '; '.join(errors))
        set_nodelay(sock)
        self.host = host
        where = '%s:%s' % (host, self.port)
        deadline = time.monotonic() + HANDSHAKE_TIMEOUT
        try:
            if any(self.tls_files):
                from ..wire.tls import TLSSocket, make_context
                sock = TLSSocket(sock, make_context(*self.tls_files), server_side=False)
                sock.settimeout(HANDSHAKE_TIMEOUT)
                sock.do_handshake()
            sock.settimeout(None)
            link = Link(sock, where)
            link.direct = True
            handshake(link, self.secret, 'client', 'scheduler', initiator=True,
                      deadline=deadline)
            return link
        except ProtocolError as exc:  # the scheduler refused us (TLS required, say)
            sock.close()
            raise ConnectionError('the scheduler at %s %s' % (where, exc)) from None
        except AuthenticationError:
            sock.close()
            raise AuthenticationError(
                '%s: the scheduler at %s did not accept this cluster\'s secret (it must be the '
                "scheduler's --cluster_secret)" % (AUTH_FAILED, where)) from None
        except (ConnectionClosed, ConnectionResetError, BrokenPipeError) as exc:
            sock.close()
            raise HandshakeDropped('the scheduler at %s dropped the connection during the '
                                   'handshake (%s)%s' % (where, exc, '; does it use TLS on this '
                                                         'port?' if any(self.tls_files) else
                                                         '')) from None
        except BaseException:
            sock.close()
            raise

    def start(self, link: Link, handle: Handler, resume: Callable[[Link], object],
              resumed: Callable[[], None], lost: Callable[[str], None]) -> None:
        """Serve ``link``: ``handle(message)`` for each message; after a reconnect,
        ``resume(link)`` re-attaches the cluster (raising ``Refused`` if it cannot) and
        ``resumed()`` follows; ``lost(reason)`` when the connection is given up."""
        self.handle, self.resume, self.resumed, self.lost = handle, resume, resumed, lost
        self.link = link
        self.start_writer(link)
        reader = threading.Thread(target=self.read_loop, daemon=True,
                                  name='dispyscheduler-reader')
        self.threads.append(reader)
        reader.start()

    def start_writer(self, link: Link) -> None:
        writer = threading.Thread(target=link.run_writer, daemon=True,
                                  name='dispyscheduler-writer')
        self.threads.append(writer)
        writer.start()

    def send(self, message: Message, *more: Message) -> bool:
        """Queue a message (and ``more``, in one write); False if it could not be (the link
        is down: it is reconnecting, or given up)."""
        link = self.link
        return link is not None and link.send(message, *more)

    def send_bulk(self, message: Message, data: bytes | memoryview) -> bool:
        """``message`` with ``data`` (a chunk of a large value) as a bulk frame, once what
        was sent before has left (``Link.send_bulk``): a large value goes a chunk at a time,
        never copied into a frame."""
        link = self.link
        return link is not None and link.send_bulk(message, data)

    def wait_for(self, finish: JobEnd, timeout: Optional[float]) -> bool:
        """``finish.wait(timeout)`` for a job of this cluster, reading the link meanwhile
        when no other thread does."""
        link = self.link
        if link is None or self.closing or not self.shared_reading:
            return finish.wait_set(timeout)
        return self.seat.wait_for(link, finish, timeout, self.handle, self.read_failed)

    def read_failed(self, exc: BaseException) -> None:
        """A thread waiting for a job could not read the link: the reader thread connects
        again, and says why the link ended when that was not the scheduler closing it, as it
        does when it fails to read itself."""
        if not isinstance(exc, (ConnectionClosed, OSError)):
            logger.error('reading from the scheduler failed: %r', exc)
            self.failure = exc

    def wake_reader(self) -> None:
        """Something other than a job's end is awaited: the reader thread reads now."""
        self.seat.wake_reader()

    def read_loop(self) -> None:
        """The reader thread: handle every message of the link, and when the link ends,
        connect again (unless closing) and go on with the new one."""
        link = self.link
        assert link is not None  # ``start`` set it
        while True:
            try:
                if self.shared_reading:
                    self.seat.serve(link, self.handle)
                else:
                    link.run_reader(self.handle)
                failure, self.failure = self.failure, None
                reason = ('connection to the scheduler failed: %s' % (failure,) if failure
                          else 'connection to the scheduler was lost')
            except Exception as exc:  # a bug or a bad frame must not leave jobs waiting
                logger.exception('reading from the scheduler failed')
                reason = 'connection to the scheduler failed: %s' % (exc,)
            if self.closing:
                return
            link = self.reconnect(reason)
            if link is None:
                return

    def reconnect(self, reason: str) -> Optional[Link]:
        """Connect again and resume; the new link, or None once given up (after ``lost``)."""
        logger.warning('%s; reconnecting', reason)
        deadline = time.monotonic() + self.reconnect_timeout
        backoff = Backoff()
        while not self.closing:
            try:
                link = self.connect()
                try:
                    self.resume(link)
                except BaseException:
                    link.sock.close()
                    raise
            except (Refused, AuthenticationError) as exc:
                self.lost('%s, and resuming the cluster failed: %s' % (reason, exc))
                return None
            except (OSError, ProtocolError) as exc:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.lost('%s, and the scheduler could not be reached again in %g '
                              'seconds: %s' % (reason, self.reconnect_timeout, exc))
                    return None
                time.sleep(min(backoff.next_delay(), remaining))
                continue
            logger.warning('reconnected to the scheduler')
            self.link = link
            self.start_writer(link)
            self.resumed()
            return link
        return None

    def close(self) -> None:
        """End the link and let the reader and writer threads end (closing the link wakes
        the reader thread, and it does not connect again)."""
        self.closing = True
        if self.link is not None:
            self.link.close()
        self.seat.wake_reader()
        for thread in self.threads:
            if thread is not threading.current_thread():
                thread.join(5)
        if not any(thread.is_alive() for thread in self.threads):
            self.seat.close()
