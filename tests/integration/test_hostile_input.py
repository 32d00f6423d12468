"""Whatever a network sends, the daemons stay up and serve everyone else.

Every kind of bad input goes to every port (the scheduler's TCP ports for nodes and clients,
its UDP port, the nodes' UDP port; nodes listen on no TCP port) while a normal client runs 50
jobs and 600 idle connections are held open. Then the connection caps, and a fuzzer that
speaks the protocol after authenticating.
"""

import os
import random
import socket
import struct
import threading
import time

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemons import CLUSTER_SECRET, wait_for

from dispyscheduler import SharedJobCluster
from dispyscheduler.wire.auth import handshake
from dispyscheduler.wire.link import Link
from dispyscheduler.wire.messages import MESSAGES, ClusterFile, ClusterNew, ClusterOk, Closed
from dispyscheduler.wire.protocol import ProtocolError, encode, encode_raw

IDLE_SOURCES = ['127.0.0.%d' % n for n in range(10, 20)]


def square(n):
    return n * n


def frame(payload):
    return struct.pack('>I', len(payload)) + payload


BAD_STREAMS = {
    'random bytes': lambda: os.urandom(2000),
    '4 GB length prefix': lambda: b'\xff\xff\xff\xff' + os.urandom(100),
    'truncated msgpack': lambda: frame(msgpack.packb(['hello', {'version': 1}])[:6]),
    'frame cut short': lambda: struct.pack('>I', 100) + msgpack.packb(['hello', {}])[:5],
    'msgpack of the wrong shape': lambda: frame(msgpack.packb([1, 2, 3])),
    'unknown message kind': lambda: frame(msgpack.packb(['launch_missiles', {}])),
    'hello with wrong field types': lambda: frame(msgpack.packb(
        ['hello', {'version': 'one', 'role': 7, 'nonce': 'x'}])),
    'a proof before any hello': lambda: frame(msgpack.packb(['auth', {'proof': b'x' * 32}])),
    'HTTP request': lambda: b'GET / HTTP/1.1\r\nHost: scheduler\r\n\r\n',
    'TLS client hello on a plaintext port': lambda: b'\x16\x03\x01\x02\x00\x01\x00\x01\xfc',
}

BAD_DATAGRAMS = [b'', b'\x00', os.urandom(1400), os.urandom(60000),
                 b'\x00' * 32 + msgpack.packb(['ping', {'addr': 'x', 'port': 1}])]


def send_stream(port, data, source='127.0.0.4'):
    """Send ``data``, then read until the daemon closes the connection."""
    with socket.create_connection(('127.0.0.1', port), timeout=15,
                                  source_address=(source, 0)) as sock:
        try:
            sock.sendall(data)
            while sock.recv(65536):
                pass
        except (ConnectionResetError, BrokenPipeError):
            pass  # closed on us: just as good


def open_idle(port, count, sources):
    """``count`` connections that say nothing, spread over ``sources``."""
    sockets = []
    for n in range(count):
        sock = socket.socket()
        sock.bind((sources[n % len(sources)], 0))
        sock.connect(('127.0.0.1', port))
        sockets.append(sock)
    return sockets


def closed_by_peer(sock):
    """Whether the daemon closed ``sock`` (reading past its hello, without waiting)."""
    sock.setblocking(False)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True


def slow_sender(port, seconds, stop):
    """A frame header, then one byte a second (never a whole handshake)."""
    with socket.create_connection(('127.0.0.1', port), timeout=30,
                                  source_address=('127.0.0.5', 0)) as sock:
        try:
            sock.sendall(struct.pack('>I', 100))
            for _ in range(int(seconds)):
                if stop.is_set():
                    return
                sock.sendall(b'\x00')
                time.sleep(1)
        except OSError:
            pass


def test_every_kind_of_bad_input_on_every_port(daemons):
    daemons.start_scheduler()
    node = daemons.start_node('127.0.0.2')
    tcp_ports = {'node port': daemons.port, 'client port': daemons.scheduler_port}
    idle = []
    stop = threading.Event()
    slow = [threading.Thread(target=slow_sender, args=(port, 20, stop), daemon=True)
            for port in tcp_ports.values()]
    try:
        for port in tcp_ports.values():
            idle += open_idle(port, 300, IDLE_SOURCES)  # 600 in all
        for thread in slow:
            thread.start()
        with SharedJobCluster(square, **daemons.client_options()) as cluster:
            jobs = [cluster.submit(n) for n in range(50)]
            for make in BAD_STREAMS.values():
                for port in tcp_ports.values():
                    send_stream(port, make())
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                udp.bind(('127.0.0.4', 0))
                for datagram in BAD_DATAGRAMS:
                    udp.sendto(datagram, ('127.0.0.1', daemons.port))
                    udp.sendto(datagram, ('127.0.0.2', daemons.node_port))
            assert cluster.wait(timeout=60)
            assert [job.result for job in jobs] == [n * n for n in range(50)]
            # the 600 idle connections are still being held while a second round runs
            assert sum(1 for sock in idle if sock.fileno() != -1) == 600
            assert cluster.submit(12)() == 144
    finally:
        stop.set()
        for sock in idle:
            sock.close()
    assert daemons.scheduler.alive() and node.alive()
    log = daemons.scheduler.log()
    for reason in ('exceeds the limit of 4096', 'undecodable frame', 'unknown message kind',
                   'field', 'expected hello'):
        assert reason in log, reason
    # the idle and slow ones are dropped when their handshake time is up
    daemons.scheduler.wait_log('did not complete the handshake in 10 seconds', timeout=30)


def test_connection_caps_per_source_and_overall(daemons):
    """Past a cap the oldest connection still in its handshake goes, never the newcomer:
    per address, then overall."""
    daemons.start_scheduler('--max_unauthenticated', '50',
                            '--max_unauthenticated_per_source', '30')
    daemons.start_node('127.0.0.2')
    first = open_idle(daemons.scheduler_port, 30, ['127.0.0.10'])
    extra = open_idle(daemons.scheduler_port, 5, ['127.0.0.10'])
    wait_for(lambda: sum(closed_by_peer(sock) for sock in first) == 5, 5,
             'the 5 oldest from that address to be dropped')
    assert first[:5] == [sock for sock in first if closed_by_peer(sock)]
    assert not any(closed_by_peer(sock) for sock in extra)
    second = open_idle(daemons.scheduler_port, 30, ['127.0.0.11'])
    # 60 in their handshake would pass the overall cap of 50: the 10 oldest went
    wait_for(lambda: sum(closed_by_peer(sock) for sock in first) == 15, 5,
             'the 10 oldest overall to be dropped')
    assert first[:15] == [sock for sock in first if closed_by_peer(sock)]
    assert not any(closed_by_peer(sock) for sock in extra + second)
    with SharedJobCluster(square, **daemons.client_options()) as cluster:
        assert cluster.submit(3)() == 9
    for sock in first + extra + second:
        sock.close()
    assert 'dropped the oldest connection still in its handshake' in daemons.scheduler.log()
    assert 'still in their handshake' in daemons.scheduler.log()


def test_connections_that_say_nothing_lock_no_one_of_their_host_out(daemons):
    """A program on the clients' host holds 200 connections that never say a word (over the
    per-address cap of 128): a user's program on that host still gets its cluster, since the
    cap sheds the oldest silent connection, not the newcomer. It once failed with "the
    scheduler dropped the connection during the handshake"."""
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2')
    idle = open_idle(daemons.scheduler_port, 200, ['127.0.0.1'])
    try:
        for _ in range(3):
            with SharedJobCluster(square, **daemons.client_options()) as cluster:
                assert cluster.submit(5)() == 25
    finally:
        for sock in idle:
            sock.close()
    assert daemons.scheduler.alive()


@pytest.fixture(scope='module')
def scheduler_for_fuzzing(tmp_path_factory):
    from daemons import Cluster
    cluster = Cluster(tmp_path_factory.mktemp('fuzz'))
    cluster.start_scheduler()
    cluster.start_node('127.0.0.2')
    yield cluster
    cluster.stop_and_check()


def authenticated_client(cluster):
    sock = socket.create_connection(('127.0.0.1', cluster.scheduler_port), timeout=10)
    link = Link(sock, 'fuzzer')
    handshake(link, CLUSTER_SECRET, 'client', 'scheduler', True, time.monotonic() + 10)
    return link


values = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 63, 2 ** 64 - 1) | st.floats()
    | st.text(max_size=20) | st.binary(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8),
                                                                      children, max_size=4),
    max_leaves=12)


def message_for(kind):
    """A message of ``kind`` whose fields have the right names and any values."""
    return st.fixed_dictionaries({field: values for field in MESSAGES[kind]._fields}).map(
        lambda body: (kind, body))


messages = st.sampled_from(sorted(MESSAGES)).flatmap(message_for)


def new_cluster_message():
    from dispyscheduler.client.computation import pack_computation
    return ClusterNew(name='fuzz', code=pack_computation(square).code, nodes=[('*', 0)],
                      reentrant=False, cleanup=True, files=[], allocate=False)


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.booleans(), st.lists(messages, min_size=1, max_size=6))
def test_fuzzing_an_authenticated_client_link(scheduler_for_fuzzing, with_cluster, sequence):
    """After a valid handshake (and, half the time, a valid new cluster), any sequence of
    messages (right names, any values) costs the sender at most its connection; the
    scheduler keeps serving."""
    link = authenticated_client(scheduler_for_fuzzing)
    try:
        if with_cluster:
            link.send_now(new_cluster_message())
            link.expect(ClusterOk, time.monotonic() + 10)
        for kind, body in sequence:
            try:
                link.sock.sendall(encode_raw(kind, body))
            except OSError:
                break
    finally:
        link.sock.close()
    with SharedJobCluster(square, **scheduler_for_fuzzing.client_options()) as cluster:
        value = random.randrange(1000)
        assert cluster.submit(value)() == value * value
    for daemon in scheduler_for_fuzzing.daemons:
        assert daemon.alive()
        assert 'Traceback' not in daemon.log(), daemon.log()[-3000:]


def test_plaintext_client_on_a_tls_port_is_told_tls_is_required(daemons, tmp_path):
    from certs import self_signed
    cert, key = self_signed(tmp_path)
    daemons.start_scheduler('--cluster_certfile', cert, '--cluster_keyfile', key)
    started = time.monotonic()
    with pytest.raises(ConnectionError, match='TLS is required on this port'):
        SharedJobCluster(square, **daemons.client_options())
    assert time.monotonic() - started < 5
    wait_for(lambda: 'plaintext peer on a TLS port' in daemons.scheduler.log(), 5, 'the log')
    assert encode(Closed())  # the module's own encoder is what the client speaks


def test_numbers_out_of_range_stop_no_scheduler(daemons):
    """A priority of 2**63 once made the database write fail and the scheduler exit, again
    after each restart as the client sent the job again. Now the client refuses it at once,
    and a client that sends one anyway loses its own link only: every integer a message
    carries is checked against what the store can hold when it arrives."""
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2')
    with SharedJobCluster(square, **daemons.client_options()) as cluster:
        with pytest.raises(ValueError, match='dispy_job_priority must be between'):
            cluster.submit(1, dispy_job_priority=2 ** 63)
        for field, value in (('priority', 2 ** 63), ('uid', 2 ** 64 - 1),
                             ('timeout', 2 ** 63)):
            link = authenticated_client(daemons)
            try:
                link.send_now(new_cluster_message())
                link.expect(ClusterOk, time.monotonic() + 10)
                body = {'uid': 1, 'args': b'', 'files': [], 'timeout': None, 'priority': 0,
                        'node': None, 'tag': None}
                body[field] = value
                link.sock.sendall(encode_raw('submit', body))
                daemons.scheduler.wait_log("field '%s': integer %d out of range" % (field, value))
            finally:
                link.sock.close()
        assert cluster.submit(7)() == 49
    assert daemons.scheduler.alive()
    assert 'OverflowError' not in daemons.scheduler.log()


def test_a_cluster_naming_hundreds_of_hosts_is_refused_and_stalls_no_one(daemons):
    """Names in a cluster's ``nodes`` are looked up when it is created; hundreds of them (from
    12 clients at once) once held every other user's cluster creation for seconds. More than
    MAX_NODE_NAMES names are refused before any lookup (so this test asks no name service),
    with the reason, and the others go on."""
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2')
    names = ['no-such-host-%d.invalid' % n for n in range(300)]
    failures = []

    def refused_cluster():
        try:
            SharedJobCluster(square, nodes=names, **daemons.client_options())
        except ValueError as exc:
            failures.append(str(exc))

    threads = [threading.Thread(target=refused_cluster) for _ in range(12)]
    for thread in threads:
        thread.start()
    with SharedJobCluster(square, **daemons.client_options()) as cluster:
        assert cluster.submit(9)() == 81
    for thread in threads:
        thread.join(60)
    assert len(failures) == 12
    assert all('at most 32 host names are looked up' in failure for failure in failures)
    assert daemons.scheduler.alive()


def test_a_file_longer_than_announced_is_refused_at_once(daemons):
    """A cluster file announced as 1 byte once took 300 MB of the scheduler's disk in 2 s:
    only --max_file_size was checked, and it had no default. Now a file must be as long as
    announced, and --max_file_size defaults to 10 GiB."""
    daemons.start_scheduler()
    link = authenticated_client(daemons)
    try:
        link.send_now(ClusterNew(name='liar', code=b'x', nodes=[('*', 0)], reentrant=False,
                                 cleanup=True, files=[('data.bin', 1, 0o644)],
                                 allocate=False))
        chunk = b'x' * (1 << 20)
        for offset in range(0, 300 << 20, 1 << 20):
            try:
                link.send_now(ClusterFile(name='data.bin', offset=offset, data=chunk,
                                          last=False))
            except OSError:  # the scheduler closed the link: what it said comes next
                break
        with pytest.raises(ProtocolError, match='1048576 bytes sent, 1 announced'):
            link.expect(ClusterOk, time.monotonic() + 10)
    finally:
        link.sock.close()
    daemons.scheduler.wait_log("file 'data.bin': 1048576 bytes sent, 1 announced")
    staged = [name for name in os.listdir(os.path.join(daemons.directory, 'scheduler'))
              if name.startswith('incoming-')]
    assert staged == []
    assert daemons.scheduler.alive()


def test_bad_bulk_frames_cost_the_sender_its_link_only(scheduler_for_fuzzing):
    """Bulk frames (a message, then raw bytes: how chunks of files travel) that lie: data of
    their own as well, more raw bytes than any frame may have, a kind a client may not send,
    a connection that ends inside the raw bytes. Each costs that connection only; the
    scheduler keeps serving and logs no internal error."""
    from dispyscheduler.wire.protocol import BULK, BULK_HEADER
    upload = {'ref': 'a' * 32, 'name': 'f', 'size': 4, 'mode': 0o600, 'offset': 0,
              'last': True}
    bad = [
        ('upload', dict(upload, data=b'xxxx'), b'yyyy'),  # data of its own
        ('upload', upload, b'x' * (65 * 1024 * 1024)),  # raw bytes over the frame limit
        ('payload_part', {'id': 1, 'name': '_dispyscheduler_result_1.pickle', 'size': 4,
                          'offset': 0, 'last': True}, b'zzzz'),  # not a client's message
        ('upload', upload, None),  # the connection ends inside the raw bytes
    ]
    for kind, body, raw in bad:
        link = authenticated_client(scheduler_for_fuzzing)
        try:
            link.send_now(new_cluster_message())
            link.expect(ClusterOk, time.monotonic() + 10)
            payload = msgpack.packb([kind, body], use_bin_type=True)
            size = len(raw) if raw is not None else 1000
            link.sock.sendall(BULK_HEADER.pack(len(payload) | BULK, size) + payload)
            if raw is not None and len(raw) < 1024 * 1024:
                link.sock.sendall(raw)
            elif raw is None:
                link.sock.sendall(b'partial')
        except OSError:
            pass
        finally:
            link.sock.close()
    with SharedJobCluster(square, **scheduler_for_fuzzing.client_options()) as cluster:
        assert cluster.submit(7)() == 49
    for daemon in scheduler_for_fuzzing.daemons:
        assert daemon.alive()
        assert 'Traceback' not in daemon.log(), daemon.log()[-3000:]
