"""Results of any size (issue 18, second part): a result (or provisional result) whose pickle
is larger than 1 MiB no longer travels in the message that reports it. The worker process
writes it to a file, the node streams it to the scheduler a chunk at a time, the scheduler
keeps it as a durable file until the client has it and streams it on; each party removes its
copy once the next has it. Real daemons on loopback; each test is a user's program and checks
what the user sees, and what the daemons did from the outside (files, /proc).
"""

import collections
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile

import pytest

from daemons import CLUSTER_SECRET, REPO, wait_for
from test_large_values import (DEADLINE, MB, NODES, fill_disk, freeze, mount_tmpfs,
                               node_directory, proc_status, scheduler_directory, size_of,
                               restart_and_collect, start_program, unmount,
                               wait_until)

from dispyscheduler import DispyJob, JobCluster, SharedJobCluster

PAYLOAD_PREFIXES = ('_dispyscheduler_result_', '_dispyscheduler_provisional_')


# what the jobs run (on the nodes)

def pattern(size, seed=0):
    """``size`` bytes that both sides can make and check, without sending them."""
    import hashlib
    block = hashlib.sha256(b'%d' % seed).digest() * 32768  # 1 MiB
    return (block * (size // len(block) + 1))[:size]


def make(size, seed=0):
    return pattern(size, seed)


def with_provisional_results(count, size):
    """Send ``count`` provisional results of ``size`` bytes, then return one more."""
    for seed in range(count):
        dispy_provisional_result(pattern(size, seed))  # noqa: F821 (a node global)
    return pattern(size, count)


# what the tests look at

def payload_files(*directories):
    """Files of large results (the worker's, the scheduler's, the client's) anywhere under
    ``directories``."""
    found = []
    for directory in directories:
        for root, _, names in os.walk(directory):
            found += [os.path.join(root, name) for name in names
                      if any(prefix in name for prefix in PAYLOAD_PREFIXES)]
    return found


def digest(data):
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def client_tmp(tmp_path, monkeypatch):
    """The client's temporary directory (where large results arrive), to look into."""
    directory = tmp_path / 'client-tmp'
    directory.mkdir()
    monkeypatch.setattr(tempfile, 'tempdir', str(directory))
    return directory


def all_directories(daemons, client_tmp):
    return ([scheduler_directory(daemons), str(client_tmp)]
            + [node_directory(daemons, ip) for ip in NODES])


# 1

def test_a_200_mb_result_reaches_the_client_intact(daemons, client_tmp):
    """A job returning 200 MB: the client gets every byte; neither the scheduler nor the node
    daemon ever holds much of it (peak resident size, VmHWM, under 300 MB each: they pass it
    on a chunk at a time); once it is delivered no copy is left anywhere."""
    scheduler = daemons.start_scheduler()
    node = daemons.start_node(NODES[0])
    with SharedJobCluster(make, nodes=[NODES[0]], **daemons.client_options()) as cluster:
        job = cluster.submit(200 * MB, 7)
        result = job(timeout=DEADLINE)
        assert job.status == DispyJob.Finished, (job.status, job.exception)
        assert len(result) == 200 * MB and digest(result) == digest(pattern(200 * MB, 7))
        del result
        job.result = None
        peaks = {name: proc_status(daemon.pid, 'VmHWM')
                 for name, daemon in (('scheduler', scheduler), ('node', node))}
        assert not payload_files(str(client_tmp)), payload_files(str(client_tmp))
    print('peak resident sizes after a 200 MB result: %s'
          % ', '.join('%s %.1f MB' % (name, peak / MB) for name, peak in peaks.items()))
    for name, peak in peaks.items():
        assert peak < 300 * MB, 'the %s peaked at %.1f MB resident' % (name, peak / MB)
    wait_for(lambda: not payload_files(*all_directories(daemons, client_tmp)), 60,
             'the result files to go: %s' % (payload_files(*all_directories(daemons,
                                                                              client_tmp)),))


# 2

def test_results_of_every_size_around_the_inline_limit_arrive_whole(daemons, client_tmp):
    """Results just under, at and over the 1 MiB inline limit, and larger than a frame (64
    MB), from jobs spread over two nodes at once, each checked byte for byte; a small job
    submitted after a large one is not held up behind it."""
    daemons.start_scheduler()
    for ip in NODES:
        daemons.start_node(ip)
    limit = 1024 * 1024
    sizes = [0, 1000, limit - 100, limit - 10, limit, limit + 1, 3 * limit, 10 * MB, 70 * MB,
             5 * MB, 100, 2 * MB]
    with SharedJobCluster(make, **daemons.client_options()) as cluster:
        jobs = [(size, seed, cluster.submit(size, seed)) for seed, size in enumerate(sizes)]
        for size, seed, job in jobs:
            result = job(timeout=DEADLINE)
            assert job.status == DispyJob.Finished, (size, job.status, job.exception)
            assert result == pattern(size, seed), (size, len(result))
    wait_for(lambda: not payload_files(*all_directories(daemons, client_tmp)), 60,
             'the result files to go: %s' % (payload_files(*all_directories(daemons,
                                                                              client_tmp)),))


# 3

def test_large_provisional_results_reach_the_callback_in_order(daemons, client_tmp):
    """Three provisional results of 3 MB and a final one: the job's callback sees each, in
    order, intact (as dispy's programs use them: progress with data)."""
    daemons.start_scheduler()
    daemons.start_node(NODES[0])
    seen = []

    def callback(job):
        if job.status == DispyJob.ProvisionalResult:
            seen.append(digest(job.result))

    with SharedJobCluster(with_provisional_results, nodes=[NODES[0]], callback=callback,
                          **daemons.client_options()) as cluster:
        job = cluster.submit(3, 3 * MB)
        result = job(timeout=DEADLINE)
        assert job.status == DispyJob.Finished, (job.status, job.exception)
        assert result == pattern(3 * MB, 3)
        cluster.wait()
    assert seen == [digest(pattern(3 * MB, seed)) for seed in range(3)], seen
    wait_for(lambda: not payload_files(*all_directories(daemons, client_tmp)), 60,
             'the result files to go: %s' % (payload_files(*all_directories(daemons,
                                                                              client_tmp)),))


def big_then_small():
    """A large provisional result, a small one, then a small result."""
    dispy_provisional_result(pattern(3 * 1000 * 1000, 1))  # noqa: F821 (a node global)
    dispy_provisional_result(b'small')  # noqa: F821
    return 'done'


def test_results_of_a_job_arrive_in_the_order_it_made_them(daemons, client_tmp):
    """A job sends a 3 MB provisional result (streamed), then a small one (inline), then
    ends with a small result: the callback sees them in that order, though the small ones
    could overtake the stream."""
    daemons.start_scheduler()
    daemons.start_node(NODES[0])
    seen = []

    def callback(job):
        if job.status == DispyJob.ProvisionalResult:
            seen.append(digest(job.result) if len(job.result) > 100 else job.result)
        elif job.status == DispyJob.Finished:
            seen.append(job.result)

    with SharedJobCluster(big_then_small, nodes=[NODES[0]], callback=callback,
                          **daemons.client_options()) as cluster:
        for _ in range(3):
            job = cluster.submit()
            assert job(timeout=DEADLINE) == 'done', (job.status, job.exception)
        cluster.wait()
    assert seen == [digest(pattern(3 * MB, 1)), b'small', 'done'] * 3, seen


# 4

def test_a_jobcluster_returns_a_large_result(tmp_path, client_tmp):
    """A JobCluster (its own scheduler, its own local node: ``local=1``) returns 30 MB intact,
    and leaves no file of it behind."""
    with JobCluster(make, local=1) as cluster:
        job = cluster.submit(30 * MB, 3)
        result = job(timeout=DEADLINE)
        assert job.status == DispyJob.Finished, (job.status, job.exception)
        assert result == pattern(30 * MB, 3)
    assert not payload_files(str(client_tmp)), payload_files(str(client_tmp))


# 5

CLIENT_PROGRAM = '''
import collections, hashlib, json, os, sys
from dispyscheduler import DispyJob, SharedJobCluster

def make_and_count(size, directory):
    """Make the result, count this run (one line per run), return it."""
    import hashlib, os
    block = hashlib.sha256(b'result').digest() * 32768
    data = (block * (size // len(block) + 1))[:size]
    with open(os.path.join(directory, 'runs'), 'a') as handle:
        handle.write('ran\\n')
    return data

port, secret, directory = int(sys.argv[1]), sys.argv[2], sys.argv[3]
size = 200 * 1000 * 1000
final = collections.Counter()

def callback(job):
    if job.status in (DispyJob.Finished, DispyJob.Terminated, DispyJob.Cancelled,
                      DispyJob.Abandoned):
        final[job.id] += 1

with SharedJobCluster(make_and_count, scheduler_node='127.0.0.1', scheduler_port=port,
                      secret=secret, callback=callback, nodes=['127.0.0.2']) as cluster:
    job = cluster.submit(size, directory)
    result = job()
    cluster.wait()
block = hashlib.sha256(b'result').digest() * 32768
expected = hashlib.sha256((block * (size // len(block) + 1))[:size]).hexdigest()
print(json.dumps({'status': job.status, 'exception': job.exception,
                  'intact': result is not None and hashlib.sha256(result).hexdigest() == expected,
                  'final_callbacks': final[job.id]}), flush=True)
'''


@pytest.mark.parametrize('phase', ['arriving', 'saved'])
def test_scheduler_killed_while_a_large_result_travels_and_restarted(daemons, tmp_path, phase):
    """kill -9 of the scheduler while a job's 200 MB result is on its way, then a restart on
    the same --dest_path_prefix (so the same state): the client program, left running, gets
    the result intact, once, and the job ran once.

    - ``arriving``: the node is frozen (SIGSTOP) the moment the result's file appears at the
      scheduler, which is then killed with part of it: the node sends it again, whole, to
      the restarted scheduler;
    - ``saved``: the client program is frozen once the node has forgotten the result (the
      scheduler acknowledged it: it was durable there), and the scheduler is killed: the
      restarted one delivers it from its own file."""
    node = daemons.start_scheduler() and daemons.start_node(NODES[0])
    runs, program = start_program(daemons, tmp_path, CLIENT_PROGRAM)
    frozen = None
    try:
        at_scheduler = scheduler_directory(daemons)
        if phase == 'arriving':
            (path,) = wait_until(lambda: payload_files(at_scheduler), DEADLINE,
                                 'the result to start arriving at the scheduler')
            frozen = node.pid
            freeze(frozen)
            daemons.scheduler.kill()
            kept = size_of(path)
            assert kept is not None and kept < 200 * MB, (
                'the result was not caught half way: %s has %s bytes' % (path, kept))
        else:
            at_node = node_directory(daemons, NODES[0])
            wait_until(lambda: payload_files(at_node), DEADLINE, 'the job to return')
            wait_until(lambda: not payload_files(at_node), DEADLINE,
                       'the scheduler to acknowledge the result')
            frozen = program.pid
            freeze(frozen)
            daemons.scheduler.kill()
            (path,) = payload_files(at_scheduler)
            kept = size_of(path)
            assert kept is not None and kept > 200 * MB, (path, kept)  # the whole pickle
        os.kill(frozen, signal.SIGCONT)
        frozen = None
        summary = restart_and_collect(daemons, program)
    finally:
        if frozen is not None:
            os.kill(frozen, signal.SIGCONT)
        program.kill()
        program.wait()
    print('%s: scheduler killed with %s bytes of the result in %s' % (phase, kept, path))
    assert summary['status'] == DispyJob.Finished, summary
    assert summary['intact'], summary
    assert summary['final_callbacks'] == 1, summary
    assert (runs / 'runs').read_text().splitlines() == ['ran']  # the job ran once
    wait_for(lambda: not payload_files(scheduler_directory(daemons),
                                       node_directory(daemons, NODES[0])), 60,
             'the result files to go')


# 6

def test_a_full_disk_at_the_scheduler_ends_the_job_with_the_reason(daemons, tmp_path,
                                                                   client_tmp):
    """The scheduler's --dest_path_prefix on a disk with 40 MB beside the space it keeps free
    (DISK_RESERVE): a job returning 50 MB ends Terminated, saying the scheduler could not
    save its result and why; the scheduler stays up, keeps nothing of it, and the next jobs
    (one returning 5 MB) finish."""
    from dispyscheduler.constants import DISK_RESERVE
    small_disk = tmp_path / 'small-disk'
    mount_tmpfs(small_disk, DISK_RESERVE + 40 * 1024 * 1024)
    try:
        scheduler = daemons.start_scheduler('--dest_path_prefix', str(small_disk))
        daemons.start_node(NODES[0])
        with SharedJobCluster(make, nodes=[NODES[0]], **daemons.client_options()) as cluster:
            big = cluster.submit(50 * MB)
            big(timeout=DEADLINE)
            assert big.status == DispyJob.Terminated, (big.status, big.exception)
            assert re.search(r'could not be saved by the scheduler: .*bytes free',
                             big.exception), big.exception
            assert scheduler.alive()
            assert not payload_files(str(small_disk)), payload_files(str(small_disk))
            assert cluster.submit(10)(timeout=DEADLINE) == pattern(10)
            assert cluster.submit(5 * MB, 1)(timeout=DEADLINE) == pattern(5 * MB, 1)
        assert scheduler.alive()
    finally:
        if daemons.scheduler is not None:
            daemons.scheduler.stop()  # off the disk before it goes
        unmount(small_disk)


# 7

def test_a_full_disk_on_a_node_ends_the_job_with_the_reason(daemons, tmp_path):
    """A node whose --dest_path_prefix has 20 MB left: a job returning 40 MB ends Terminated,
    saying the result could not be written on that node and why; the node keeps serving,
    and once there is room the same job finishes."""
    from dispyscheduler.constants import DISK_RESERVE
    small_disk = tmp_path / 'node-disk'
    mount_tmpfs(small_disk, DISK_RESERVE + 64 * 1024 * 1024)
    node = None
    try:
        daemons.start_scheduler()
        node = daemons.start_node(NODES[0], '--dest_path_prefix', str(small_disk))
        with SharedJobCluster(make, nodes=[NODES[0]], **daemons.client_options()) as cluster:
            assert cluster.submit(10)(timeout=DEADLINE) == pattern(10)  # set up
            fill_disk(str(small_disk), 20 * 1024 * 1024)
            big = cluster.submit(40 * MB)
            big(timeout=DEADLINE)
            assert big.status == DispyJob.Terminated, (big.status, big.exception)
            assert re.search(r'could not be written on node %s: .*No space left on device'
                             % re.escape(NODES[0]), big.exception), big.exception
            assert not payload_files(str(small_disk)), payload_files(str(small_disk))
            assert cluster.submit(10)(timeout=DEADLINE) == pattern(10)
            os.unlink(small_disk / 'filler')  # room again
            assert cluster.submit(40 * MB)(timeout=DEADLINE) == pattern(40 * MB)
        assert node.alive()
    finally:
        if node is not None:
            node.stop()  # off the disk before it goes
        unmount(small_disk)


def test_many_jobs_with_large_results_at_once(daemons, client_tmp):
    """40 jobs returning 5 MB each over two nodes at once (streams from both nodes and to the
    client interleave with small results): every result intact, none left on disk."""
    daemons.start_scheduler()
    for ip in NODES:
        daemons.start_node(ip)
    with SharedJobCluster(make, **daemons.client_options()) as cluster:
        jobs = [cluster.submit(5 * MB if n % 2 else 100, n) for n in range(40)]
        outcomes = collections.Counter()
        for n, job in enumerate(jobs):
            result = job(timeout=DEADLINE)
            assert job.status == DispyJob.Finished, (n, job.status, job.exception)
            outcomes[result == pattern(5 * MB if n % 2 else 100, n)] += 1
        assert outcomes == {True: 40}, outcomes
    wait_for(lambda: not payload_files(*all_directories(daemons, client_tmp)), 60,
             'the result files to go')


def write_and_send(size):
    """Run on a node: write ``size`` bytes to a file and send it back (``dispy_send_file``)."""
    with open('sent.bin', 'wb') as handle:
        handle.write(pattern(size, 5))
    return dispy_send_file('sent.bin')  # noqa: F821 (a node global)


def test_a_200_mb_file_sent_by_a_job_passes_the_scheduler_a_chunk_at_a_time(daemons,
                                                                           tmp_path):
    """dispy_send_file of 200 MB: the file lands whole in the program's working directory,
    and the scheduler, which passes each chunk on once the one before has left, never holds
    much of it (peak resident size under 300 MB)."""
    scheduler = daemons.start_scheduler()
    daemons.start_node(NODES[0])
    with SharedJobCluster(write_and_send, **daemons.client_options()) as cluster:
        job = cluster.submit(200 * MB)
        assert job(timeout=DEADLINE) == 0, (job.status, job.exception)
        peak = proc_status(scheduler.pid, 'VmHWM')
    with open(tmp_path / 'sent.bin', 'rb') as handle:  # the test's working directory
        assert digest(handle.read()) == digest(pattern(200 * MB, 5))
    print('scheduler VmHWM after a 200 MB file: %.1f MB' % (peak / MB))
    assert peak < 300 * MB, peak / MB


def test_a_link_cut_while_a_large_result_arrives_sends_it_again_whole(daemons, client_tmp):
    """The client's link to the scheduler breaks while a 200 MB result streams to it (the
    socket shut down under it, as a network fault would): the client links again, the
    scheduler sends the result again from its start, and the job ends once, intact; the
    partial copy is gone."""
    import socket
    daemons.start_scheduler()
    daemons.start_node(NODES[0])
    ends = collections.Counter()

    def callback(job):
        if job.status == DispyJob.Finished:
            ends[job.id] += 1

    with SharedJobCluster(make, nodes=[NODES[0]], callback=callback,
                          **daemons.client_options()) as cluster:
        job = cluster.submit(200 * MB, 9)
        (partial,) = wait_until(lambda: payload_files(str(client_tmp)), DEADLINE,
                                'the result to start arriving at the client')
        cluster._connection.link.sock.shutdown(socket.SHUT_RDWR)  # the fault
        result = job(timeout=DEADLINE)
        assert job.status == DispyJob.Finished, (job.status, job.exception)
        assert digest(result) == digest(pattern(200 * MB, 9))
        cluster.wait()
    assert ends == {job.id: 1}, ends
    assert not payload_files(str(client_tmp)), payload_files(str(client_tmp))
    daemons.scheduler.wait_log('resumed')


FROZEN_PROGRAM = '''
import hashlib, json, sys
from dispyscheduler import DispyJob, SharedJobCluster

def make(size, seed):
    import hashlib
    block = hashlib.sha256(b'%d' % seed).digest() * 32768
    return (block * (size // len(block) + 1))[:size]

port, secret = int(sys.argv[1]), sys.argv[2]
with SharedJobCluster(make, scheduler_node='127.0.0.1', scheduler_port=port,
                      secret=secret) as cluster:
    jobs = [cluster.submit(50 * 1000 * 1000, seed) for seed in range(4)]
    print('submitted', flush=True)
    intact = [job() == make(50 * 1000 * 1000, seed) for seed, job in enumerate(jobs)]
print(json.dumps({'intact': intact}), flush=True)
'''


def test_a_client_that_stops_reading_large_results_holds_up_no_one_else(daemons, tmp_path):
    """A program whose four 50 MB results are streaming to it is frozen (SIGSTOP): another
    program's jobs with 5 MB results all finish meanwhile, the scheduler's peak resident
    size stays under 300 MB, and once let go the first program gets every result intact."""
    scheduler = daemons.start_scheduler()
    for ip in NODES:
        daemons.start_node(ip)
    script = tmp_path / 'frozen_client.py'
    script.write_text(FROZEN_PROGRAM)
    program = subprocess.Popen([sys.executable, str(script), str(daemons.scheduler_port),
                                CLUSTER_SECRET], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=REPO))
    frozen = False
    try:
        assert program.stdout.readline().strip() == b'submitted'
        wait_until(lambda: payload_files(scheduler_directory(daemons)), DEADLINE,
                   'the first results to reach the scheduler')
        freeze(program.pid)
        frozen = True
        with SharedJobCluster(make, **daemons.client_options()) as cluster:
            jobs = [cluster.submit(5 * MB, seed) for seed in range(10)]
            for seed, job in enumerate(jobs):
                assert job(timeout=DEADLINE) == pattern(5 * MB, seed), (job.status,
                                                                         job.exception)
        peak = proc_status(scheduler.pid, 'VmHWM')
        os.kill(program.pid, signal.SIGCONT)
        frozen = False
        out, err = program.communicate(timeout=300)
    finally:
        if frozen:
            os.kill(program.pid, signal.SIGCONT)
        program.kill()
        program.wait()
    assert program.returncode == 0, err.decode()[-3000:]
    assert json.loads(out.decode().splitlines()[-1]) == {'intact': [True] * 4}
    print('scheduler VmHWM with a frozen client: %.1f MB' % (peak / MB))
    assert peak < 300 * MB, peak / MB
