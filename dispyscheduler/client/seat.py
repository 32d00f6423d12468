"""Who reads the scheduler's link: a thread waiting for its job's end, or the reader thread.

A result read by the reader thread reaches the thread waiting for it through a lock, and on a
busy host that hand-off is dear: the reader thread wakes for the result, the waiting thread
wakes again to take it, and the two trade the GIL before the result is returned (measured
with the real daemons on two vCPUs: some 35 us of a 270 us round trip). So a thread that waits
for a job's end reads the link itself while it waits, if no other thread does: it *leads*,
handling every message that comes, for any job, exactly as the reader thread would, until its
own job has ended. The result then costs one wake-up, of the thread that wants it. Threads
that come to wait while another leads wait as before: the leader, or the reader thread after
it, ends their jobs.

The reader thread reads whenever no thread leads. A thread that starts leading while the
reader thread waits for input wakes it with a byte on a pipe (the only way to end its poll at
once) and takes its place. When the last leader leaves, the reader thread takes the link back
at once if other threads still wait, and otherwise once no thread has led for
``READER_RETAKE_DELAY``: a program that submits and waits for one job at a time then never
wakes it.

Who read a message never shows: every message is handled once, in order, whoever reads it. A
leader that is the main thread handles what it reads with Ctrl-C held back until the batch is
handled (``InterruptGate``), so that KeyboardInterrupt never lands half-way through a
message (a job's end taken but its waiters not woken). Only plain sockets are read this way:
a TLS connection may hold decrypted input that ``poll`` does not see, so its reader thread
reads it alone.
"""

from __future__ import annotations

import os
import select
import signal
import threading
import time
from typing import TYPE_CHECKING, Callable, Optional

from ..constants import READER_RETAKE_DELAY
from ..wire.link import ConnectionClosed, Link
from ..wire.messages import Message

if TYPE_CHECKING:
    from .job import JobEnd

Handler = Callable[[Message], None]


class ReadSeat:
    def __init__(self) -> None:
        self.token = threading.Lock()  # held by the thread reading the link
        self.state = threading.Lock()  # guards the four below
        self.leader: Optional[threading.Thread] = None  # the thread that reads while it waits
        self.waiting = 0  # threads waiting for a job's end, the leader included
        self.polling = False  # the reader thread waits for input: a new leader must wake it
        self.left_at = 0.0  # when the last leader left
        self.retake = threading.Event()  # the reader thread should read again now
        self.evict_read, self.evict_write = os.pipe()
        os.set_blocking(self.evict_read, False)

    def serve(self, link: Link, handle: Handler) -> None:
        """The reader thread's part: handle what comes on ``link`` whenever no waiting thread
        does, until the link ends (then it is closed). Exceptions of ``handle`` propagate."""
        poller = select.poll()
        poller.register(link.sock.fileno(), select.POLLIN)
        poller.register(self.evict_read, select.POLLIN)
        try:
            while not link.closed:
                self.retake.clear()
                with self.state:
                    if self.leader is None:
                        pause = 0.0 if self.waiting else \
                            self.left_at + READER_RETAKE_DELAY - time.monotonic()
                    else:
                        pause = READER_RETAKE_DELAY
                    self.polling = pause <= 0
                if pause > 0:
                    self.retake.wait(pause)
                    continue
                with self.token:
                    # messages already read (with the reply to a resume, say) come first: the
                    # socket may have nothing more to say for a long time
                    ready = [] if link.inbox else [fd for fd, _ in poller.poll()]
                    with self.state:
                        self.polling = False
                    if self.evict_read in ready:
                        self._drain()
                        continue  # a thread leads now
                    try:
                        messages = link.receive()
                    except (ConnectionClosed, OSError):
                        return
                    for message in messages:
                        handle(message)
        finally:
            link.close()
            with self.token:  # a leader still polling the socket must not see it reused
                link.sock.close()

    def wait_for(self, link: Link, finish: JobEnd, timeout: Optional[float], handle: Handler,
                 fail: Callable[[BaseException], None]) -> bool:
        """``finish.wait(timeout)``, leading if no other thread does; ``fail(exc)`` if reading
        fails (the reader thread then connects again)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        me = threading.current_thread()
        with self.state:
            self.waiting += 1
            leading = self.leader is None and not link.closed
            if leading:
                self.leader = me
                if self.polling:
                    os.write(self.evict_write, b'\0')
        try:
            if leading:
                try:
                    if self._lead(link, finish, deadline, handle, fail):
                        return True
                finally:
                    self._step_down(link)
            return finish.wait_set(None if deadline is None else
                                   max(0.0, deadline - time.monotonic()))
        finally:
            with self.state:
                self.waiting -= 1

    def _step_down(self, link: Link) -> None:
        """The leader stops reading: the reader thread reads again, at once if other threads
        wait (or the link failed and must be connected again)."""
        with self.state:
            self.leader = None
            self.left_at = time.monotonic()
            retake = self.waiting > 1 or link.closed
        if retake:
            self.retake.set()

    def _lead(self, link: Link, finish: JobEnd, deadline: Optional[float], handle: Handler,
              fail: Callable[[BaseException], None]) -> bool:
        """Read ``link`` until ``finish`` is set (True) or the deadline passes (False)."""
        with self.token:  # the reader thread gives it up at once
            poller = select.poll()
            poller.register(link.sock.fileno(), select.POLLIN)
            try:
                while not finish.is_set():
                    if not link.inbox:
                        wait = -1 if deadline is None else \
                            max(0, int((deadline - time.monotonic()) * 1000) + 1)
                        if not poller.poll(wait):
                            return finish.is_set()
                    held = InterruptGate.hold()
                    try:
                        for message in link.receive():
                            handle(message)
                    finally:
                        if held:
                            InterruptGate.release()
                return True
            except Exception as exc:  # a closed link, a bad frame, a bug: all end the link
                fail(exc)
                link.close()
                return False

    def wake_reader(self) -> None:
        """Have the reader thread read now (a program waits for something other than a job)."""
        self.retake.set()

    def close(self) -> None:
        """Once the reader thread has ended (again: nothing more)."""
        if self.evict_read >= 0:
            os.close(self.evict_read)
            os.close(self.evict_write)
            self.evict_read = self.evict_write = -1

    def _drain(self) -> None:
        try:
            while os.read(self.evict_read, 512):
                pass
        except BlockingIOError:
            pass


class InterruptGate:
    """Ctrl-C (SIGINT) held back while the main thread handles what it read, then raised.

    Swapping the SIGINT handler around every batch would cost two system calls per job (20 us
    of a 270 us round trip, measured). Instead, the first time the main thread reads, a
    handler of this module takes the place of Python's own (only if Python's own is the one
    installed): outside the held spans it does what Python's does, raising KeyboardInterrupt;
    inside one it notes the signal, and the span raises it when it ends. A program that
    installs a SIGINT handler of its own, before or after, keeps it, and is not held back."""

    holding = False
    pending = False

    @classmethod
    def on_sigint(cls, signum: int, frame: object) -> None:
        if cls.holding:
            cls.pending = True
        else:
            raise KeyboardInterrupt

    @classmethod
    def hold(cls) -> bool:
        """Hold SIGINT back (in the main thread, where Python handles signals); whether it
        is held: call ``release`` then."""
        if threading.current_thread() is not threading.main_thread():
            return False
        current = signal.getsignal(signal.SIGINT)
        if current is signal.default_int_handler:
            signal.signal(signal.SIGINT, cls.on_sigint)
        elif current != cls.on_sigint:
            return False  # the program's own handler: left to act at once
        cls.holding = True
        return True

    @classmethod
    def release(cls) -> None:
        """End the held span; a SIGINT that came meanwhile raises KeyboardInterrupt now."""
        cls.holding = False
        if cls.pending:
            cls.pending = False
            raise KeyboardInterrupt

