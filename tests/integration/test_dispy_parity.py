"""dispy 4.15 programs run as they are (issue 15): each test is written as a dispy user writes
the program, changed only in its import and the scheduler's address."""

import os

import pytest
from daemons import wait_for

from dispyscheduler import DispyJob, DispyNode, SharedJobCluster


def compute(n):
    import socket
    return n * 2, socket.gethostname()


def test_nodes_given_as_one_string_and_names_that_are_no_names(daemons):
    """``nodes='10.0.0.*'`` is one pattern (dispy wraps it in a list), not a list of
    characters; a name that cannot be a host name ('.', once an uncaught UnicodeError that
    ended the client's link) matches nothing and ends nothing."""
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2')
    with SharedJobCluster(compute, nodes='127.0.0.*', **daemons.client_options()) as cluster:
        jobs = [cluster.submit(n) for n in range(5)]
        assert [job()[0] for job in jobs] == [0, 2, 4, 6, 8]
        assert all(job.ip_addr == '127.0.0.2' for job in jobs)
    with SharedJobCluster(compute, nodes=['.', '127.0.0.2', 'a..b'],
                          **daemons.client_options()) as cluster:
        assert cluster.submit(21)()[0] == 42
    assert 'cannot resolve .' in daemons.scheduler.log()


def test_an_argument_larger_than_a_message_travels_on_its_own(daemons):
    """An argument larger than a message may be once made the client reconnect and send it
    again for ever (850 reconnects in 100 s), stalling every other job of the program; then
    submit() refused it. Now a large argument travels on its own, in chunks (issue 18), and
    only arguments too large for a message that are each too small to travel apart (many
    pieces of less than 64 KiB) are refused by submit()."""
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2')
    with SharedJobCluster(len, **daemons.client_options()) as cluster:
        small = cluster.submit(b'x' * 1000)
        large = cluster.submit(b'x' * (70 * 1024 * 1024))
        with pytest.raises(ValueError, match=r'the job has \d+ bytes of arguments and '
                                             r'files; one message may carry at most'):
            cluster.submit(*[bytes([n % 256]) * 60000 for n in range(1200)])
        assert small() == 1000
        assert large(timeout=120) == 70 * 1024 * 1024, (large.status, large.exception)
        after = cluster.submit(b'y' * 10)
        assert after() == 10 and after.status == DispyJob.Finished
    assert 'reconnect' not in daemons.scheduler.log()


def test_the_module_level_names_dispy_programs_use(daemons):
    """``dispy.config.MsgTimeout``, ``loglevel=dispy.logger.DEBUG``, ``DispyNodeAvailInfo``,
    ``DispyNode.platform``: each once an AttributeError."""
    import platform

    import dispyscheduler
    from dispyscheduler import DispyNode, DispyNodeAvailInfo, config, logger
    config.MsgTimeout = 20
    assert dispyscheduler.config.MsgTimeout == 20 and dispyscheduler.MsgTimeout == 10
    assert (logger.DEBUG, logger.INFO, logger.WARNING, logger.ERROR) == (10, 20, 30, 40)
    info = DispyNodeAvailInfo(50.0, 2 ** 30, 2 ** 34, 0.0)
    assert (info.cpu, info.memory, info.disk, info.swap) == (50.0, 2 ** 30, 2 ** 34, 0.0)
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2')
    nodes = []

    def cluster_status(status, node, job):
        if status == DispyNode.Initialized:
            nodes.append(node)

    with SharedJobCluster(compute, cluster_status=cluster_status, loglevel=logger.DEBUG,
                          **daemons.client_options()) as cluster:
        assert cluster.submit(1)()[0] == 2
    assert [node.platform for node in nodes] == [platform.platform()]
    assert isinstance(nodes[0].avail_info, DispyNodeAvailInfo)


def broken_setup():
    raise RuntimeError('the data file is missing')


def test_setup_failing_on_every_node_ends_the_jobs_instead_of_a_silent_hang(daemons, caplog):
    """dispy's most reported complaint: setup fails on every node and the program waits for
    ever. Each failure reaches cluster_status (the node, with the traceback) and the program's
    log at once; once no node can set the cluster up, its waiting jobs end Abandoned with the
    reasons, after NO_NODE_PINGS ping intervals (3 s here), jobs submitted later as well."""
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2')
    daemons.start_node('127.0.0.3')
    failures = []

    def cluster_status(status, node, job):
        if status == DispyNode.SetupFailed:
            failures.append((node.ip_addr, node.setup_failure))

    with SharedJobCluster(compute, setup=broken_setup, cluster_status=cluster_status,
                          **daemons.client_options()) as cluster:
        jobs = [cluster.submit(n) for n in range(5)]
        assert cluster.wait(timeout=60)
        later = cluster.submit(99)
        assert later(timeout=60) is None
    for job in jobs + [later]:
        assert job.status == DispyJob.Abandoned
        assert 'could not be set up on any node' in job.exception
        assert 'the data file is missing' in job.exception
    assert sorted(ip for ip, _ in failures) == ['127.0.0.2', '127.0.0.3']
    assert all('RuntimeError: the data file is missing' in why for _, why in failures)
    assert 'computation could not be set up on node' in caplog.text


def wait_for_file(path):
    import os
    import time
    while not os.path.exists(path):
        time.sleep(0.01)
    return path


def test_node_jobs_lists_this_clusters_jobs_running_on_a_node(daemons, tmp_path):
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2', cpus=2)
    with SharedJobCluster(wait_for_file, **daemons.client_options()) as cluster:
        jobs = [cluster.submit(str(tmp_path / ('go%d' % n))) for n in range(2)]
        wait_for(lambda: all(job.status == DispyJob.Running for job in jobs), 30, 'jobs to run')
        node = cluster.status().nodes[0]
        for key in (node, '127.0.0.2', node.name):
            assert sorted(job.id for job in cluster.node_jobs(key)) == [1, 2]
        assert cluster.node_jobs('127.0.0.3') == []
        for n in range(2):
            (tmp_path / ('go%d' % n)).touch()
        assert cluster.wait(60)
        assert cluster.node_jobs(node) == []


def catches_the_interrupt(directory):
    import os
    import time
    open(os.path.join(directory, 'started'), 'w').close()
    try:
        time.sleep(60)
    except KeyboardInterrupt:
        return 'interrupted, partial result'
    return 'slept'


def does_not_catch_it(directory):
    import os
    import time
    open(os.path.join(directory, 'started'), 'w').close()
    time.sleep(60)


def ignores_the_interrupt(directory):
    import os
    import signal
    import time
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    open(os.path.join(directory, 'started'), 'w').close()
    time.sleep(60)


def cancel_when_running(daemons, computation, directory):
    """Run one job of ``computation``, cancel it once it runs; its (status, result). The
    node's CPU then serves the next job."""
    with SharedJobCluster(computation, **daemons.client_options()) as cluster:
        job = cluster.submit(str(directory))
        wait_for(lambda: job.status == DispyJob.Running and (directory / 'started').exists(),
                 30, 'the job to run')
        assert cluster.cancel(job) == 0
        assert cluster.wait(60)
    with SharedJobCluster(wait_for_file, **daemons.client_options()) as cluster:
        (directory / 'go').touch()
        assert cluster.submit(str(directory / 'go'))() == str(directory / 'go')
    return job.status, job.result


def test_cancel_interrupts_a_running_job_first_as_dispy_does(daemons, tmp_path):
    """dispy interrupts a running job with SIGINT, so a job that catches KeyboardInterrupt
    returns its value and ends Finished with it; one that does not is Cancelled; one that
    ignores the interrupt is killed after CANCEL_GRACE (5 s) and Cancelled."""
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2', cpus=1)
    outcomes = []
    for computation in (catches_the_interrupt, does_not_catch_it, ignores_the_interrupt):
        directory = tmp_path / computation.__name__
        directory.mkdir()
        outcomes.append(cancel_when_running(daemons, computation, directory))
    assert outcomes == [(DispyJob.Finished, 'interrupted, partial result'),
                        (DispyJob.Cancelled, None), (DispyJob.Cancelled, None)]


def relays(name):
    with open(name, 'w') as handle:
        handle.write('data')
    assert dispy_provisional_result('half', True) == 0  # noqa: F821 (a node's global)
    assert dispy_send_file(name, relay=True) == 0  # noqa: F821
    return 'done'


def test_relay_of_provisional_results_and_files_is_accepted(daemons, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2')
    with SharedJobCluster(relays, **daemons.client_options()) as cluster:
        job = cluster.submit('relayed.txt')
        assert job() == 'done', job.exception
    assert (tmp_path / 'relayed.txt').read_text() == 'data'


def setup_returning(status):
    global loaded
    loaded = 'data for status %d' % status
    return status


def uses_loaded(n):
    return loaded  # noqa: F821 (made by setup)


def test_setup_may_return_0_1_or_2_as_in_dispy_4(daemons):
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2')
    import functools
    for status in (0, 1, 2):
        with SharedJobCluster(uses_loaded, setup=functools.partial(setup_returning, status),
                              **daemons.client_options()) as cluster:
            assert cluster.submit(1)() == 'data for status %d' % status
    failures = []
    with SharedJobCluster(uses_loaded, setup=functools.partial(setup_returning, 3),
                          cluster_status=lambda status, node, job: failures.append(
                              node.setup_failure) if status == DispyNode.SetupFailed else None,
                          **daemons.client_options()) as cluster:
        job = cluster.submit(1)
        assert cluster.wait(60)
    assert job.status == DispyJob.Abandoned
    assert 'setup returned 3, not 0, 1 or 2' in failures[0]


def delegate(func_name, n):
    # dispy's delegate.py: the function to run comes with the job
    return globals()[func_name](n)


def triple(n):
    return 'triple', 3 * n


class Scaler:
    def __init__(self, factor):
        self.factor = factor


def uses_shipped(name, n):
    import importlib
    helper = importlib.import_module(name)
    return helper.double(n), globals()['Scaler'](n).factor


def test_functions_classes_objects_and_modules_in_dispy_job_depends(daemons, tmp_path,
                                                                     monkeypatch):
    """``dispy_job_depends=[func]`` once raised TypeError in ``submit``: dispy ships
    functions, classes (an object: its class) and modules to the job."""
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2')
    (tmp_path / 'shipped_helper.py').write_text('def double(n):\n    return 2 * n\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    import shipped_helper
    with SharedJobCluster(delegate, **daemons.client_options()) as cluster:
        job = cluster.submit('triple', 5, dispy_job_depends=[triple])
        assert job() == ('triple', 15), job.exception
    with SharedJobCluster(uses_shipped, **daemons.client_options()) as cluster:
        job = cluster.submit('shipped_helper', 4,
                             dispy_job_depends=[shipped_helper, Scaler(2)])
        assert job() == (8, 4), job.exception
        with pytest.raises(ValueError, match='is not a file'):
            cluster.submit('x', 1, dispy_job_depends=[str(tmp_path / 'missing.txt')])


def sleeps_until(path):
    import time
    while not os.path.exists(path):
        time.sleep(0.02)
    return path


def test_dispy_httpd_status_page_of_the_programs_cluster(daemons, tmp_path):
    """``dispy.httpd.DispyHTTPServer(cluster)``: the program's own status page (dispy's
    httpd_example.py), once an ImportError."""
    import json
    import urllib.request

    import dispyscheduler.httpd
    from daemons import free_ports
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2')
    port, = free_ports(1)
    release = str(tmp_path / 'release')
    with SharedJobCluster(sleeps_until, **daemons.client_options()) as cluster:
        server = dispyscheduler.httpd.DispyHTTPServer(cluster, host='127.0.0.1', port=port,
                                                      poll_sec=1)
        try:
            jobs = [cluster.submit(release) for _ in range(2)]

            def fetch(path):
                with urllib.request.urlopen('http://127.0.0.1:%d%s' % (port, path),
                                            timeout=10) as answer:
                    return answer.read().decode()

            wait_for(lambda: len(json.loads(fetch('/jobs'))) == 2, 30, 'jobs running')
            status = json.loads(fetch('/cluster_status'))
            assert [cluster_['name'] for cluster_ in status] == ['sleeps_until']
            assert status[0]['jobs'] == {'submitted': 2, 'done': 0}
            assert [node['ip_addr'] for node in status[0]['nodes']] == ['127.0.0.2']
            assert status[0]['nodes'][0]['busy'] == 2
            assert release in json.loads(fetch('/jobs'))[0]['args']
            assert 'Cluster status' in fetch('/')
            open(release, 'w').close()
            assert [job() for job in jobs] == [release, release]
            status = json.loads(fetch('/cluster_status'))
            assert status[0]['jobs'] == {'submitted': 2, 'done': 2}
            assert status[0]['nodes'][0]['jobs_done'] == 2
            assert json.loads(fetch('/cluster_updates'))[0]['nodes']  # the first: all
            assert json.loads(fetch('/cluster_updates'))[0]['nodes'] == []  # none changed
        finally:
            server.shutdown(wait=False)


def test_nodes_report_what_they_have_free_and_jobs_count_bytes(daemons):
    """``DispyNode.AvailInfo`` events to ``cluster_status`` at each pulse, ``avail_info``
    for ``NodeAllocate.allocate``, and ``DispyNode.tx``/``rx``/``avail_cpus`` kept current."""
    from dispyscheduler import DispyNodeAvailInfo, NodeAllocate
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2')
    offered, reports = [], []

    class Allocate(NodeAllocate):
        def allocate(self, cluster, ip_addr, name, cpus, avail_info=None, platform=''):
            offered.append(avail_info)
            return cpus

    def cluster_status(status, node, job):
        if status == DispyNode.AvailInfo:
            reports.append(node.avail_info)

    with SharedJobCluster(len, nodes=[Allocate('*')], cluster_status=cluster_status,
                          **daemons.client_options()) as cluster:
        wait_for(lambda: len(reports) >= 2, 30, 'two availability reports')
        assert cluster.submit(b'x' * 100000)() == 100000
        node, = cluster.status().nodes
        assert node.tx > 100000 and 0 < node.rx < 1000
        assert node.avail_cpus == node.cpus == 2
    for info in offered + reports:
        assert isinstance(info, DispyNodeAvailInfo)
        assert 0 <= info.cpu <= 100 and 0 <= info.swap <= 100
        assert 0 < info.memory and 0 < info.disk
