"""Faults that must not spread: a peer dying at a bad moment, odd datagrams, oversized frames,
a computation's setup process dying, callbacks that wait. Real daemons on loopback."""

import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

from daemons import CLUSTER_SECRET, NODE_SECRET, REPO, processes, wait_for

from dispyscheduler import DispyJob, SharedJobCluster
from dispyscheduler.wire.auth import sign_datagram
from dispyscheduler.wire.messages import Announce, Ping


def nap(seconds, tag=None):
    time.sleep(seconds)
    return tag


def big_result(size):
    return b'x' * size


def test_client_killed_mid_run_disturbs_no_one(daemons, tmp_path):
    """A client killed while its results are in flight: the nodes stay, other clients' jobs
    (not reentrant) finish; once its jobs are done, its computation's processes leave the
    nodes after IDLE_ORPHAN_PULSES pulses (10 s here), not after the zombie interval (an
    hour), as they once did."""
    daemons.start_scheduler()
    nodes = [daemons.start_node('127.0.0.2'), daemons.start_node('127.0.0.3')]
    victim = subprocess.Popen(
        [sys.executable, os.path.join(REPO, 'tests', 'integration', 'client_program.py'),
         str(daemons.scheduler_port), CLUSTER_SECRET, '5000', '0'],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ,
                                                                    PYTHONPATH=REPO))
    try:
        with SharedJobCluster(nap, **daemons.client_options()) as cluster:
            jobs = [cluster.submit(0.01, n) for n in range(200)]
            time.sleep(1)
            victim.kill()
            assert cluster.wait(timeout=60)
            assert [job.result for job in jobs] == list(range(200))
            # the victim's computation leaves the nodes; this cluster's stays
            wait_for(lambda: all(len(setup_processes(node.pid)) == 1 for node in nodes), 90,
                     "the killed client's computation to leave the nodes")
            assert cluster.submit(0, 'still here')() == 'still here'
    finally:
        victim.kill()
        victim.wait()
    assert 'lost' not in daemons.scheduler.log()
    daemons.scheduler.wait_log('client gone for .* seconds with nothing left to run; freeing')


def test_odd_datagrams_stop_no_daemon(daemons):
    daemons.start_scheduler()
    node = daemons.start_node('127.0.0.2', scheduler=None)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(('127.0.0.4', 0))
        for body in ({'port': 70000}, {'port': -1}, {'port': 0}):
            sock.sendto(sign_datagram(NODE_SECRET, Announce(**body)),
                        ('127.0.0.1', daemons.port))
        for body in ({'addr': 'a' * 100, 'port': 1}, {'addr': '127.0.0.1', 'port': 70000},
                     {'addr': '::1', 'port': 5}):
            sock.sendto(sign_datagram(NODE_SECRET, Ping(**body)),
                        ('127.0.0.2', daemons.node_port))
        sock.sendto(b'\x00' * 40, ('127.0.0.1', daemons.port))
    time.sleep(1)
    assert daemons.scheduler.alive() and node.alive()
    with SharedJobCluster(nap, **daemons.client_options()) as cluster:
        assert cluster.submit(0, 'still here')() == 'still here'


def test_unauthenticated_peer_cannot_announce_a_big_frame(daemons):
    """Before authentication a frame may be a few KB: a 64 MB hello is refused at its header,
    so a stranger cannot make the scheduler hold memory for it."""
    daemons.start_scheduler()
    for port in (daemons.port, daemons.scheduler_port):
        with socket.create_connection(('127.0.0.1', port), timeout=5) as sock:
            sock.sendall(struct.pack('>I', 64 * 1024 * 1024 - 1) + b'\x92')
            sock.settimeout(5)
            data = sock.recv(65536)  # the scheduler's hello, then the close
            while data:
                data = sock.recv(65536)
    daemons.scheduler.wait_log('exceeds the limit of 4096')
    assert daemons.scheduler.alive()


def test_a_result_larger_than_a_frame_arrives_whole(daemons):
    """A result larger than the frame limit (which once ended such a job Terminated) travels
    on its own, in chunks; small results pass meanwhile."""
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2')
    with SharedJobCluster(big_result, **daemons.client_options()) as cluster:
        huge = cluster.submit(70 * 1024 * 1024)
        fine = cluster.submit(10)
        assert fine() == b'x' * 10
        assert huge() == b'x' * (70 * 1024 * 1024), (huge.status, huge.exception)
        assert cluster.submit(5)() == b'xxxxx'


def setup_processes(node_pid):
    """PIDs of the computations' setup processes a node daemon started."""
    return [pid for pid, _, ppid, _, cmdline in processes()
            if ppid == node_pid and b'dispyscheduler.node.runner' in cmdline]


def test_computation_setup_process_dying_moves_unstarted_jobs_elsewhere(daemons):
    daemons.start_scheduler()
    doomed = daemons.start_node('127.0.0.2', cpus=1)
    with SharedJobCluster(nap, nodes=['127.0.0.2', '127.0.0.3'],
                          **daemons.client_options()) as cluster:
        first = cluster.submit(30, 'first')
        wait_for(lambda: first.status == DispyJob.Running, 20, 'the first job to run')
        rest = [cluster.submit(0.1, n) for n in range(5)]
        daemons.start_node('127.0.0.3', cpus=1)
        setups = setup_processes(doomed.pid)
        assert len(setups) == 1
        os.kill(setups[0], signal.SIGKILL)
        first()
        assert first.status == DispyJob.Terminated
        assert "the computation's setup process exited" in first.exception
        assert cluster.wait(timeout=30)
    assert [job.result for job in rest] == list(range(5))
    # node .2's only CPU ran 'first' until its setup process died: the rest all ran on .3
    assert {job.ip_addr for job in rest} == {'127.0.0.3'}
    daemons.scheduler.wait_log('could not be set up on node 127.0.0.2')


def test_scheduler_gone_for_good_abandons_jobs_and_submit_raises(daemons):
    """The client retries for ``reconnect_timeout`` seconds, then gives up with a reason."""
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2')
    cluster = SharedJobCluster(nap, reconnect_timeout=2, **daemons.client_options())
    try:
        job = cluster.submit(30, 'never')
        wait_for(lambda: job.status == DispyJob.Running, 20, 'the job to run')
        daemons.scheduler.stop()
        stopped = time.monotonic()
        job()
        assert 1.5 < time.monotonic() - stopped < 10
        assert job.status == DispyJob.Abandoned
        assert 'could not be reached again in 2 seconds' in job.exception
        with pytest.raises(ConnectionError):
            cluster.submit(0, 'late')
        assert cluster.wait(timeout=5)
    finally:
        cluster.close()


def test_callback_may_wait_and_a_slow_callback_does_not_break_wait_timeout(daemons):
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2')
    waited = threading.Event()
    holder = {}

    def callback(job):
        if job.status == DispyJob.Finished and job.result == 'waits':
            holder['cluster'].wait()  # from a callback: must not wait for itself
            waited.set()
        elif job.status == DispyJob.Finished and job.result == 'slow':
            time.sleep(3)

    with SharedJobCluster(nap, callback=callback, **daemons.client_options()) as cluster:
        holder['cluster'] = cluster
        cluster.submit(0, 'waits')()
        assert waited.wait(10)
        cluster.submit(0, 'slow')()
        started = time.monotonic()
        assert cluster.wait(timeout=0.5) is False
        assert time.monotonic() - started < 2
        assert cluster.wait(timeout=10) is True


def test_a_client_that_resets_during_setup_is_no_internal_error(daemons):
    """A client announces a file, sends one it did not announce, and resets at once: the
    scheduler refuses it without an internal error (telling a peer that is gone why it was
    refused once raised BrokenPipeError there)."""
    from dispyscheduler.client.computation import pack_computation
    from dispyscheduler.wire.auth import handshake
    from dispyscheduler.wire.link import Link
    from dispyscheduler.wire.messages import ClusterFile, ClusterNew
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2')
    for _ in range(5):
        sock = socket.create_connection(('127.0.0.1', daemons.scheduler_port), timeout=10)
        link = Link(sock, 'resetter')
        handshake(link, CLUSTER_SECRET, 'client', 'scheduler', True, time.monotonic() + 10)
        link.send_now(ClusterNew(name='reset', code=pack_computation(nap).code,
                                 nodes=[('*', 0)], reentrant=False, cleanup=True,
                                 files=[('data.txt', 4, 0o600)], allocate=False))
        link.send_now(ClusterFile(name='other.txt', offset=0, data=b'data', last=True))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
        sock.close()  # a reset, not a close
    # refused after reading the file it did not announce, or as the reset came first
    daemons.scheduler.wait_log(r"(file 'other.txt' was not announced|dropped client "
                               r"connection from 127.0.0.1: .*reset)(.|\n)*" * 5)
    with SharedJobCluster(nap, **daemons.client_options()) as cluster:
        assert cluster.submit(0, 'fine')() == 'fine'
    # the harness fails the test if the scheduler logged an internal error


def test_job_files_that_cannot_be_written_end_the_job_saying_so(daemons):
    """Files ``a`` and ``a/b`` for one job: the second cannot be written (a file is in the
    way), and the job ends Terminated saying that, not that its worker process died."""
    from dispyscheduler.wire.messages import Submit
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2')
    with SharedJobCluster(nap, **daemons.client_options()) as cluster:
        job = DispyJob((), {})
        job._uid = job.id = 10 ** 6
        cluster._jobs[job._uid] = job
        cluster._connection.send(Submit(uid=job._uid, args=b'', timeout=None, priority=0,
                                        node=None, tag=None,
                                        files=[('a', b'x', 0o600), ('a/b', b'y', 0o600)]))
        job()
        assert job.status == DispyJob.Terminated
        assert "cannot write 'a/b'" in job.exception, job.exception
        assert 'died' not in job.exception
        assert cluster.submit(0, 'still here')() == 'still here'


def chatty(seconds):
    import time
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        dispy_provisional_result('still going')  # noqa: F821 - a node gives it to jobs
        time.sleep(0.01)
    return 'done'


def test_a_node_killed_leaves_no_traceback_from_its_computations_processes(daemons):
    """kill -9 of a node daemon alone while its jobs send provisional results: the processes
    of its computation (the setup process, the worker processes) see their link end and exit
    quietly, without a traceback in the node's log (their stderr), and none is left behind."""
    daemons.start_scheduler()
    node = daemons.start_node('127.0.0.2')
    with SharedJobCluster(chatty, **daemons.client_options()) as cluster:
        jobs = [cluster.submit(30) for _ in range(2)]
        wait_for(lambda: all(job.status == DispyJob.ProvisionalResult for job in jobs), 30,
                 'both jobs to send provisional results')
        os.kill(node.pid, signal.SIGKILL)
        node.process.wait()
        wait_for(lambda: not any(pid for pid, state, _, sid, _ in processes()
                                 if sid == node.pid and state != 'Z'), 30,
                 "the node's processes to exit")
        cluster.close(terminate=True)
    assert 'Traceback' not in node.log(), node.log()[-3000:]


def finish_when_released(directory):
    import os
    import time
    while not os.path.exists(os.path.join(directory, 'release')):
        time.sleep(0.01)
    open(os.path.join(directory, 'done'), 'w').close()
    return 'finished'


def unread_bytes(local_ip, remote_port):
    """Bytes waiting unread in the receive queue of the connection from ``local_ip`` to
    127.0.0.1:``remote_port`` (from /proc/net/tcp)."""
    local = ''.join('%02X' % int(part) for part in reversed(local_ip.split('.')))
    remote = '0100007F:%04X' % remote_port
    with open('/proc/net/tcp') as handle:
        for line in handle.readlines()[1:]:
            fields = line.split()
            if fields[1].startswith(local + ':') and fields[2] == remote:
                return int(fields[4].split(':')[1], 16)
    return 0


def test_a_cancel_that_comes_after_the_job_finished_ends_no_other_job(daemons, tmp_path):
    """Found by the chaos soak: a job cancelled just after its worker process replied had that
    worker killed; the node then gave the next job to the dead worker and reported it
    Terminated ("killed by signal 9"), a job nobody cancelled."""
    daemons.start_scheduler()
    node = daemons.start_node('127.0.0.2', cpus=1)
    with SharedJobCluster(finish_when_released, **daemons.client_options()) as cluster:
        first = cluster.submit(str(tmp_path))
        wait_for(lambda: first.status == DispyJob.Running, 30, 'the first job to run')
        second = cluster.submit(str(tmp_path / 'ready'))  # queued behind it, on the node
        (tmp_path / 'ready').mkdir()
        (tmp_path / 'ready' / 'release').touch()
        os.kill(node.pid, signal.SIGSTOP)  # the daemon only: its worker process goes on
        try:
            (tmp_path / 'release').touch()
            wait_for(lambda: (tmp_path / 'done').exists(), 30, 'the first job to finish')
            assert cluster.cancel(first) == 0  # its reply waits, unread, at the node
            wait_for(lambda: unread_bytes('127.0.0.2', daemons.port) > 0, 30,
                     'the cancel to reach the frozen node')
        finally:
            os.kill(node.pid, signal.SIGCONT)
        assert second(timeout=60) == 'finished', (second.status, second.exception)
        assert first.status in (DispyJob.Finished, DispyJob.Cancelled)
