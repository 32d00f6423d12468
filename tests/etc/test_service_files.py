"""The service files of etc/: the init.d scripts against the real daemons, the systemd units,
the example defaults and option files.

The init scripts run as they would from /etc/init.d, pointed at this checkout and a temporary
directory through PIDFILE, DEFAULTS_FILE, DAEMON and PYTHON; the daemons they start detach
(double fork), so each test remembers every daemon's pid and session and fails if anything of
them is left at the end (after killing it by pid).
"""

import configparser
import os
import re
import shutil
import signal
import subprocess
import sys

import pytest
from daemons import BIN, CLUSTER_SECRET, NODE_SECRET, REPO, free_ports, session_members, wait_for

from dispyscheduler import DispyJob, SharedJobCluster, optionfile
from dispyscheduler.cli import OPTIONS, node_parser, scheduler_parser

ETC = os.path.join(REPO, 'etc')
NAMES = ('dispyscheduler', 'dispynode')
PARSERS = {'dispyscheduler': scheduler_parser, 'dispynode': node_parser}


def alive(pid):
    """Whether ``pid`` is a live process (a zombie is not: nothing may reap the daemons'
    parents in a container whose pid 1 is not an init)."""
    try:
        with open('/proc/%d/stat' % pid) as handle:
            stat = handle.read()
    except OSError:
        return False
    return stat[stat.rindex(')') + 2] != 'Z'


def session_of(pid):
    with open('/proc/%d/stat' % pid) as handle:
        stat = handle.read()
    return int(stat[stat.rindex(')') + 2:].split()[3])


class Service:
    """One daemon run through its init script, in ``directory``."""

    def __init__(self, name, directory, args):
        self.name = name
        self.directory = str(directory)
        self.pid_file = os.path.join(self.directory, name + '.pid')
        self.log_file = os.path.join(self.directory, name + '.log')
        defaults = os.path.join(self.directory, name + '.defaults')
        with open(defaults, 'w') as handle:
            handle.write('# written by the test\nDAEMON_ARGS="%s --log_file %s"\n'
                         % (' '.join(args), self.log_file))
        self.env = dict(os.environ, PIDFILE=self.pid_file, DEFAULTS_FILE=defaults,
                        DAEMON=os.path.join(BIN, name), PYTHON=sys.executable)
        self.pids = set()      # every daemon pid seen
        self.sessions = set()  # and its session: worker processes of a node are in it

    def run(self, action, timeout=90):
        result = subprocess.run([os.path.join(ETC, 'init.d', self.name), action],
                                env=self.env, cwd=self.directory, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                timeout=timeout)
        return result

    def check(self, action, expected):
        result = self.run(action)
        assert result.returncode == expected, (
            '%s %s: exit status %d, not %d\nstdout: %s\nstderr: %s\nlog: %s'
            % (self.name, action, result.returncode, expected, result.stdout, result.stderr,
               self.log()[-3000:]))
        return result

    def pid(self):
        """The pid in the pid file (remembered, with its session)."""
        with open(self.pid_file) as handle:
            pid = int(handle.read())
        self.pids.add(pid)
        try:
            self.sessions.add(session_of(pid))
        except OSError:
            pass
        return pid

    def log(self):
        try:
            with open(self.log_file, errors='replace') as handle:
                return handle.read()
        except OSError:
            return ''

    def leftovers(self):
        """PIDs still alive of every daemon seen and of its session."""
        found = {pid for pid in self.pids if alive(pid)}
        for sid in self.sessions:
            found.update(session_members(sid))
        return found


@pytest.fixture
def services(tmp_path, request):
    """Make Services; at the end stop them with their scripts, and fail if any process of
    theirs is left (killed by pid)."""
    made = []
    ports = free_ports(3, ('127.0.0.1', '127.0.0.2'))

    def make(name, args):
        service = Service(name, tmp_path, args)
        made.append(service)
        return service
    make.ports = ports
    yield make
    for service in reversed(made):  # nodes before their scheduler
        if os.path.exists(service.pid_file):
            try:
                service.pid()
            except (OSError, ValueError):
                pass
            service.run('stop')
    leftovers = {}
    for service in made:
        try:
            wait_for(lambda service=service: not service.leftovers(), 5,
                     'the processes of %s to end' % service.name)
        except AssertionError:
            pass
        left = service.leftovers()
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if left:
            leftovers[service.name] = sorted(left)
    failed = getattr(request.node, 'rep_call', None)
    if failed is not None and failed.failed:
        for service in made:
            sys.stderr.write('----- %s log -----\n%s\n' % (service.name, service.log()[-5000:]))
    assert not leftovers, 'processes left running after the test: %s' % (leftovers,)


def scheduler_args(tmp_path, ports):
    port, node_port, scheduler_port = ports
    return ['-i', '127.0.0.1', '--port', str(port), '--scheduler_port', str(scheduler_port),
            '--node_port', str(node_port), '-n', '127.0.0.2', '--node_secret', NODE_SECRET,
            '--cluster_secret', CLUSTER_SECRET, '--ping_interval', '1',
            '--dest_path_prefix', str(tmp_path / 'scheduler-files')]


def node_args(tmp_path, ports):
    port, node_port, _ = ports
    return ['-i', '127.0.0.2', '--scheduler_node', '127.0.0.1', '--scheduler_port', str(port),
            '-p', str(node_port), '-s', NODE_SECRET, '--cpus', '2',
            '--dest_path_prefix', str(tmp_path / 'node-files')]


ARGS = {'dispyscheduler': scheduler_args, 'dispynode': node_args}


def spare_pid():
    """The pid of a process that has just ended (and been reaped)."""
    process = subprocess.Popen(['true'])
    process.wait()
    assert not alive(process.pid)
    return process.pid


@pytest.mark.parametrize('name', NAMES)
def test_init_script_life_cycle(name, services, tmp_path):
    service = services(name, ARGS[name](tmp_path, services.ports))
    assert service.check('status', 3).stdout.strip() == '%s is not running' % name

    service.check('start', 0)
    assert os.path.exists(service.pid_file)
    pid = service.pid()
    assert alive(pid) and service.sessions
    with open('/proc/%d/cmdline' % pid, 'rb') as handle:
        assert os.path.join(BIN, name).encode() in handle.read().split(b'\0')
    assert str(pid) in service.check('status', 0).stdout
    assert 'already running' in service.check('start', 0).stdout
    assert service.pid() == pid

    service.check('restart', 0)
    new_pid = service.pid()
    assert new_pid != pid and alive(new_pid) and not alive(pid)
    service.check('force-reload', 0)
    pid = service.pid()
    assert pid != new_pid and alive(pid) and not alive(new_pid)

    service.check('stop', 0)
    assert not alive(pid)
    assert not os.path.exists(service.pid_file)  # the daemon removed it at exit
    assert not service.leftovers()
    service.check('status', 3)
    service.check('stop', 0)
    service.check('try-restart', 0)  # not running: stays so
    service.check('status', 3)

    # a stale pid file: dead but pid file exists; stop clears it
    with open(service.pid_file, 'w') as handle:
        handle.write('%d\n' % spare_pid())
    assert 'dead' in service.check('status', 1).stdout
    service.check('stop', 0)
    assert not os.path.exists(service.pid_file)
    service.check('status', 3)


def test_init_script_leaves_other_processes_alone(services, tmp_path):
    """A pid file naming a live process that is not the daemon (a recycled pid): not running,
    and stop does not signal it."""
    service = services('dispyscheduler', scheduler_args(tmp_path, services.ports))
    other = subprocess.Popen(['sleep', '60'])
    try:
        with open(service.pid_file, 'w') as handle:
            handle.write('%d\n' % other.pid)
        service.check('status', 1)
        service.check('stop', 0)
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


@pytest.mark.parametrize('name', NAMES)
def test_init_script_usage_errors(name, services, tmp_path):
    service = services(name, ARGS[name](tmp_path, services.ports))
    assert service.check('no-such-action', 2).stderr.startswith('Usage:')
    service.check('reload', 3)  # the daemons cannot reload their options
    missing = subprocess.run([os.path.join(ETC, 'init.d', name)], env=service.env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert missing.returncode == 2
    service.env['DAEMON'] = str(tmp_path / 'not-installed')
    service.check('start', 5)
    service.env['DAEMON'] = os.path.join(BIN, name)
    with open(service.env['DEFAULTS_FILE'], 'w') as handle:
        handle.write('DAEMON_ARGS="--no_such_option"\n')
    result = service.check('start', 6)  # not configured: the daemon's own error is shown
    assert 'unrecognized arguments: --no_such_option' in result.stderr
    assert not os.path.exists(service.pid_file)


def test_init_scripts_run_a_working_cluster(services, tmp_path):
    """Scheduler and node started by their init scripts serve a SharedJobCluster."""
    scheduler = services('dispyscheduler', scheduler_args(tmp_path, services.ports))
    node = services('dispynode', node_args(tmp_path, services.ports))
    scheduler.check('start', 0)
    scheduler.pid()
    node.check('start', 0)
    node.pid()
    wait_for(lambda: re.search(r'node 127\.0\.0\.2:\d+ .* joined', scheduler.log()), 15,
             'the node to join:\n%s' % scheduler.log()[-3000:])
    cluster = SharedJobCluster(cube, scheduler_node='127.0.0.1',
                               scheduler_port=services.ports[2], secret=CLUSTER_SECRET)
    try:
        jobs = [cluster.submit(n) for n in range(6)]
        assert cluster.wait(timeout=60)
        assert [job.result for job in jobs] == [n ** 3 for n in range(6)]
        assert {job.status for job in jobs} == {DispyJob.Finished}
        assert {job.ip_addr for job in jobs} == {'127.0.0.2'}
        # the node's worker processes are in its session: the checks below see them
        assert len(node.sessions) == 1
        assert len(session_members(next(iter(node.sessions)))) > 1
    finally:
        cluster.close()
    sessions = set(node.sessions)
    node.check('stop', 0)
    scheduler.check('stop', 0)
    assert not node.leftovers() and not scheduler.leftovers()
    assert all(not session_members(sid) for sid in sessions)  # the node's workers too
    node.check('status', 3)
    scheduler.check('status', 3)


def cube(n):
    return n ** 3


@pytest.mark.parametrize('name', NAMES)
def test_init_script_syntax(name):
    script = os.path.join(ETC, 'init.d', name)
    assert os.access(script, os.X_OK)
    with open(script) as handle:
        text = handle.read()
    assert text.startswith('#!/bin/sh\n### BEGIN INIT INFO\n')
    assert '# Provides:          %s\n' % name in text and '### END INIT INFO' in text
    subprocess.run(['sh', '-n', script], check=True)
    if shutil.which('shellcheck') is None:
        pytest.skip('shellcheck is not installed (sh -n passed)')
    result = subprocess.run(['shellcheck', '-s', 'sh', script], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize('name', NAMES)
def test_config_example_round_trip(name, tmp_path):
    """Every key of the example option file is a real option: the daemon reads it and writes
    the same values back with --save_config; the commented ones are options too."""
    example = os.path.join(ETC, name + '.conf.example')
    saved = str(tmp_path / 'saved.conf')
    result = subprocess.run([sys.executable, os.path.join(BIN, name), '--config', example,
                             '--save_config', saved], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, timeout=60)
    assert result.returncode == 0, result.stdout
    given = optionfile.read_option_file(name, OPTIONS[name], example)
    written = optionfile.read_option_file(name, OPTIONS[name], saved)
    assert given, 'no options in %s' % example
    for key, value in given.items():
        assert written.get(key) == value, (key, value, written.get(key))
    with open(example) as handle:
        commented = re.findall(r'^#\s*([a-z_]+)\s*=', handle.read(), re.M)
    options = {option.dest for option in OPTIONS[name] if option.in_files}
    assert commented and set(commented) <= options, set(commented) - options


@pytest.mark.parametrize('name', NAMES)
def test_defaults_examples_parse(name):
    """The defaults file is plain shell, and each DAEMON_ARGS in it (commented or not) is a
    command line the daemon accepts (--config pointing at the example option file)."""
    path = os.path.join(ETC, 'default', name)
    result = subprocess.run(['sh', '-c', '. "$1" && printf %s "$DAEMON_ARGS"', 'sh', path],
                            stdout=subprocess.PIPE, text=True, check=True)
    assert result.stdout == '--config /etc/%s.conf' % name
    with open(path) as handle:
        lines = re.findall(r'^#?\s*DAEMON_ARGS="([^"]*)"', handle.read(), re.M)
    assert len(lines) >= 4
    example = os.path.join(ETC, name + '.conf.example')
    for line in lines:
        argv = line.replace('/etc/%s.conf' % name, example).split()
        assert not {'--daemon', '--pid_file'} & set(argv)
        optionfile.parse_args(PARSERS[name](), OPTIONS[name], argv)  # exits if refused


def unit(name):
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read(os.path.join(ETC, 'systemd', name + '.service'))
    return parser


@pytest.mark.parametrize('name', NAMES)
def test_systemd_unit_settings(name):
    service = unit(name)['Service']
    assert service['Type'] == 'simple'
    assert service['EnvironmentFile'] == '-/etc/default/%s' % name
    assert service['ExecStart'] == '/usr/local/bin/%s $DAEMON_ARGS' % name
    assert service['ExecReload'] == '/bin/kill -HUP $MAINPID'
    assert service['Restart'] == 'on-failure' and service['KillSignal'] == 'SIGTERM'
    assert service['TimeoutStopSec'] == {'dispyscheduler': '15', 'dispynode': '45'}[name]
    assert 'network-online.target' in unit(name)['Unit']['After']


@pytest.mark.parametrize('name', NAMES)
def test_systemd_unit_verifies(name, tmp_path):
    analyze = shutil.which('systemd-analyze')
    if analyze is None:
        pytest.skip('systemd-analyze is not installed on this machine')
    # verify checks that ExecStart's program exists: point it at this checkout's bin/
    with open(os.path.join(ETC, 'systemd', name + '.service')) as handle:
        text = handle.read().replace('/usr/local/bin/' + name, os.path.join(BIN, name))
    path = tmp_path / (name + '.service')
    path.write_text(text)
    result = subprocess.run([analyze, 'verify', str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, timeout=60)
    # unknown keys and bad values are only warnings (exit status 0): fail on any about it
    complaints = [line for line in result.stdout.splitlines() if name + '.service' in line]
    assert result.returncode == 0 and not complaints, result.stdout
