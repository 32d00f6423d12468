"""dispy 4.15's cluster methods on nodes (issue 15, items 3 and 6), written as dispy users
write them: per-node files and setup arguments from ``NodeAllocate.allocate``, node entries as
tuples and dicts, ``resetup_node``, ``close_node``, ``deallocate_node``/``allocate_node``,
``set_node_cpus``, ``send_file`` and ``discover_nodes``. Each acts on this cluster only."""

import os
import threading

from daemons import wait_for

import dispyscheduler as dispy


def setup(data_file, tag):
    # as dispy's node_setup.py: the file's data in memory, the file itself may go
    global data, label
    with open(data_file) as handle:
        data = handle.read()
    os.remove(data_file)
    label = tag
    return 0


def cleanup(data_file, tag):
    global data, label
    del data, label


def compute(n):
    import time
    start = time.time()
    time.sleep(0.05)
    return dispy_node_ip_addr, label, data, os.getpid(), start, time.time()  # noqa: F821


def write_files(directory, count):
    paths = []
    for index in range(count):
        path = os.path.join(str(directory), 'part%d.txt' % index)
        with open(path, 'w') as handle:
            handle.write('contents of part %d' % index)
        paths.append(path)
    return paths


def test_depends_and_setup_args_set_in_allocate_go_to_that_node_only(daemons, tmp_path):
    """dispy's way to give each node its own data file: ``allocate`` sets ``self.depends``
    and ``self.setup_args`` (once ignored: setup failed with FileNotFoundError)."""
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2')
    daemons.start_node('127.0.0.3')
    paths = write_files(tmp_path, 2)
    given = {}

    class Allocate(dispy.NodeAllocate):
        def allocate(self, cluster, ip_addr, name, cpus, avail_info=None, platform='*'):
            path = paths[len(given) % len(paths)]
            given[ip_addr] = path
            self.depends = [path]
            self.setup_args = (os.path.basename(path), ip_addr)
            return cpus

    cluster = dispy.SharedJobCluster(compute, nodes=[Allocate('*')], setup=setup,
                                     cleanup=cleanup, **daemons.client_options())
    try:
        jobs = [cluster.submit(n) for n in range(12)]
        for job in jobs:
            ip_addr, label, data, _, _, _ = job()
            assert job.status == dispy.DispyJob.Finished, job.exception
            assert label == ip_addr
            assert data == open(given[ip_addr]).read()
        assert {job.result[0] for job in jobs} <= set(given)
    finally:
        cluster.close()
    assert sorted(given) == ['127.0.0.2', '127.0.0.3']


def test_node_entries_as_tuples_and_dicts_keep_cpus_files_and_setup_args(daemons, tmp_path):
    """``(host, port, cpus, depends, setup_args)`` and dicts with those keys once lost
    everything but the host, without a word."""
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2', cpus=2)
    daemons.start_node('127.0.0.3', cpus=2)
    first, second = write_files(tmp_path, 2)
    nodes = [('127.0.0.2', None, 1, [first], ('part0.txt', 'tuple')),
             {'host': '127.0.0.3', 'cpus': 1, 'depends': [second],
              'setup_args': ('part1.txt', 'dict')}]
    cluster = dispy.SharedJobCluster(compute, nodes=nodes, setup=setup, cleanup=cleanup,
                                     **daemons.client_options())
    try:
        jobs = [cluster.submit(n) for n in range(16)]
        results = [job() for job in jobs]
        assert all(job.status == dispy.DispyJob.Finished for job in jobs), \
            [job.exception for job in jobs]
    finally:
        cluster.close()
    by_node = {}
    for ip_addr, label, data, pid, _, _ in results:
        by_node.setdefault(ip_addr, set()).add((label, data, pid))
    assert {label for label, _, _ in by_node['127.0.0.2']} == {'tuple'}
    assert {data for _, data, _ in by_node['127.0.0.2']} == {'contents of part 0'}
    assert {label for label, _, _ in by_node['127.0.0.3']} == {'dict'}
    assert {data for _, data, _ in by_node['127.0.0.3']} == {'contents of part 1'}
    for ip_addr in by_node:  # one CPU each: one worker process ran all of that node's jobs
        assert len({pid for _, _, pid in by_node[ip_addr]}) == 1, by_node


def test_resetup_node_runs_cleanup_and_setup_again_with_new_files(daemons, tmp_path):
    """dispy's replace_inmem.py: after a first round, ``resetup_node`` each node;
    ``allocate`` gives it another file, and the next jobs see the new data."""
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2')
    paths = write_files(tmp_path, 4)
    round_of = {'round': 0}
    statuses = []

    class Allocate(dispy.NodeAllocate):
        def allocate(self, cluster, ip_addr, name, cpus, avail_info=None, platform='*'):
            path = paths[round_of['round']]
            self.depends = [path]
            self.setup_args = (os.path.basename(path), 'round %d' % round_of['round'])
            return cpus

    def cluster_status(status, node, job):
        if node is not None and job is None:
            statuses.append((status, node.ip_addr))

    cluster = dispy.SharedJobCluster(compute, nodes=[Allocate('127.0.0.2')], setup=setup,
                                     cleanup=cleanup, cluster_status=cluster_status,
                                     **daemons.client_options())
    try:
        first = [cluster.submit(n) for n in range(4)]
        cluster.wait()
        assert {job.result[1:3] for job in first} == {('round 0', 'contents of part 0')}
        round_of['round'] = 1
        assert cluster.resetup_node('127.0.0.2') == 0
        wait_for(lambda: statuses.count((dispy.DispyNode.Initialized, '127.0.0.2')) == 2,
                 30, 'node set up again')
        second = [cluster.submit(n) for n in range(4)]
        cluster.wait()
        assert {job.result[1:3] for job in second} == {('round 1', 'contents of part 1')}
    finally:
        cluster.close()
    assert statuses[:3] == [(dispy.DispyNode.Initialized, '127.0.0.2'),
                            (dispy.DispyNode.Closed, '127.0.0.2'),
                            (dispy.DispyNode.Initialized, '127.0.0.2')]


def slow(n, directory):
    import time
    open(os.path.join(directory, 'started-%d' % n), 'w').close()
    time.sleep(1)
    return dispy_node_ip_addr  # noqa: F821 (a dispynode global)


def test_close_node_finishes_its_jobs_then_allocate_node_takes_it_back(daemons, tmp_path):
    """``close_node``: jobs running there finish, jobs submitted for that node alone end
    Cancelled, other jobs go to the other nodes; the node is Closed for this cluster only;
    ``allocate_node`` sets it up again."""
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2', cpus=1)
    daemons.start_node('127.0.0.3', cpus=1)
    closed = threading.Event()
    initialized = []

    def cluster_status(status, node, job):
        if status == dispy.DispyNode.Closed and node.ip_addr == '127.0.0.2':
            closed.set()
        elif status == dispy.DispyNode.Initialized:
            initialized.append(node.ip_addr)

    other = dispy.SharedJobCluster(len, **daemons.client_options())
    cluster = dispy.SharedJobCluster(slow, cluster_status=cluster_status,
                                     **daemons.client_options())
    try:
        wait_for(lambda: sorted(initialized) == ['127.0.0.2', '127.0.0.3'], 30, 'both nodes')
        running = cluster.submit_node('127.0.0.2', 0, str(tmp_path))
        wait_for(lambda: os.path.exists(tmp_path / 'started-0'), 30, 'job running')
        pinned = cluster.submit_node('127.0.0.2', 1, str(tmp_path))
        assert cluster.close_node('127.0.0.2') == 0
        assert pinned() is None and pinned.status == dispy.DispyJob.Cancelled
        assert running() == '127.0.0.2' and running.status == dispy.DispyJob.Finished
        assert closed.wait(30)
        later = [cluster.submit(n, str(tmp_path)) for n in range(2, 5)]
        assert [job() for job in later] == ['127.0.0.3'] * 3
        assert other.submit('abc')() == 3 and other.submit_node('127.0.0.2', 'ab')() == 2
        assert cluster.allocate_node('127.0.0.2') == 0
        wait_for(lambda: initialized.count('127.0.0.2') == 2, 30, 'node set up again')
        assert cluster.submit_node('127.0.0.2', 5, str(tmp_path))() == '127.0.0.2'
        assert cluster.close_node('127.0.0.9') == -1
    finally:
        cluster.close()
        other.close()


def test_close_node_with_terminate_pending_cancels_its_running_jobs(daemons, tmp_path):
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2', cpus=1)
    cluster = dispy.SharedJobCluster(slow, **daemons.client_options())
    try:
        job = cluster.submit(0, str(tmp_path))
        wait_for(lambda: os.path.exists(tmp_path / 'started-0'), 30, 'job running')
        assert cluster.close_node('127.0.0.2', terminate_pending=True) == 0
        job()
        assert job.status == dispy.DispyJob.Cancelled
    finally:
        cluster.close()


def test_deallocate_node_sends_its_jobs_elsewhere_until_allocate_node(daemons, tmp_path):
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2')
    daemons.start_node('127.0.0.3')
    cluster = dispy.SharedJobCluster(slow, **daemons.client_options())
    try:
        wait_for(lambda: cluster.submit_node('127.0.0.2', 0, str(tmp_path))() == '127.0.0.2',
                 30, 'node 127.0.0.2 in use')
        assert cluster.deallocate_node('127.0.0.2') == 0
        jobs = [cluster.submit(n, str(tmp_path)) for n in range(1, 7)]
        assert {job() for job in jobs} == {'127.0.0.3'}
        assert cluster.allocate_node('127.0.0.2') == 0
        jobs = [cluster.submit(n, str(tmp_path)) for n in range(7, 15)]
        assert {job() for job in jobs} == {'127.0.0.2', '127.0.0.3'}
        assert cluster.deallocate_node('127.0.0.9') == -1
    finally:
        cluster.close()


def plain_setup():
    global data, label
    data = label = ''
    return 0


def test_set_node_cpus_limits_this_clusters_jobs_on_a_node(daemons):
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2', cpus=4)
    initialized = threading.Event()
    cluster = dispy.SharedJobCluster(
        compute, setup=plain_setup,
        cluster_status=lambda status, node, job: status == dispy.DispyNode.Initialized
        and initialized.set(), **daemons.client_options())
    try:
        assert initialized.wait(30)
        assert cluster.set_node_cpus('127.0.0.2', 1) == 1
        jobs = [cluster.submit(n) for n in range(8)]
        spans = sorted(job()[4:] for job in jobs)
        assert all(job.status == dispy.DispyJob.Finished for job in jobs)
        for (_, end), (start, _) in zip(spans, spans[1:]):
            assert start >= end, spans  # one at a time on that node
        assert cluster.set_node_cpus('127.0.0.2', -1) == 3
        assert cluster.set_node_cpus('127.0.0.2', 100) == 4  # at most the node's CPUs
        assert cluster.set_node_cpus('127.0.0.9', 1) == -1
    finally:
        cluster.close()


def reads(name):
    with open(name) as handle:
        return handle.read()


def test_send_file_puts_a_file_where_the_next_jobs_find_it(daemons, tmp_path):
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2')
    nodes = []
    cluster = dispy.SharedJobCluster(
        reads, cluster_status=lambda status, node, job: status == dispy.DispyNode.Initialized
        and nodes.append(node), **daemons.client_options())
    try:
        wait_for(lambda: nodes, 30, 'node set up')
        path = tmp_path / 'late.txt'
        for text in ('first version', 'second version'):
            path.write_text(text)
            os.utime(path, ns=(0, len(text)))  # a new version is noticed, whatever the clock
            assert cluster.send_file(str(path), nodes[0]) == 0
            assert cluster.submit_node(nodes[0], 'late.txt')() == text
        assert cluster.send_file(str(path), '127.0.0.9') == -1
    finally:
        cluster.close()


def test_discover_nodes_finds_a_node_before_the_next_ping(daemons):
    """dispy's node_update.py calls ``discover_nodes(['*'])`` until its node appears."""
    daemons.start_scheduler('--ping_interval', '600', nodes=('127.0.0.2',))
    daemons.start_node('127.0.0.2')
    unknown = daemons.start_node('127.0.0.3', scheduler=None, wait=False)
    unknown.wait_log('serving with')  # and waiting for a ping
    nodes = set()
    cluster = dispy.SharedJobCluster(
        len,
        cluster_status=lambda status, node, job: status == dispy.DispyNode.Initialized
        and nodes.add(node.ip_addr), **daemons.client_options())
    try:
        wait_for(lambda: nodes == {'127.0.0.2'}, 30, 'the known node')
        assert cluster.discover_nodes(['127.0.0.3']) == 0
        wait_for(lambda: nodes == {'127.0.0.2', '127.0.0.3'}, 30, 'the discovered node')
        assert cluster.submit_node('127.0.0.3', 'abcd')() == 4
    finally:
        cluster.close()
