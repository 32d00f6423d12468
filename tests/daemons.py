"""Starting the real daemons for integration tests, and making sure they are gone afterwards.

Each daemon runs as a subprocess in a session of its own, on a loopback address of its own
(scheduler on 127.0.0.1, nodes on 127.0.0.2, 127.0.0.3, ...), with ports picked per test.
``stop_all`` ends each by PID (SIGTERM, then SIGKILL) and then checks that nothing of its
session is left: a worker process that outlived its node is a test failure.
"""

import ctypes
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(REPO, 'bin')
NODE_SECRET = 'node-secret'
CLUSTER_SECRET = 'cluster-secret'


def free_ports(count=3, addresses=('127.0.0.1',)):
    """``count`` consecutive ports free for TCP and UDP on every address."""
    for _ in range(200):
        base = random.randrange(20000, 32000)
        if all(port_free(address, base + i) for i in range(count) for address in addresses):
            return list(range(base, base + count))
    raise RuntimeError('no free ports found')


def port_free(address, port):
    """Whether the daemons could bind ``port`` on ``address``: TCP as they do it (with
    SO_REUSEADDR, so connections in TIME_WAIT do not count), UDP with no one else on it."""
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            if kind == socket.SOCK_STREAM:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((address, port))
            except OSError:
                return False
    return True


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError('timed out after %ss waiting for %s' % (timeout, what))


class Daemon:
    def __init__(self, name, argv, log_path):
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self.log_file = open(log_path, 'wb')
        self.process = subprocess.Popen(argv, stdout=self.log_file, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True,
                                        cwd=os.path.dirname(log_path),
                                        preexec_fn=die_with_parent)

    @property
    def pid(self):
        return self.process.pid

    def log(self):
        with open(self.log_path, errors='replace') as handle:
            return handle.read()

    def wait_log(self, pattern, timeout=15):
        wait_for(lambda: re.search(pattern, self.log()), timeout,
                 '%r in the log of %s:\n%s' % (pattern, self.name, self.log()[-3000:]))

    def alive(self):
        return self.process.poll() is None

    def crashes(self):
        """Internal errors: greenlets that died of an unexpected exception, handlers that
        failed (the daemons log each one as an internal error)."""
        return [line for line in self.log().splitlines()
                if '> failed with ' in line or 'internal error' in line]

    def kill(self):
        """``kill -9`` of the daemon's whole process group (it and its workers)."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()

    def stop(self, timeout=10):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log_file.close()


def check_no_crashes(daemons):
    crashes = [(daemon.name, line) for daemon in daemons for line in daemon.crashes()]
    assert not crashes, 'greenlets died of errors: %s' % (crashes,)


def die_with_parent():
    """In the child before exec: SIGTERM it if the test process dies (a test run killed
    half way must not leave daemons behind)."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL('libc.so.6', use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def processes():
    """``(pid, state, ppid, sid, cmdline)`` of every process on this host."""
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % entry) as handle:
                stat = handle.read()
            with open('/proc/%s/cmdline' % entry, 'rb') as handle:
                cmdline = handle.read()
        except OSError:
            continue  # it ended meanwhile
        fields = stat[stat.rindex(')') + 2:].split()
        yield int(entry), fields[0], int(fields[1]), int(fields[3]), cmdline


def session_members(sid):
    """PIDs of live processes in session ``sid`` (zombies excluded)."""
    return [pid for pid, state, _, session, _ in processes() if session == sid and state != 'Z']


class Cluster:
    """The daemons of one test: a scheduler and nodes on loopback."""

    def __init__(self, directory):
        self.directory = str(directory)
        self.daemons = []
        self.port, self.node_port, self.scheduler_port = free_ports(
            3, ('127.0.0.1', '127.0.0.2', '127.0.0.3', '127.0.0.4'))
        self.scheduler = None

    def spawn(self, name, argv):
        daemon = Daemon(name, [sys.executable] + argv, os.path.join(self.directory,
                                                                     name + '.log'))
        self.daemons.append(daemon)
        return daemon

    def start_scheduler(self, *extra, nodes=('127.0.0.2', '127.0.0.3'), ip='127.0.0.1',
                        node_secret=NODE_SECRET, cluster_secret=CLUSTER_SECRET, wait=True,
                        name='scheduler'):
        argv = [os.path.join(BIN, 'dispyscheduler'), '-i', ip, '-p', str(self.port),
                '--scheduler_port', str(self.scheduler_port), '--node_port',
                str(self.node_port), '--node_secret', node_secret, '--cluster_secret',
                cluster_secret, '--dest_path_prefix', os.path.join(self.directory, 'scheduler'),
                '--ping_interval', '1', '--pulse_interval', '1']
        for node in nodes:
            argv += ['-n', node]
        self.scheduler = self.spawn(name, argv + list(extra))
        if wait:
            self.scheduler.wait_log('serving nodes')
        return self.scheduler

    def start_node(self, ip, *extra, cpus=2, secret=NODE_SECRET, scheduler='127.0.0.1',
                   wait=True):
        argv = [os.path.join(BIN, 'dispynode'), '-i', ip, '--cpus', str(cpus), '-s', secret,
                '-p', str(self.node_port), '--scheduler_port', str(self.port),
                '--dest_path_prefix', os.path.join(self.directory, 'node-' + ip)]
        if scheduler:
            argv += ['--scheduler_node', scheduler]
        node = self.spawn('node-' + ip, argv + list(extra))
        if wait:
            self.scheduler.wait_log(r'node %s:\d+ .* joined' % re.escape(ip))
        return node

    def client_options(self, **overrides):
        options = dict(scheduler_node='127.0.0.1', scheduler_port=self.scheduler_port,
                       secret=CLUSTER_SECRET)
        options.update(overrides)
        return options

    def stop_and_check(self):
        """Stop every daemon, then fail if a process was left behind or a greenlet died of an
        error in any daemon (an error a test's own checks may not see)."""
        leftovers = self.stop_all()
        assert not leftovers, 'processes left running after the test: %s' % (leftovers,)
        check_no_crashes(self.daemons)

    def stop_all(self):
        """Stop every daemon; return the PIDs of processes any of them left behind."""
        leftovers = []
        for daemon in reversed(self.daemons):
            daemon.stop()
        for daemon in self.daemons:
            try:
                wait_for(lambda pid=daemon.pid: not session_members(pid), 5, 'session to empty')
            except AssertionError:
                pass
            members = session_members(daemon.pid)
            for pid in members:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            leftovers.extend((daemon.name, pid) for pid in members)
        return leftovers
