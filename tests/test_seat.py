"""``ReadSeat``: who reads a client's link. A thread waiting for its job's end reads the link
itself; the reader thread reads whenever no thread waits, and takes the link back after a
leader; every message is handled once, in order, whoever reads it; a broken link or a bad
frame under a leader ends the link (the reader thread then connects again)."""

import socket
import threading
import time

import pytest

from dispyscheduler.client.job import JobEnd
from dispyscheduler.client.seat import ReadSeat
from dispyscheduler.constants import READER_RETAKE_DELAY
from dispyscheduler.wire.link import ConnectionClosed, Link
from dispyscheduler.wire.messages import Submitted
from dispyscheduler.wire.protocol import ProtocolError, encode


class Client:
    """A link read as ``SchedulerConnection`` reads it: a reader thread serving the seat, and
    ``JobEnd``s that wait through the seat; message ``submitted`` with ``uids [n]`` ends job n."""

    def __init__(self):
        ours, self.peer = socket.socketpair()
        self.link = Link(ours, 'scheduler')
        self.link.authenticated()
        self.seat = ReadSeat()
        self.handled = []  # (n, name of the thread that handled it)
        self.ends = {}
        self.failures = []
        self.reader = threading.Thread(target=self.seat.serve, args=(self.link, self.handle),
                                       name='reader', daemon=True)
        self.reader.start()

    def end(self, n):
        if n not in self.ends:
            self.ends[n] = JobEnd(lambda finish, timeout: self.seat.wait_for(
                self.link, finish, timeout, self.handle, self.failures.append))
        return self.ends[n]

    def handle(self, message):
        n = message.uids[0]
        self.handled.append((n, threading.current_thread().name))
        self.end(n).set()

    def send(self, *numbers):
        self.peer.sendall(b''.join(encode(Submitted(uids=[n])) for n in numbers))

    def send_later(self, delay, *numbers):
        timer = threading.Timer(delay, self.send, numbers)
        timer.start()
        return timer

    def handled_by(self, n, timeout=5.0):
        """The thread that handled message n (waiting for it to be handled)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for number, thread in list(self.handled):
                if number == n:
                    return thread
            time.sleep(0.001)
        return None

    def close(self):
        self.link.close()
        self.seat.wake_reader()
        self.reader.join(5)
        assert not self.reader.is_alive()
        self.seat.close()
        self.peer.close()


@pytest.fixture
def client():
    client = Client()
    yield client
    client.close()


def test_the_reader_thread_reads_while_no_thread_waits(client):
    client.send(1)
    assert client.handled_by(1) == 'reader'


def test_a_waiting_thread_reads_its_own_result_then_the_reader_thread_takes_over(client):
    client.send(1)
    assert client.handled_by(1) == 'reader'  # the reader thread waits for input now
    client.send_later(0.05, 2)
    assert client.end(2).wait(5)
    assert client.handled_by(2) == threading.current_thread().name
    time.sleep(2 * READER_RETAKE_DELAY)
    client.send(3)
    assert client.handled_by(3) == 'reader'
    assert not client.failures


def test_a_leader_handles_every_message_that_comes_while_it_waits(client):
    client.send_later(0.05, 5, 6, 7)
    assert client.end(7).wait(5)
    assert [n for n, _ in client.handled] == [5, 6, 7]
    assert {thread for _, thread in client.handled} == {threading.current_thread().name}


def test_a_wait_that_times_out_leaves_the_link_to_the_reader_thread(client):
    started = time.monotonic()
    assert not client.end(1).wait(0.05)
    assert 0.04 < time.monotonic() - started < 2
    client.send(1)
    assert client.handled_by(1) == 'reader'
    assert client.end(1).wait(0)


def test_threads_waiting_together_each_get_their_result_once_and_in_order(client):
    results = {}

    def wait(n):
        results[n] = client.end(n).wait(10)

    waiters = [threading.Thread(target=wait, args=(n,), name='waiter-%d' % n)
               for n in range(8)]
    for thread in waiters:
        thread.start()
    for n in reversed(range(8)):  # the first threads to wait get their results last
        client.send(n)
        time.sleep(0.01)
    for thread in waiters:
        thread.join(10)
    assert results == {n: True for n in range(8)}
    assert [n for n, _ in client.handled] == list(reversed(range(8)))


def test_many_messages_with_waits_coming_and_going_are_each_handled_once_in_order(client):
    sender = threading.Thread(target=lambda: [client.send(n) or time.sleep(0.0002)
                                              for n in range(2000)])
    sender.start()
    for n in range(0, 2000, 7):  # waits that lead, time out, or find their job ended
        client.end(n).wait(0.002 if n % 3 else 5)
    sender.join(30)
    assert client.end(1999).wait(10)
    assert [n for n, _ in client.handled] == list(range(2000))
    assert not client.failures


def test_the_link_closing_under_a_leader_ends_it_for_the_reader_thread(client):
    timer = threading.Timer(0.05, client.peer.close)
    timer.start()
    assert not client.end(1).wait(0.5)
    assert client.link.closed
    assert len(client.failures) == 1 and isinstance(client.failures[0], ConnectionClosed)
    client.reader.join(5)
    assert not client.reader.is_alive()  # SchedulerConnection connects again from here


def test_a_bad_frame_under_a_leader_ends_the_link(client):
    timer = threading.Timer(0.05, client.peer.sendall, [b'\x00\x00\x00\x08nonsense'])
    timer.start()
    assert not client.end(1).wait(0.5)
    assert client.link.closed
    assert len(client.failures) == 1 and isinstance(client.failures[0], ProtocolError)
