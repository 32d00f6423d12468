"""The client's read path: a real ``SchedulerConnection`` reads a link from a stand-in
scheduler on loopback, and threads wait for their jobs' ends (``JobEnd``), reading the link
themselves while no other thread does (``seat.py``), or woken by whichever thread read it.

Each test checks outcomes only: every message handled once and in order, each waiter gets
its own result, a wait says truly whether its job ended, a broken link is connected again,
and no thread is left waiting. None depends on which thread did the work, nor on how fast
anything ran: deadlines are generous bounds that only a hang reaches, and threads meet
through events, queues and barriers, never through sleeps.
"""

import logging
import queue
import random
import socket
import threading
import time

import pytest
from interrupts import Interrupter

from dispyscheduler.wire.auth import AuthenticationError, handshake
from dispyscheduler.client.connection import SchedulerConnection
from dispyscheduler.client.job import JobEnd
from dispyscheduler.wire.link import ConnectionClosed, Link
from dispyscheduler.wire import messages as m
from dispyscheduler.wire.protocol import ProtocolError, encode

SECRET = 'read-path-secret'
DEADLINE = 30.0  # seconds: only a hang or a lost wake-up takes this long


class StandInScheduler:
    """The scheduler's end of a client's links, on 127.0.0.1: it authenticates each
    connection the client makes and hands the test its socket (``next_link``)."""

    def __init__(self):
        self.listener = socket.create_server(('127.0.0.1', 0))
        self.port = self.listener.getsockname()[1]
        self.links = queue.Queue()
        self.sockets = []
        self.accepting = threading.Thread(target=self._accept, name='stand-in-scheduler',
                                          daemon=True)
        self.accepting.start()

    def _accept(self):
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:  # the listener was shut down
                return
            self.sockets.append(sock)
            link = Link(sock, 'client')
            try:
                handshake(link, SECRET, 'scheduler', 'client', initiator=False,
                          deadline=time.monotonic() + DEADLINE)
            except (OSError, ConnectionClosed, ProtocolError, AuthenticationError):
                sock.close()
                continue
            self.links.put(sock)

    def next_link(self):
        """The socket of the next link the client makes (after the handshake)."""
        return self.links.get(timeout=DEADLINE)

    def stop_listening(self):
        """Refuse every connection from now on (shutting a listener down wakes ``accept``)."""
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        self.accepting.join(DEADLINE)
        assert not self.accepting.is_alive()

    def close(self):
        self.stop_listening()
        for sock in self.sockets:
            sock.close()


class Client:
    """A ``SchedulerConnection`` as a cluster uses it, with jobs numbered 0, 1, ...: a
    ``job_end`` of uid n ends job n, its text (``exception``) standing for the result."""

    def __init__(self, scheduler, reconnect_timeout=DEADLINE):
        self.connection = SchedulerConnection(['127.0.0.1'], scheduler.port, None, None,
                                              SECRET, (None, None, None), reconnect_timeout)
        self.handled = []  # job numbers, in the order their messages were handled
        self.results = {}
        self.ends = {}
        self.ends_lock = threading.Lock()
        self.resumed_links = queue.Queue()  # each link the client connected again with
        self.lost_reasons = []
        self.connection.start(self.connection.connect(), self.handle, self.resume,
                              self.resumed, self.lost)

    def end(self, n):
        with self.ends_lock:
            if n not in self.ends:
                self.ends[n] = JobEnd(self.connection.wait_for)
            return self.ends[n]

    def handle(self, message):
        n = message.uid
        self.handled.append(n)
        self.results[n] = message.exception
        self.end(n).set()

    def resume(self, link):
        """As a cluster resumes: it reads the scheduler's reply (here, any one message)."""
        link.recv_now(time.monotonic() + DEADLINE)
        self.resumed_links.put(link)

    def resumed(self):
        pass

    def lost(self, reason):
        """Given up, as the cluster does: every job still waited for ends (abandoned)."""
        self.lost_reasons.append(reason)
        with self.ends_lock:
            ends = list(self.ends.values())
        for end in ends:
            end.set()

    def close(self):
        self.connection.close()
        assert not any(thread.is_alive() for thread in self.connection.threads)
        with self.ends_lock:  # a test that failed may have left threads waiting
            ends = list(self.ends.values())
        for end in ends:
            end.set()


@pytest.fixture
def scheduler():
    scheduler = StandInScheduler()
    yield scheduler
    scheduler.close()


@pytest.fixture
def client(scheduler):
    client = Client(scheduler)
    yield client
    client.close()


@pytest.fixture
def link(scheduler, client):
    """The stand-in scheduler's socket of the client's first link."""
    return scheduler.next_link()


def frames(*numbers):
    return b''.join(encode(m.JobEnd.failure(n, 11, 'result %d' % n)) for n in numbers)


def run_threads(target, arguments, name):
    """Run ``target(*args)`` in a thread for each of ``arguments``; wait for them all."""
    threads = [threading.Thread(target=target, args=args, name='%s-%d' % (name, index),
                                daemon=True)
               for index, args in enumerate(arguments)]
    for thread in threads:
        thread.start()
    return threads


def join_all(threads):
    deadline = time.monotonic() + DEADLINE
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    assert not [thread.name for thread in threads if thread.is_alive()]


def test_each_message_is_handled_once_and_in_order(client, link):
    link.sendall(frames(*range(10)))
    assert client.end(9).wait(DEADLINE)
    assert client.handled == list(range(10))
    assert client.results == {n: 'result %d' % n for n in range(10)}


def test_a_wait_returns_true_once_its_job_has_ended_and_false_while_it_has_not(client, link):
    assert not client.end(1).wait(0.05)
    assert not client.end(1).wait(0)
    assert not client.end(1).is_set()
    link.sendall(frames(1))
    assert client.end(1).wait(DEADLINE)
    assert client.end(1).wait(0)  # and again, without waiting
    assert client.end(1).wait()
    assert client.end(1).is_set()
    assert not client.end(2).wait(0.01)  # another job's end is not this one's


def test_a_wait_sees_a_job_that_ends_while_it_waits(client, link):
    waiting = threading.Event()
    outcome = queue.Queue()

    def wait():
        waiting.set()
        outcome.put(client.end(1).wait(DEADLINE))

    waiter = run_threads(wait, [()], 'waiter')
    assert waiting.wait(DEADLINE)
    link.sendall(frames(1))
    assert outcome.get(timeout=DEADLINE) is True
    join_all(waiter)


def test_threads_waiting_together_each_get_their_own_result(client, link):
    count = 16
    ready = threading.Barrier(count + 1, timeout=DEADLINE)
    got = {}

    def wait(n):
        ready.wait()
        if client.end(n).wait(DEADLINE):
            got[n] = client.results[n]

    waiters = run_threads(wait, [(n,) for n in range(count)], 'waiter')
    ready.wait()
    link.sendall(frames(*reversed(range(count))))  # the first to wait get theirs last
    join_all(waiters)
    assert got == {n: 'result %d' % n for n in range(count)}
    assert client.handled == list(reversed(range(count)))


def test_threads_waiting_for_the_same_job_all_see_it_end(client, link):
    """``job()`` in some threads, ``job(timeout=...)`` in a loop in others, as ``cluster.wait()``
    does: one job's end releases every one of them."""
    count = 12
    ready = threading.Barrier(count + 1, timeout=DEADLINE)
    outcomes = queue.Queue()

    def wait(timeout):
        ready.wait()
        deadline = time.monotonic() + DEADLINE
        while not client.end(1).wait(timeout) and time.monotonic() < deadline:
            pass
        outcomes.put(client.end(1).is_set())

    waiters = run_threads(wait, [((None, DEADLINE, 0.001, 0.01)[n % 4],) for n in range(count)],
                          'waiter')
    ready.wait()
    link.sendall(frames(1))
    join_all(waiters)
    assert [outcomes.get_nowait() for _ in range(count)] == [True] * count
    assert client.handled == [1]


def test_many_threads_waiting_with_timeouts_over_and_over_each_get_their_result(client, link):
    """Waits that time out again and again, in many threads, while their jobs end in an order
    of their own: no wake-up is lost, and no wait says True before its job has ended."""
    count = 24
    ready = threading.Barrier(count + 1, timeout=DEADLINE)
    outcomes = {}

    def wait(n, timeout):
        ready.wait()
        deadline = time.monotonic() + DEADLINE
        while not client.end(n).wait(timeout):
            if time.monotonic() > deadline:
                return
        outcomes[n] = (n in client.handled, client.results[n])

    waiters = run_threads(wait, [(n, (0.0005, 0.001, 0.003)[n % 3]) for n in range(count)],
                          'waiter')
    ready.wait()
    order = list(range(count))
    random.Random(7).shuffle(order)
    for n in order:
        link.sendall(frames(n))
    join_all(waiters)
    assert outcomes == {n: (True, 'result %d' % n) for n in range(count)}
    assert client.handled == order


def test_waits_coming_and_going_during_a_stream_of_2000_messages(client, link):
    """Threads wait for jobs all along a stream: some with short timeouts that end before
    their message comes, some until it comes, some after it came; every message is handled
    once, in order, and every long wait returns True with its job's result."""
    total = 2000
    started = threading.Event()
    long_waits = {}
    short_waits = []  # (n, what the wait said)
    true_too_soon = []  # waits that said True before their job's message was handled

    def send():
        started.set()
        for first in range(0, total, 10):
            link.sendall(frames(*range(first, first + 10)))

    def wait(numbers):
        for n in numbers:
            if n % 3:
                outcome = client.end(n).wait(0.001)
                short_waits.append((n, outcome))
                if outcome and n not in client.handled:
                    true_too_soon.append(n)
            else:
                long_waits[n] = (client.end(n).wait(DEADLINE), client.results.get(n))

    waiters = run_threads(wait, [(range(offset, total, 7),) for offset in range(7)],
                          'waiter')
    sender = run_threads(send, [()], 'sender')
    assert started.wait(DEADLINE)
    for n in range(0, total, 11):  # and the main thread too
        if n % 2:
            client.end(n).wait(0.002)
        else:
            assert client.end(n).wait(DEADLINE) and client.results[n] == 'result %d' % n
    join_all(sender + waiters)
    assert client.end(total - 1).wait(DEADLINE)
    assert client.handled == list(range(total))
    assert client.results == {n: 'result %d' % n for n in range(total)}
    assert long_waits == {n: (True, 'result %d' % n) for n in range(total) if n % 3 == 0}
    assert sorted(n for n, _ in short_waits) == [n for n in range(total) if n % 3]
    assert not true_too_soon


@pytest.mark.parametrize('breakage', ['closed', 'bad frame'])
def test_a_broken_link_under_waiting_threads_is_connected_again(scheduler, client, link,
                                                                 breakage, caplog):
    """The link ends under threads waiting for their jobs (the scheduler closed it, or sent a
    frame that is not the protocol): the reader thread connects again and resumes, and the
    jobs' ends that come on the new link reach the threads that wait for them."""
    caplog.set_level(logging.WARNING, logger='dispyscheduler')
    link.sendall(frames(0))
    assert client.end(0).wait(DEADLINE)
    count = 4
    ready = threading.Barrier(count + 1, timeout=DEADLINE)
    got = {}

    def wait(n):
        ready.wait()
        if client.end(n).wait(DEADLINE):
            got[n] = client.results[n]

    waiters = run_threads(wait, [(n,) for n in range(1, count + 1)], 'waiter')
    ready.wait()
    if breakage == 'closed':
        link.close()
    else:
        link.sendall(b'\x00\x00\x00\x08nonsense')
    new_link = scheduler.next_link()
    new_link.sendall(encode(m.Closed()) + frames(*range(1, count + 1)))  # the reply first
    resumed_with = client.resumed_links.get(timeout=DEADLINE)
    join_all(waiters)
    assert resumed_with is client.connection.link
    assert got == {n: 'result %d' % n for n in range(1, count + 1)}
    assert client.handled == list(range(count + 1))
    assert not client.lost_reasons
    reasons = [record.getMessage() for record in caplog.records
               if 'reconnecting' in record.getMessage()]
    if breakage == 'closed':
        assert reasons == ['connection to the scheduler was lost; reconnecting']
    else:
        assert len(reasons) == 1 and 'undecodable frame' in reasons[0]
        link.settimeout(DEADLINE)
        assert link.recv(1) == b''  # the client closed the link that went wrong


def test_no_thread_is_left_waiting_when_the_link_ends_for_good(scheduler):
    """The scheduler goes away while threads wait (some with timeouts, some without): the
    reader thread tries to connect again, gives up, and the cluster abandons the jobs; every
    waiting thread returns, and closing the connection then does not hang."""
    client = Client(scheduler, reconnect_timeout=0.5)
    try:
        first_link = scheduler.next_link()
        count = 8
        ready = threading.Barrier(count + 1, timeout=DEADLINE)
        outcomes = {}

        def wait(n):
            ready.wait()
            outcomes[n] = client.end(n).wait(None if n % 2 else DEADLINE)

        waiters = run_threads(wait, [(n,) for n in range(count)], 'waiter')
        ready.wait()
        scheduler.stop_listening()
        first_link.close()
        join_all(waiters)
        assert outcomes == {n: True for n in range(count)}  # ended: abandoned
        assert len(client.lost_reasons) == 1
        assert 'could not be reached again' in client.lost_reasons[0]
        assert client.handled == []
    finally:
        client.close()


def test_closing_the_connection_while_threads_wait_with_timeouts_does_not_hang(client, link):
    count = 8
    ready = threading.Barrier(count + 1, timeout=DEADLINE)
    outcomes = queue.Queue()

    def wait(n):
        ready.wait()
        outcomes.put(client.end(n).wait(0.2 * (n + 1)))

    waiters = run_threads(wait, [(n,) for n in range(count)], 'waiter')
    ready.wait()
    client.connection.close()
    join_all(waiters)
    assert [outcomes.get_nowait() for _ in range(count)] == [False] * count
    assert not any(thread.is_alive() for thread in client.connection.threads)


@pytest.mark.parametrize('timeout', [None, DEADLINE])
def test_ctrl_c_interrupts_a_wait(timeout):
    """Ctrl-C (SIGINT) raises KeyboardInterrupt in the main thread blocked in ``job()``'s
    wait, with a timeout or without. A watchdog ends the job after ``DEADLINE``, so a wait
    that a signal cannot interrupt fails the test (the job has ended) instead of hanging it."""
    end = JobEnd()
    watchdog = threading.Timer(DEADLINE, end.set)
    watchdog.start()
    interrupter = Interrupter(DEADLINE)
    try:
        with pytest.raises(KeyboardInterrupt):
            end.wait(timeout)
    finally:
        interrupter.stop()
        watchdog.cancel()
        watchdog.join(DEADLINE)
    assert not end.is_set()


def test_ctrl_c_in_a_wait_that_reads_the_link_leaves_every_message_handled(client, link):
    """The main thread waits for job 0 (reading the link itself, as no other thread does) and
    gets Ctrl-C: KeyboardInterrupt is raised, and the messages that come after are handled
    once each and in order, the interrupted job's included."""
    interrupter = Interrupter(DEADLINE)
    try:
        with pytest.raises(KeyboardInterrupt):
            client.end(0).wait(DEADLINE)
    finally:
        interrupter.stop()
    link.sendall(frames(*range(5)))
    assert client.end(4).wait(DEADLINE) and client.end(0).wait(DEADLINE)
    assert client.handled == list(range(5))


def test_ctrl_c_while_handling_a_message_lands_once_it_is_handled():
    """``InterruptGate``: SIGINT that comes while the main thread handles what it read raises
    KeyboardInterrupt only once the span is done, so no message is left half handled; outside
    a span it raises at once, as Python's own handler does; other threads, and a program with
    a SIGINT handler of its own, are not held back."""
    import os
    import signal

    from dispyscheduler.client.seat import InterruptGate
    try:
        assert InterruptGate.hold()
        handled = []
        os.kill(os.getpid(), signal.SIGINT)
        for n in range(1000):  # bytecodes run: a handler that was not held would act
            handled.append(n)
        assert handled == list(range(1000))
        with pytest.raises(KeyboardInterrupt):
            InterruptGate.release()
        with pytest.raises(KeyboardInterrupt):  # outside a span: at once
            os.kill(os.getpid(), signal.SIGINT)
            for n in range(1000):
                handled.append(n)
        outcome = queue.Queue()
        thread = threading.Thread(target=lambda: outcome.put(InterruptGate.hold()))
        thread.start()
        thread.join(DEADLINE)
        assert outcome.get_nowait() is False
        own = []
        signal.signal(signal.SIGINT, lambda signum, frame: own.append(signum))
        assert InterruptGate.hold() is False
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def test_messages_read_with_the_reply_to_a_resume_are_handled(scheduler):
    """The scheduler's reply to a resume and the jobs' ends after it come in one read: the
    ends, read along with the reply, are handled though nothing more comes on the link and no
    thread waits through the seat (a program that waits only for its callbacks)."""
    client = Client(scheduler)
    try:
        scheduler.next_link().close()  # the link breaks: the client connects again
        again = scheduler.next_link()
        again.sendall(encode(m.Closed()) + frames(1, 2, 3))  # the reply, then three ends
        assert client.resumed_links.get(timeout=DEADLINE)
        assert client.end(3).wait_set(DEADLINE)  # woken by the reader thread, not leading
        assert client.handled == [1, 2, 3]
    finally:
        client.close()
