"""dispynode's options from dispy 4.15 with effects of their own (issue 15, item 13):
``--serve N``, the daily service window (``--service_start``, ``--service_stop``,
``--service_end``) and ``--clean``, on real daemons."""

import datetime
import os
import time

from daemons import wait_for

import dispyscheduler as dispy


def test_serve_n_exits_after_serving_n_computations(daemons):
    daemons.start_scheduler()
    node = daemons.start_node('127.0.0.2', '--serve', '2')
    for text in ('first', 'second'):
        with dispy.SharedJobCluster(len, **daemons.client_options()) as cluster:
            assert cluster.submit(text)() == len(text)
            assert node.alive()
    wait_for(lambda: not node.alive(), 30, 'the node to exit after its second computation')
    assert node.process.returncode == 0
    assert 'served 2 computations (--serve): stopping' in node.log()


def test_clean_removes_only_computation_directories_left_by_a_previous_run(daemons, tmp_path):
    daemons.start_scheduler()
    prefix = os.path.join(daemons.directory, 'node-127.0.0.2')
    os.makedirs(os.path.join(prefix, '17_0a1b2c3d', 'data'))
    os.makedirs(os.path.join(prefix, 'keep-me'))
    daemons.start_node('127.0.0.2', '--clean')
    assert not os.path.exists(os.path.join(prefix, '17_0a1b2c3d'))
    assert os.path.isdir(os.path.join(prefix, 'keep-me'))
    with dispy.SharedJobCluster(len, **daemons.client_options()) as cluster:
        assert cluster.submit('abc')() == 3


def runs_until_interrupted(directory):
    import time
    open(os.path.join(directory, 'started'), 'w').close()
    try:
        while True:
            time.sleep(0.05)
    except KeyboardInterrupt:  # as dispy's longrun.py: the node's service ends
        return 'interrupted'


def time_of_day(moment):
    return datetime.datetime.fromtimestamp(moment).strftime('%H:%M:%S')


def log_time(log, text):
    """When the line with ``text`` was logged (the daemons log local times)."""
    line = next(line for line in log.splitlines() if text in line)
    return datetime.datetime.strptime(line[:23], '%Y-%m-%d %H:%M:%S,%f').timestamp()


def test_service_window_start_stop_and_end(daemons, tmp_path):
    """Before its start the node does not join; from its stop it takes no new jobs and
    finishes (here: keeps) the running one; at its end the running job is interrupted as
    ``cancel`` does, and the node leaves until the next start."""
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2', cpus=1)
    now = time.time()
    start, stop, end = now + 5, now + 15, now + 25
    timed = daemons.start_node('127.0.0.3', '--service_start', time_of_day(start),
                               '--service_stop', time_of_day(stop), '--service_end',
                               time_of_day(end), cpus=1, wait=False)
    timed.wait_log('serving with')
    initialized = []
    cluster = dispy.SharedJobCluster(
        runs_until_interrupted,
        cluster_status=lambda status, node, job: status == dispy.DispyNode.Initialized
        and initialized.append(node.ip_addr), **daemons.client_options())
    try:
        timed.wait_log('service window: serving', timeout=30)
        daemons.scheduler.wait_log(r'node 127\.0\.0\.3:\d+ .* joined')
        assert log_time(daemons.scheduler.log(), 'node 127.0.0.3') >= int(start) - 1
        wait_for(lambda: '127.0.0.3' in initialized, 30, 'the timed node set up')
        running = cluster.submit_node('127.0.0.3', str(tmp_path))
        wait_for(lambda: os.path.exists(tmp_path / 'started'), 30, 'the job started')
        timed.wait_log('service window: stopping', timeout=30)
        daemons.scheduler.wait_log('node 127.0.0.3:\\d+ is shutting down')
        os.remove(tmp_path / 'started')
        later = cluster.submit(str(tmp_path))  # goes to the node still in service
        wait_for(lambda: os.path.exists(tmp_path / 'started'), 30, 'the later job started')
        assert not running.finish.is_set()  # the running one goes on after the stop
        timed.wait_log('service window: off', timeout=30)
        assert running() == 'interrupted' and running.status == dispy.DispyJob.Finished
        assert running.ip_addr == '127.0.0.3'
        assert log_time(timed.log(), 'service window: off') >= int(end) - 1
        daemons.scheduler.wait_log('node 127.0.0.3:\\d+ lost')
        cluster.cancel(later)
        assert later() == 'interrupted' and later.ip_addr == '127.0.0.2'
        assert timed.alive()  # waiting for tomorrow's start
    finally:
        cluster.close()
