"""Everything a dispy program can ask of a computation, against real daemons on loopback.

One scheduler (127.0.0.1) and two nodes (127.0.0.2, 127.0.0.3, two CPUs each) serve every test
of this module; each test makes its own clusters. Tests that need nodes of their own (NodeAllocate
with per-node CPUs, a single-CPU node for ordering) start them with the ``daemons`` fixture.
"""

import hashlib
import importlib.util
import logging
import os
import sys
import time

import pytest

from daemons import Cluster, wait_for

from dispyscheduler import DispyJob, DispyNode, NodeAllocate, SharedJobCluster
from dispyscheduler.wire.messages import Submit


@pytest.fixture(scope='module')
def shared(tmp_path_factory):
    cluster = Cluster(tmp_path_factory.mktemp('daemons'))
    cluster.start_scheduler()
    cluster.start_node('127.0.0.2')
    cluster.start_node('127.0.0.3')
    yield cluster
    cluster.stop_and_check()


def run_all(cluster, jobs, timeout=60):
    assert cluster.wait(timeout=timeout), 'jobs did not finish in %ss' % timeout
    return jobs


# 1. computations


def test_lambda_and_closure(shared):
    offset = 100
    with SharedJobCluster(lambda n: n + offset, **shared.client_options()) as cluster:
        jobs = run_all(cluster, [cluster.submit(n) for n in range(5)])
    assert [job.result for job in jobs] == [100, 101, 102, 103, 104]


def test_shell_program(shared, tmp_path):
    program = tmp_path / 'greet.sh'
    program.write_text('#!/bin/sh\necho "hello $1"\necho "oops $2" >&2\nexit $2\n')
    program.chmod(0o755)
    with SharedJobCluster(str(program), **shared.client_options()) as cluster:
        jobs = run_all(cluster, [cluster.submit('world', code) for code in (0, 3)])
    assert [job.status for job in jobs] == [DispyJob.Finished] * 2
    assert [job.result for job in jobs] == [0, 3]
    assert jobs[0].stdout == b'hello world\n'  # a program's output is bytes, as in dispy
    assert jobs[1].stderr == b'oops 3\n'


def test_python_program_runs_with_the_nodes_python(shared, tmp_path):
    program = tmp_path / 'count.py'
    program.write_text('import sys\nprint(len(sys.argv) - 1, sys.argv[1:])\nsys.exit(7)\n')
    with SharedJobCluster(str(program), **shared.client_options()) as cluster:
        job = cluster.submit('a', 'b')
        job()
    assert job.result == 7
    assert job.stdout == b"2 ['a', 'b']\n"


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def moved(self, dx):
        return Point(self.x + dx, self.y)


def move(point, dx):
    return point.moved(dx)


def test_class_instances_as_argument_and_result(shared):
    with SharedJobCluster(move, depends=[Point], **shared.client_options()) as cluster:
        job = cluster.submit(Point(1, 2), 10)
        result = job()
    assert job.status == DispyJob.Finished, job.exception
    assert isinstance(result, Point)
    assert (result.x, result.y) == (11, 2)


def distance(point):
    return Point(0, 0).moved(point.x).x  # uses the class through a global name


def test_depends_instance_brings_its_class(shared):
    with SharedJobCluster(distance, depends=[Point(5, 5)], **shared.client_options()) as cluster:
        job = cluster.submit(Point(7, 1))
        assert job() == 7, job.exception


# 2. depends


def use_depends(n):
    import helper_module
    with open('data.txt') as handle:
        base = int(handle.read())
    return helper_module.triple(n) + base


def test_depends_with_a_data_file_and_a_module(shared, tmp_path):
    module_path = tmp_path / 'helper_module.py'
    module_path.write_text('def triple(n):\n    return 3 * n\n')
    data = tmp_path / 'data.txt'
    data.write_text('1000')
    spec = importlib.util.spec_from_file_location('helper_module', module_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with SharedJobCluster(use_depends, depends=[str(data), module],
                          **shared.client_options()) as cluster:
        jobs = run_all(cluster, [cluster.submit(n) for n in range(6)])
    assert [job.result for job in jobs] == [1000 + 3 * n for n in range(6)], \
        [job.exception for job in jobs]

    def shipped_copies():
        return [root for root, _, names in os.walk(shared.directory)
                if 'helper_module.py' in names]
    # cleanup=True (the default): the nodes remove the files they were sent at close
    wait_for(lambda: not shipped_copies(), 10, 'the shipped files to be removed')


def read_job_file(name):
    with open(name) as handle:
        return handle.read()


def test_per_job_files(shared, tmp_path):
    paths = []
    for n in range(3):
        path = tmp_path / ('input%d.txt' % n)
        path.write_text('content %d' % n)
        paths.append(path)
    with SharedJobCluster(read_job_file, **shared.client_options()) as cluster:
        jobs = [cluster.submit(path.name, dispy_job_depends=[str(path)]) for path in paths]
        run_all(cluster, jobs)
    assert [job.result for job in jobs] == ['content 0', 'content 1', 'content 2']


def test_file_names_cannot_escape_and_sizes_are_enforced(daemons, tmp_path):
    daemons.start_scheduler('--max_file_size', '1k')
    daemons.start_node('127.0.0.2')
    big = tmp_path / 'big.bin'
    big.write_bytes(b'x' * 5000)
    with pytest.raises(ValueError, match='more than the limit of 1024 bytes'):
        SharedJobCluster(read_job_file, depends=[str(big)], **daemons.client_options())
    small = tmp_path / 'small.txt'
    small.write_text('fine')
    with SharedJobCluster(read_job_file, **daemons.client_options()) as cluster:
        with pytest.raises(ValueError, match='limit of 1024 bytes'):
            cluster.submit('big.bin', dispy_job_depends=[str(big)])
        # a client that names files itself (not through this library) is refused too
        uid = 10 ** 6
        for name in ('../escape.txt', '/tmp/absolute.txt', 'a/../../b'):
            job = DispyJob((), {})
            job._uid = job.id = uid
            cluster._jobs[uid] = job
            cluster._connection.send(Submit(uid=uid, args=b'', timeout=None, priority=0,
                                            node=None, tag=None,
                                            files=[(name, b'data', 0o600)]))
            job()
            assert job.status == DispyJob.Terminated
            assert 'file name' in job.exception
            uid += 1
        ok = cluster.submit('small.txt', dispy_job_depends=[str(small)])
        assert ok() == 'fine'
    assert not os.path.exists(os.path.join(daemons.directory, 'escape.txt'))


# 3. setup and cleanup


def fail_setup_on_second_node():
    if dispy_node_ip_addr == '127.0.0.3':  # noqa: F821 (a dispynode global)
        raise OSError('no such device on this node')
    return 0


def where(n):
    return dispy_node_ip_addr  # noqa: F821


def test_failing_setup_marks_the_node_unusable(shared, caplog):
    with caplog.at_level(logging.WARNING, logger='dispyscheduler'):
        with SharedJobCluster(where, setup=fail_setup_on_second_node,
                              **shared.client_options()) as cluster:
            jobs = run_all(cluster, [cluster.submit(n) for n in range(10)])
            wait_for(lambda: 'could not be set up on node 127.0.0.3' in caplog.text, 10,
                     'the client to be told')
    assert {job.result for job in jobs} == {'127.0.0.2'}
    assert 'no such device on this node' in caplog.text


def make_marker(directory):
    """A setup or cleanup function that leaves a file named after its process."""
    def mark(*args):
        with open(os.path.join(directory, 'ran-%d' % os.getpid()), 'w') as handle:
            handle.write('done')
    return mark


def test_cleanup_function_runs_and_files_are_kept_with_cleanup_false(shared, tmp_path):
    data = tmp_path / 'kept.txt'
    data.write_text('keep me')
    with SharedJobCluster(read_job_file, depends=[str(data)], cleanup=False,
                          **shared.client_options()) as cluster:
        assert cluster.submit('kept.txt')() == 'keep me'
    kept = [root for root, _, names in os.walk(shared.directory) if 'kept.txt' in names]
    assert any('node-' in root for root in kept)
    (tmp_path / 'setup').mkdir()
    (tmp_path / 'cleanup').mkdir()
    with SharedJobCluster(where, setup=make_marker(str(tmp_path / 'setup')),
                          cleanup=make_marker(str(tmp_path / 'cleanup')),
                          **shared.client_options()) as cluster:
        jobs = run_all(cluster, [cluster.submit(n) for n in range(4)])
    # cleanup runs at close on every node where setup ran
    wait_for(lambda: len(os.listdir(tmp_path / 'cleanup')) == len(os.listdir(tmp_path / 'setup')),
             60, 'cleanup to run where setup ran')
    assert {job.result for job in jobs} <= {'127.0.0.2', '127.0.0.3'}
    assert len(os.listdir(tmp_path / 'setup')) >= 1


# 4. inside a job


def report_progress(steps):
    for step in range(steps):
        dispy_provisional_result(step)  # noqa: F821 (a dispynode global)
        time.sleep(0.05)
    return 'done'


def test_provisional_results_arrive_in_order_before_the_final_one(shared):
    seen = []
    with SharedJobCluster(report_progress, callback=lambda job: seen.append(
            (job.status, job.result)), **shared.client_options()) as cluster:
        job = cluster.submit(4)
        assert job() == 'done'
        cluster.wait()
    # as in dispy 4.15, the callback hears of provisional results and the end only
    assert seen == [(DispyJob.ProvisionalResult, step) for step in range(4)] + [
        (DispyJob.Finished, 'done')]


def send_back(name, size):
    import hashlib
    with open(name, 'wb') as handle:
        handle.write(os.urandom(size))
    with open(name, 'rb') as handle:
        digest = hashlib.sha256(handle.read()).hexdigest()
    assert dispy_send_file(name) == 0  # noqa: F821
    return digest


def test_dispy_send_file_arrives_in_the_clients_directory(shared, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with SharedJobCluster(send_back, **shared.client_options()) as cluster:
        jobs = run_all(cluster, [cluster.submit('small.bin', 10),
                                 cluster.submit('large.bin', 3 * 1024 * 1024 + 5)])
    for job, name in zip(jobs, ('small.bin', 'large.bin')):
        assert job.status == DispyJob.Finished, job.exception
        with open(tmp_path / name, 'rb') as handle:
            assert hashlib.sha256(handle.read()).hexdigest() == job.result


GLOBALS_SOURCE = '''
def uses_dispynode_globals(n):
    return (os.getpid() > 0, sys.platform, dispy_node_name, dispy_node_ip_addr,
            dispy_job_path, os.getcwd(), time.time() > 0)
'''


def test_globals_that_dispynode_gives_computations(shared):
    namespace = {}
    exec(GLOBALS_SOURCE, namespace)  # a function that never imported os, sys or time
    with SharedJobCluster(namespace['uses_dispynode_globals'],
                          **shared.client_options()) as cluster:
        job = cluster.submit(1)
        result = job()
    assert job.status == DispyJob.Finished, job.exception
    alive, platform, name, ip_addr, job_path, cwd, clock = result
    assert alive and clock and platform == sys.platform
    assert ip_addr == job.ip_addr and name
    assert job_path == cwd and job_path.startswith(shared.directory)


# 5. status and callbacks


def test_status_callbacks_and_node_table(shared, capsys):
    job_events, cluster_events = [], []
    with SharedJobCluster(
            report_progress, job_status=lambda job: job_events.append((job.id, job.status)),
            cluster_status=lambda status, node, job: cluster_events.append(
                (status, node.ip_addr if node else None, job.id if job else None)),
            **shared.client_options()) as cluster:
        jobs = run_all(cluster, [cluster.submit(1) for _ in range(8)])
        status = cluster.status()
        cluster.print_status()
    assert {node.ip_addr for node in status.nodes} == {'127.0.0.2', '127.0.0.3'}
    assert all(isinstance(node, DispyNode) and node.cpus == 2 for node in status.nodes)
    assert sum(node.jobs_done for node in status.nodes) == 8
    assert status.jobs_pending == 0
    for job in jobs:
        mine = [status for job_id, status in job_events if job_id == job.id]
        assert mine == [DispyJob.ProvisionalResult, DispyJob.Finished]  # as dispy 4.15
        changes = [status for status, _, job_id in cluster_events if job_id == job.id]
        assert changes == [DispyJob.Running, DispyJob.ProvisionalResult, DispyJob.Finished]
        assert job.ip_addr in ('127.0.0.2', '127.0.0.3') and job.start_time <= job.end_time
    initialized = {ip for status, ip, job_id in cluster_events
                   if status == DispyNode.Initialized and job_id is None}
    assert initialized == {'127.0.0.2', '127.0.0.3'}
    assert sum(1 for status, _, job_id in cluster_events
               if status == DispyJob.Finished and job_id is not None) == 8
    table = capsys.readouterr().out
    assert '127.0.0.2' in table and '127.0.0.3' in table and 'Sec/Job' in table


# 6. control


def nap(seconds, tag=None):
    time.sleep(seconds)
    return tag


def test_cancel_a_running_60s_job(shared):
    with SharedJobCluster(nap, nodes=['127.0.0.2'], **shared.client_options()) as cluster:
        long_jobs = [cluster.submit(60, n) for n in range(2)]
        wait_for(lambda: all(job.status == DispyJob.Running for job in long_jobs), 20,
                 'both CPUs busy')
        started = time.monotonic()
        assert cluster.cancel(long_jobs[0]) == 0
        long_jobs[0]()
        assert long_jobs[0].status == DispyJob.Cancelled
        follower = cluster.submit(0, 'next')
        assert follower() == 'next'
        assert time.monotonic() - started < 5
        assert long_jobs[1].status == DispyJob.Running  # the other job is unaffected
        cluster.cancel(long_jobs[1])


def test_submit_node_and_submit_job_id(shared):
    with SharedJobCluster(where, **shared.client_options()) as cluster:
        pinned = [cluster.submit_node('127.0.0.3', n) for n in range(6)]
        named = cluster.submit_job_id('my-job', 1)
        nowhere = cluster.submit_node('127.0.0.99', 1)
        run_all(cluster, pinned + [named, nowhere])
    assert {job.result for job in pinned} == {'127.0.0.3'}
    assert named.id == 'my-job' and named.status == DispyJob.Finished
    assert nowhere.status == DispyJob.Cancelled and 'not available' in nowhere.exception


def test_job_time_limit(shared):
    with SharedJobCluster(nap, job_timeout=30, **shared.client_options()) as cluster:
        limited = cluster.submit(60, 'late', dispy_job_timeout=1)
        default = cluster.submit(0.1, 'quick')
        started = time.monotonic()
        limited()
        assert limited.status == DispyJob.Terminated
        assert 'time limit of 1 seconds' in limited.exception
        assert time.monotonic() - started < 10
        assert default() == 'quick'
        assert cluster.submit(0, 'after')() == 'after'


def test_priority_within_a_cluster(daemons):
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2', cpus=1)
    order = []
    with SharedJobCluster(nap, callback=lambda job: order.append(job.result)
                          if job.status == DispyJob.Finished else None,
                          **daemons.client_options()) as cluster:
        blocker = cluster.submit(1, 'blocker')
        wait_for(lambda: blocker.status == DispyJob.Running, 20, 'the first job to run')
        low = [cluster.submit(0, 'low%d' % n) for n in range(4)]
        high = cluster.submit(0, 'high', dispy_job_priority=10)
        run_all(cluster, low + [high, blocker])
    # one job was already waiting on the node (dispatch depth); the high one runs next
    assert order.index('high') <= 2, order


class TwoNodes(NodeAllocate):
    """Uses one CPU of 127.0.0.2 and none of 127.0.0.3."""

    def allocate(self, cluster, ip_addr, name, cpus, avail_info=None, platform=''):
        return 1 if ip_addr == '127.0.0.2' else 0


def setup_with(tag):
    global setup_tag
    setup_tag = tag
    return 0


def tagged(seconds):
    import os
    time.sleep(seconds)
    with open('per-node.txt') as handle:
        return setup_tag, handle.read(), os.getpid()


def test_node_allocate_chooses_nodes_cpus_depends_and_setup_args(daemons, tmp_path):
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2')
    daemons.start_node('127.0.0.3')
    per_node = tmp_path / 'per-node.txt'
    per_node.write_text('only for .2')
    allocator = TwoNodes('127.0.0.*', depends=[str(per_node)], setup_args=('from-allocate',))
    with SharedJobCluster(tagged, nodes=[allocator], setup=setup_with,
                          **daemons.client_options()) as cluster:
        jobs = run_all(cluster, [cluster.submit(0.2) for _ in range(6)])
        status = cluster.status()
    assert all(job.status == DispyJob.Finished for job in jobs), [j.exception for j in jobs]
    assert {job.ip_addr for job in jobs} == {'127.0.0.2'}
    assert {job.result[:2] for job in jobs} == {('from-allocate', 'only for .2')}
    assert len({job.result[2] for job in jobs}) == 1  # one CPU: one worker process
    spans = sorted((job.start_time, job.end_time) for job in jobs)
    assert all(later[0] >= earlier[1] - 0.01 for earlier, later in zip(spans, spans[1:]))
    assert [node.ip_addr for node in status.nodes] == ['127.0.0.2']


# 7. bad computations


def misbehave(how):
    import ctypes
    import os
    import sys
    if how == 'exit':
        sys.exit(3)
    if how == '_exit':
        os._exit(4)
    if how == 'segfault':
        ctypes.string_at(0)
    if how == 'print':
        chunk = 'x' * (1024 * 1024)
        for _ in range(100):
            print(chunk)
        return 'printed'
    if how == 'unpicklable':
        import threading
        return threading.Lock()
    return 'fine'


def test_bad_computations_end_terminated_and_disturb_nothing(shared):
    with SharedJobCluster(misbehave, **shared.client_options()) as other:
        bystanders = [other.submit('fine') for _ in range(20)]
        with SharedJobCluster(misbehave, **shared.client_options()) as cluster:
            jobs = {how: cluster.submit(how)
                    for how in ('exit', '_exit', 'segfault', 'print', 'unpicklable')}
            run_all(cluster, list(jobs.values()))
            with pytest.raises(TypeError, match='cannot be pickled'):
                import threading
                cluster.submit(threading.Lock())
            assert cluster.submit('fine')() == 'fine'
        run_all(other, bystanders)
    assert jobs['exit'].status == DispyJob.Terminated
    assert 'sys.exit(3)' in jobs['exit'].exception
    assert jobs['_exit'].status == DispyJob.Terminated
    assert 'exited with status 4' in jobs['_exit'].exception
    assert jobs['segfault'].status == DispyJob.Terminated
    assert 'SIGSEGV' in jobs['segfault'].exception
    assert jobs['print'].status == DispyJob.Finished and jobs['print'].result == 'printed'
    assert 'output cut' in jobs['print'].stdout and len(jobs['print'].stdout) < 5 * 2 ** 20
    assert jobs['unpicklable'].status == DispyJob.Terminated
    assert 'cannot be pickled' in jobs['unpicklable'].exception
    assert [job.result for job in bystanders] == ['fine'] * 20
