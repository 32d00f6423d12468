"""A bug in a daemon reaches its log with its traceback, even with ``--daemon`` (which points
stderr at /dev/null), and is logged as a bug, not as a peer lost; the daemon keeps serving.

The bugs are injected into the real daemons by ``buggy_daemon.py``; each daemon runs detached
(``--daemon --log_file F --pid_file P``) and is stopped by the pid in its pid file.
"""

import os
import re
import signal

import pytest
from daemons import BIN, CLUSTER_SECRET, NODE_SECRET, REPO, wait_for

from dispyscheduler import DispyJob, SharedJobCluster

BUGGY = os.path.join(REPO, 'tests', 'integration', 'buggy_daemon.py')


def compute(n):
    return n + 1


def slow(n):
    import time
    time.sleep(n)
    return n


class Detached:
    """A daemon that detached: known by the pid in its pid file, its log in a file."""

    def __init__(self, daemons, name, argv):
        self.log_file = os.path.join(daemons.directory, name + '.daemon.log')
        self.pid_file = os.path.join(daemons.directory, name + '.pid')
        launcher = daemons.spawn(name, argv + ['--daemon', '--log_file', self.log_file,
                                               '--pid_file', self.pid_file])
        wait_for(lambda: launcher.process.poll() is not None, 30, '%s to detach' % name)
        assert launcher.process.returncode == 0, launcher.log()
        wait_for(lambda: os.path.exists(self.pid_file), 30, 'the pid file of %s' % name)
        with open(self.pid_file) as handle:
            self.pid = int(handle.read())

    def log(self):
        with open(self.log_file, errors='replace') as handle:
            return handle.read()

    def wait_log(self, pattern, timeout=30):
        wait_for(lambda: re.search(pattern, self.log()), timeout,
                 '%r in %s:\n%s' % (pattern, self.log_file, self.log()[-3000:]))

    def alive(self):
        try:
            os.kill(self.pid, 0)
            return True
        except ProcessLookupError:
            return False

    def stop(self):
        """SIGTERM by pid, then SIGKILL of its process group if it lingers."""
        if not self.alive():
            return
        os.kill(self.pid, signal.SIGTERM)
        try:
            wait_for(lambda: not self.alive() or is_zombie(self.pid), 15, 'the daemon to stop')
        except AssertionError:
            os.killpg(self.pid, signal.SIGKILL)


def is_zombie(pid):
    try:
        with open('/proc/%d/stat' % pid) as handle:
            stat = handle.read()
    except OSError:
        return True
    return stat[stat.rindex(')') + 2] == 'Z'


@pytest.fixture
def detached():
    started = []
    yield started
    for daemon in started:
        daemon.stop()


def scheduler_argv(daemons, *program):
    return list(program) + ['-i', '127.0.0.1', '-p', str(daemons.port), '--scheduler_port',
            str(daemons.scheduler_port), '--node_port', str(daemons.node_port),
            '--node_secret', NODE_SECRET, '--cluster_secret', CLUSTER_SECRET,
            '--dest_path_prefix', os.path.join(daemons.directory, 'scheduler'),
            '--ping_interval', '1', '--pulse_interval', '1', '-n', '127.0.0.2']


def node_argv(daemons, *program):
    return list(program) + ['-i', '127.0.0.2', '--cpus', '2', '-s', NODE_SECRET, '-p',
            str(daemons.node_port), '--scheduler_port', str(daemons.port),
            '--scheduler_node', '127.0.0.1', '--dest_path_prefix',
            os.path.join(daemons.directory, 'node')]


def assert_traceback(log, function):
    """The log holds a traceback of the injected bug that passes through ``function``."""
    assert 'Traceback (most recent call last)' in log, log[-3000:]
    assert 'ZeroDivisionError: injected bug' in log, log[-3000:]
    assert re.search(r'in %s\b' % function, log), log[-3000:]


def test_a_bug_in_the_schedulers_handlers_is_logged_with_its_traceback(daemons, detached):
    scheduler = Detached(daemons, 'scheduler', scheduler_argv(daemons, BUGGY, 'scheduler'))
    detached.append(scheduler)
    scheduler.wait_log('serving nodes')
    daemons.start_node('127.0.0.2', wait=False)
    scheduler.wait_log(r'node 127\.0\.0\.2:\d+ .* joined')
    # the node's first pulse (after a second) meets the bug in the node handler; the node
    # is then dropped, which the log says just after the traceback
    scheduler.wait_log(r'node 127\.0\.0\.2:\d+ lost: the scheduler failed to handle its '
                       r'message \(an internal error\)')
    log = scheduler.log()
    assert 'internal error' in log
    assert_traceback(log, 'buggy')
    assert_traceback(log, 'run_reader')
    assert not re.search(r'lost: its connection closed', log), log[-3000:]
    assert scheduler.alive()
    # a bug in the client handler: logged as one; the client connects again and goes on
    with SharedJobCluster(slow, **daemons.client_options()) as cluster:
        job = cluster.submit(30)
        cluster.cancel(job)
        wait_for(lambda: 'handling a message from the client of cluster' in scheduler.log(),
                 30, "the client handler's bug in the log")
        cluster.close(terminate=True)
    assert log_count(scheduler, 'ZeroDivisionError: injected bug') >= 2
    assert scheduler.alive()
    # a bug in a greenlet of its own (the one that sends a computation's files): the hub
    # reports it in the log, not on the stderr that --daemon closed
    depends = os.path.join(daemons.directory, 'data.txt')
    with open(depends, 'w') as handle:
        handle.write('data')
    with SharedJobCluster(compute, depends=[depends], **daemons.client_options()) as cluster:
        scheduler.wait_log(r'internal error: <Greenlet.*stream_files.*> failed with '
                           r'ZeroDivisionError')
        cluster.close(terminate=True)
    assert_traceback(scheduler.log(), 'buggy')
    assert scheduler.alive()


def log_count(daemon, text):
    return daemon.log().count(text)


def test_a_bug_in_the_nodes_handler_is_logged_and_the_node_links_again(daemons, detached):
    daemons.start_scheduler(nodes=('127.0.0.2',))
    node = Detached(daemons, 'node', node_argv(daemons, BUGGY, 'node'))
    detached.append(node)
    daemons.scheduler.wait_log(r'node 127\.0\.0\.2:\d+ .* joined')
    with SharedJobCluster(compute, **daemons.client_options()) as cluster:
        job = cluster.submit(1)
        assert job() == 2 and job.status == DispyJob.Finished
        # the result's acknowledgement (within ~50 ms) meets the bug in the node
        node.wait_log('ZeroDivisionError: injected bug')
        node.wait_log('linked to scheduler at .*\n(.|\n)*linked to scheduler at')
    log = node.log()
    assert 'internal error: handling a message from the scheduler failed' in log
    assert_traceback(log, 'buggy')
    assert_traceback(log, 'run_reader')
    assert node.alive()



@pytest.mark.parametrize('program', ['dispyscheduler', 'dispynode'])
def test_a_fatal_signal_leaves_its_traceback_in_the_log(daemons, detached, program):
    """A daemon killed by SIGBUS (a mapped file that became unwritable, say) or SIGSEGV once
    left nothing in its log; now faulthandler writes the signal and the Python stack there,
    even after the log was reopened (SIGHUP, logrotate)."""
    if program == 'dispyscheduler':
        argv = scheduler_argv(daemons, os.path.join(BIN, program))
    else:
        daemons.start_scheduler(nodes=())
        argv = node_argv(daemons, os.path.join(BIN, program))
    daemon = Detached(daemons, program, argv)
    detached.append(daemon)
    daemon.wait_log('serving|linked to scheduler')
    os.rename(daemon.log_file, daemon.log_file + '.1')
    os.kill(daemon.pid, signal.SIGHUP)
    wait_for(lambda: os.path.exists(daemon.log_file), 30, 'the log to be reopened')
    os.kill(daemon.pid, signal.SIGBUS)
    daemon.wait_log('Fatal Python error: Bus error')
    assert 'Current thread' in daemon.log() or 'Thread 0x' in daemon.log(), daemon.log()
