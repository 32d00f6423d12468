"""Every example program dispy 4.15.2 ships runs against dispyscheduler.

The programs are in ``dispy_examples/``, byte for byte as dispy ships them (README.txt there).
Each test copies that directory, as a user runs an example from it, and changes the program only
as a user moving to dispyscheduler would, at run time and as text:

* the import: ``import dispy`` becomes ``import dispyscheduler as dispy`` (and
  ``import dispy.httpd`` becomes ``import dispyscheduler.httpd``);
* the scheduler's address: ``dispy.JobCluster(...)`` becomes ``dispy.SharedJobCluster(...)``
  with ``scheduler_host``, ``scheduler_port`` and ``secret`` added; sshportfw's node on EC2
  becomes a node of this test;
* the lengths of sleeps, listed with each test, so that each program runs in seconds.

One scheduler and two nodes of two CPUs each (127.0.0.2, 127.0.0.3) serve all the programs in
turn. Each program runs as a subprocess with a time limit, killed if it passes it; interactive
ones are driven through their standard input once their output (or the scheduler's status
page) shows the work happened. The tests check what each program prints.
"""

import ast
import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
from daemons import CLUSTER_SECRET, REPO, Cluster, free_ports, port_free

from dispyscheduler import recover_jobs

EXAMPLES = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'dispy_examples')
NODES = ('127.0.0.2', '127.0.0.3')
TIMEOUT = 120  # seconds a program may run before it is killed and its test fails
WAIT = 60  # seconds to wait for output that shows an interactive program did its work
HTTPD_PORT = 8181  # dispy.httpd.DispyHTTPServer's default port, which httpd_example uses


@pytest.fixture(scope='module')
def scheduler(tmp_path_factory):
    """The scheduler and its two nodes, shared by the examples; ``--httpd`` gives the status
    page the longrun test watches."""
    daemons = Cluster(tmp_path_factory.mktemp('dispy-examples'))
    daemons.status_port = free_ports(1)[0]
    try:
        daemons.start_scheduler('--httpd', '127.0.0.1:%d' % daemons.status_port)
        for node in NODES:
            daemons.start_node(node, cpus=2)
        yield daemons
    finally:
        daemons.stop_and_check()


# the changes to the programs

IMPORT = re.compile(r'^(?P<indent>[ \t]*)import (?P<names>[\w., \t]+)$', re.M)


def use_dispyscheduler(source):
    """``import dispy`` (alone or among other modules) -> ``import dispyscheduler as dispy``;
    ``import dispy.httpd`` -> ``import dispyscheduler.httpd`` (the program reaches it as
    ``dispy.httpd``, ``dispy`` being the package)."""
    def rewrite(match):
        names = [name.strip() for name in match.group('names').split(',')]
        if not any(name == 'dispy' or name.startswith('dispy.') for name in names):
            return match.group(0)
        names = ['dispyscheduler as dispy' if name == 'dispy' else
                 'dispyscheduler' + name[len('dispy'):] if name.startswith('dispy.') else name
                 for name in names]
        return match.group('indent') + 'import ' + ', '.join(names)

    return IMPORT.sub(rewrite, source)


def use_scheduler(source, daemons):
    """``dispy.JobCluster(args)`` -> ``dispy.SharedJobCluster(args, scheduler_host=...,
    scheduler_port=..., secret=...)``: the call found in the syntax tree, its name replaced
    and the keywords added before its closing parenthesis."""
    calls = [node for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Call)
             and isinstance(node.func, ast.Attribute) and node.func.attr == 'JobCluster'
             and isinstance(node.func.value, ast.Name) and node.func.value.id == 'dispy']
    assert len(calls) == 1, 'expected one dispy.JobCluster call, found %d' % len(calls)
    call = calls[0]
    lines = source.splitlines(keepends=True)
    line, column = call.end_lineno - 1, call.end_col_offset - 1  # the closing parenthesis
    assert lines[line][column] == ')'
    lines[line] = (lines[line][:column] + ", scheduler_host='127.0.0.1', scheduler_port=%d, "
                   "secret=%r" % (daemons.scheduler_port, CLUSTER_SECRET) + lines[line][column:])
    line, column = call.func.end_lineno - 1, call.func.end_col_offset  # after 'JobCluster'
    start = column - len('JobCluster')
    assert lines[line][start:column] == 'JobCluster'
    lines[line] = lines[line][:start] + 'SharedJobCluster' + lines[line][column:]
    return ''.join(lines)


def replace(source, changes):
    """Each ``(old, new)`` of ``changes`` applied; each ``old`` must be there."""
    for old, new in changes:
        assert old in source, '%r is not in the program' % (old,)
        source = source.replace(old, new)
    return source


def example_source(name):
    with open(os.path.join(EXAMPLES, name + '.py')) as handle:
        return handle.read()


def prepare(directory, daemons, name, changes=()):
    """dispy's examples directory in ``directory``, with program ``name`` changed to run
    against ``daemons`` (its import, its scheduler's address and ``changes``)."""
    for entry in sorted(os.listdir(EXAMPLES)):
        if entry.endswith('.py'):
            shutil.copy(os.path.join(EXAMPLES, entry), str(directory))
    source = use_scheduler(use_dispyscheduler(replace(example_source(name), changes)), daemons)
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            assert not [alias.name for alias in node.names
                        if alias.name.split('.')[0] == 'dispy'], ast.unparse(node)
    with open(os.path.join(str(directory), name + '.py'), 'w') as handle:
        handle.write(source)


# running them

class Program:
    """``python <name>.py [args]`` in ``directory``, as a user runs an example; its output is
    read as it comes."""

    running = []  # programs started by the current test and not finished yet

    def __init__(self, directory, name, *args, interactive=False, prompt=None):
        self.name = name
        self.prompt = prompt  # what input() prints with no newline: left out of ``stdout``
        self.directory = str(directory)
        self.stderr_path = os.path.join(self.directory, name + '.stderr')
        self.stderr_file = open(self.stderr_path, 'wb')
        self.process = subprocess.Popen(
            [sys.executable, name + '.py'] + list(args), cwd=self.directory,
            stdin=subprocess.PIPE if interactive else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=self.stderr_file,
            env=dict(os.environ, PYTHONPATH=REPO, PYTHONUNBUFFERED='1'))
        self.running.append(self)
        self.chunks = []
        self.reader = threading.Thread(target=self.read, daemon=True)
        self.reader.start()

    def read(self):
        while True:
            chunk = os.read(self.process.stdout.fileno(), 65536)
            if not chunk:
                return
            self.chunks.append(chunk)

    @property
    def stdout(self):
        text = b''.join(self.chunks).decode(errors='replace')
        return text.replace(self.prompt, '') if self.prompt else text

    @property
    def stderr(self):
        with open(self.stderr_path, 'rb') as handle:
            return handle.read().decode(errors='replace')

    def fail(self, why):
        """Stop the program and what it left running, and fail the test, saying ``why``."""
        self.stop()
        raise AssertionError('%s\n%s.py printed:\n%s\n--- and on stderr:\n%s' % (
            why, self.name, self.stdout[-6000:], self.stderr[-6000:]))

    def wait_until(self, predicate, what, timeout=WAIT):
        """Wait until ``predicate()`` holds while the program runs; fail if it ends first or
        the time is up."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.process.poll() is not None:
                self.reader.join(5)
                if predicate():
                    return
                self.fail('%s.py ended (exit code %s) before %s'
                          % (self.name, self.process.returncode, what))
            if time.monotonic() > deadline:
                self.fail('no %s after %d s' % (what, timeout))
            time.sleep(0.05)

    def wait_output(self, pattern, what, count=1, timeout=WAIT):
        """Wait until ``pattern`` matches ``count`` lines of the output."""
        self.wait_until(lambda: len(re.findall(pattern, self.stdout, re.M)) >= count, what,
                        timeout)

    def type(self, text):
        """Type ``text`` at the program (if it is still reading)."""
        try:
            self.process.stdin.write(text.encode())
            self.process.stdin.flush()
        except BrokenPipeError:
            pass

    def finish(self, tolerated=None):
        """Wait for the end; fail if the program exits with an error or prints a traceback
        (but for those ``tolerated``, a pattern, finds)."""
        try:
            self.process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self.fail('%s.py still running after %d s: killed' % (self.name, TIMEOUT))
        self.reader.join(10)
        self.close()
        stdout = self.stdout
        with open(os.path.join(self.directory, self.name + '.stdout'), 'w') as handle:
            handle.write(stdout)  # kept with the program, for a look after a failure
        if self.process.returncode != 0:
            self.fail('%s.py exited with %s' % (self.name, self.process.returncode))
        found = tracebacks(self.stderr)
        if self.stderr.count('Traceback') != len(found) or [
                text for text in found if not (tolerated and re.search(tolerated, text))]:
            self.fail('%s.py printed a traceback' % (self.name,))
        return stdout

    def close(self):
        if self in self.running:
            self.running.remove(self)
        self.stderr_file.close()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()

    def stop(self):
        """Kill the program if it runs, and cancel the jobs it left: a program that ends
        without closing its cluster leaves the cluster's jobs running, for ``recover_jobs``
        (longrun's would hold every CPU of the nodes for ever, and the other examples would
        wait behind them)."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.reader.join(5)
        self.close()
        for path in glob.glob(os.path.join(self.directory, '_dispyscheduler_*.json')):
            try:
                recover_jobs(path, timeout=0, terminate_pending=True, secret=CLUSTER_SECRET)
            except Exception as exc:  # the cluster is gone, or the scheduler
                sys.stderr.write('recover_jobs(%r) failed: %r\n' % (path, exc))


@pytest.fixture(autouse=True)
def no_program_left():
    """A test that fails before its program ends (an error of the test itself) stops it."""
    yield
    while Program.running:
        Program.running[0].stop()


def tracebacks(stderr):
    """Each traceback in ``stderr``, to its exception's line."""
    return re.findall(r'^Traceback \(most recent call last\):\n(?:[ \t].*\n)*.*$', stderr,
                      re.M)


def run(directory, daemons, name, changes=(), tolerated=None):
    """Prepare and run example ``name`` to its end; what it printed."""
    prepare(directory, daemons, name, changes)
    return Program(directory, name).finish(tolerated)


def status_table(stdout):
    """``{ip: (name, cpus, jobs)}`` from the table ``cluster.print_status()`` printed."""
    rows = re.findall(r'^ (127\.0\.0\.\d+) \((\S*)\)\s*\|\s*(\d+)\s*\|\s*(\d+)\s*\|', stdout,
                      re.M)
    return {ip: (name, int(cpus), int(jobs)) for ip, name, cpus, jobs in rows}


def jobs_done(stdout):
    return sum(jobs for _, _, jobs in status_table(stdout).values())


def node_names(daemons):
    """The names of the nodes (``dispy_node_name``), from the scheduler's log."""
    return set(re.findall(r'node 127\.0\.0\.\d+:\d+ \((\S+)\) joined', daemons.scheduler.log()))


def scheduler_status(daemons):
    """The scheduler's ``/status`` (``--httpd``)."""
    _, _, body = fetch('http://127.0.0.1:%d/status' % daemons.status_port)
    return json.loads(body)


def nodes_jobs_done(daemons):
    """``{ip: jobs done there}``, as the scheduler counts them."""
    return {node['ip_addr']: node['jobs_done'] for node in scheduler_status(daemons)['nodes']}


def checksum(path, algorithm):
    with open(path, 'rb') as handle:
        return hashlib.new(algorithm, handle.read()).hexdigest()


def fetch(url):
    with urllib.request.urlopen(url, timeout=10) as reply:
        return reply.status, reply.headers.get('Content-Type', ''), reply.read()


# the examples, in the order of dispy's examples directory

def test_bounded_submit(scheduler, tmp_path):
    """1000 jobs, at most 100 pending at a time; the status table counts all of them.

    The program keeps its jobs under keys 0 to 999 and job_status pops ``job.id``, which is 1
    to 1000 (in dispy too, whose DispyJob ids count from 1): the last job's callback raises
    KeyError: 1000, which dispy logs with its traceback as this does."""
    stdout = run(tmp_path, scheduler, 'bounded_submit', [
        ('time.sleep(n)', 'time.sleep(n / 1000)')],  # 3 to 7 ms instead of 3 to 7 s
        tolerated=r'pending_jobs\.pop\(job\.id\)\n(?:.*\n)*KeyError: 1000$')
    assert jobs_done(stdout) == 1000, stdout
    assert set(status_table(stdout)) == set(NODES), stdout


def test_delegate(scheduler, tmp_path):
    """Each job gets its function with ``dispy_job_depends=[func]``; 'delegate' calls it."""
    stdout = run(tmp_path, scheduler, 'delegate', [
        ('time.sleep(n)', 'time.sleep(n / 10)')])  # 0.5 to 1 s instead of 5 to 10 s
    lines = re.findall(r'^(.*): (func\d) executed job (\d+) at ([\d.]+) with (\d+)$', stdout,
                       re.M)
    assert [(func, int(job)) for _, func, job, _, _ in lines] == [
        ('func1', 1), ('func2', 2), ('func1', 3), ('func2', 4)], stdout
    assert {host for host, _, _, _, _ in lines} <= node_names(scheduler)
    assert all(5 <= int(n) <= 10 for _, _, _, _, n in lines)
    assert jobs_done(stdout) == 4, stdout


def test_httpd_example(scheduler, tmp_path):
    """While the program runs, its DispyHTTPServer (port 8181 of the client's host) shows the
    cluster: its nodes and the 8 jobs done."""
    if not port_free('0.0.0.0', HTTPD_PORT):
        pytest.skip('port %d (DispyHTTPServer\'s) is in use by another program on this host'
                    % HTTPD_PORT)
    prepare(tmp_path, scheduler, 'httpd_example', [
        ('time.sleep(n)', 'time.sleep(n / 10)')])  # 0.5 to 2 s instead of 5 to 20 s
    program = Program(tmp_path, 'httpd_example')
    seen = []

    def cluster_shown():
        try:
            _, _, body = fetch('http://127.0.0.1:%d/cluster_status' % HTTPD_PORT)
        except (OSError, urllib.error.URLError):
            return False
        seen[:] = [json.loads(body)]
        for cluster in seen[0]:
            if (cluster['name'] == 'compute' and cluster['jobs']['done'] == 8
                    and {node['ip_addr'] for node in cluster['nodes']} == set(NODES)):
                return True
        return False

    # after the jobs, shutdown() keeps the server up for 10 s (poll_sec) for browsers
    program.wait_until(cluster_shown, 'cluster with its 8 jobs done on the status page')
    status, content_type, page = fetch('http://127.0.0.1:%d/' % HTTPD_PORT)
    assert status == 200 and content_type.startswith('text/html'), (status, content_type)
    assert page
    [cluster] = [cluster for cluster in seen[0] if cluster['name'] == 'compute']
    assert cluster['jobs']['submitted'] == 8, seen
    program.finish()


def test_job_scheduler(scheduler, tmp_path):
    """One job at a time per node, each with its data file; 'quit' ends the program."""
    prepare(tmp_path, scheduler, 'job_scheduler', [
        ('time.sleep(5)', 'time.sleep(0.5)')])
    data = {}
    for n in range(6):
        name = 'data%03d' % n
        data[name] = os.urandom(100000 + n)
        (tmp_path / name).write_bytes(data[name])
    program = Program(tmp_path, 'job_scheduler', interactive=True)
    program.wait_output(r'^sha1sum for data\d{3}: ', 'checksums of the 6 files', count=6)
    program.type('quit\n')
    stdout = program.finish()
    for node in NODES:
        assert 'node %s with 2 CPUs available' % node in stdout, stdout
    sums = dict(re.findall(r'^sha1sum for (data\d{3}): (\w+)$', stdout, re.M))
    assert sums == {name: hashlib.sha1(content).hexdigest() for name, content in data.items()}
    assert 'failed' not in stdout, stdout
    assert jobs_done(stdout) == 6, stdout


def test_longrun(scheduler, tmp_path):
    """Jobs that run until cancelled: 'quit' cancels them, each returns its best guess."""
    prepare(tmp_path, scheduler, 'longrun', [
        ('(time.time() - updated) > 10', '(time.time() - updated) > 1'),  # provisional results
        ('time.sleep(1)', 'time.sleep(0.1)'),  # the simulated computation
        ('time.sleep(2)', 'time.sleep(0.2)')])  # the work after KeyboardInterrupt
    program = Program(tmp_path, 'longrun', interactive=True,
                      prompt='Enter "quit" or "exit" or Ctrl-C to terminate: ')
    program.wait_output(r'^node 127\.0\.0\.\d initialized with 2 cpus$', 'both nodes', count=2)

    def running():  # all four jobs started, as the scheduler's status page says
        return sum(node['busy'] for node in scheduler_status(scheduler)['nodes']) == 4

    # (a guess within 1% of 1.0 makes the program end by itself, with SIGINT)
    program.wait_until(lambda: running() or program.process.poll() is not None,
                       '4 jobs running')
    program.type('quit\n')
    stdout = program.finish()
    for node in NODES:
        assert re.search(r'^Allocate node for compute: %s / \S+ / 2$' % re.escape(node),
                         stdout, re.M), stdout
        assert 'node %s initialized with 2 cpus' % node in stdout, stdout
    computed = re.findall(r'^job at (127\.0\.0\.\d) computed ([\d.]+)$', stdout, re.M)
    assert sorted(ip for ip, _ in computed) == sorted(NODES * 2), stdout
    assert all(0 < float(best) <= 1 for _, best in computed)
    best = re.findall(r'^best estimate: ([\d.]+)$', stdout, re.M)
    assert best == [max((best for _, best in computed), key=float)], stdout
    assert 'failed' not in stdout, stdout


def test_node_setup(scheduler, tmp_path):
    """Each node gets its own data file (``depends`` and ``setup_args`` set in
    ``NodeAllocate.allocate``), which setup loads; each job prints its checksum."""
    stdout = run(tmp_path, scheduler, 'node_setup', [
        ('time.sleep(2)', 'time.sleep(0.2)'),  # in compute
        ('time.sleep(5)', 'time.sleep(0.5)')])  # waiting for the nodes
    allocated = dict(re.findall(r'^Node (127\.0\.0\.\d) \(.*\) processes "(.*)"$', stdout,
                                re.M))
    assert set(allocated) == set(NODES), stdout
    assert all(os.path.samefile(os.path.dirname(path), tmp_path)
               for path in allocated.values()), stdout
    results = re.findall(r'^(127\.0\.0\.\d): "(.*)" (\w+): (\w+)$', stdout, re.M)
    assert len(results) == 10, stdout
    for ip, name, algorithm, digest in results:
        assert name == os.path.basename(allocated[ip]), (ip, name, allocated)
        assert digest == checksum(tmp_path / name, algorithm), (name, algorithm, digest)
    assert jobs_done(stdout) == 10, stdout


def test_node_shvars(scheduler, tmp_path):
    """Jobs on a node add to one counter that setup made, shared through multiprocessing."""
    stdout = run(tmp_path, scheduler, 'node_shvars')
    results = re.findall(r'^(\d+): (\d+)$', stdout, re.M)
    assert [int(job) for job, _ in results] == list(range(1, 11)), stdout
    values = [int(value) for _, value in results]
    # each node's counter starts at 1 and each job adds 1 to 10: a value appears at most
    # once per node, and the counters pass 11, which no job reaches alone (unless both
    # nodes' jobs drew almost only 1s, a chance below 1 in 100000)
    assert all(2 <= value <= 101 for value in values), values
    assert all(values.count(value) <= len(NODES) for value in values), values
    assert max(values) > 11, values
    assert jobs_done(stdout) == 10, stdout


def test_node_update(scheduler, tmp_path):
    """A program (not a function) as the computation, run once on each of the 2 nodes (the
    program's arguments: the script and the number of nodes to wait for); its output comes
    back in ``job.stdout``."""
    prepare(tmp_path, scheduler, 'node_update', [
        ('time.sleep(5)', 'time.sleep(0.1)')])  # waiting for nodes, between discover_nodes
    script = replace(example_source('node_update_script'), [
        ('random.uniform(2, 4)', 'random.uniform(0.2, 0.4)')])
    (tmp_path / 'node_update_script.py').write_text(script)
    stdout = Program(tmp_path, 'node_update', 'node_update_script.py', '2').finish()
    for node in NODES:
        assert 'Node %s with 2 CPUs available' % node in stdout, stdout
        assert re.search(r'^Node %s finished with \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}$'
                         % re.escape(node), stdout, re.M), stdout
    assert 'failed' not in stdout, stdout
    assert {ip: jobs for ip, (_, _, jobs) in status_table(stdout).items()} == {
        node: 1 for node in NODES}, stdout


def test_obj_instances(scheduler, tmp_path):
    """Instances of a class of ``__main__`` (sent with ``depends=[C]``) as arguments; each
    job's printed line comes back in ``job.stdout``."""
    stdout = run(tmp_path, scheduler, 'obj_instances', [
        ('time.sleep(obj.n)', 'time.sleep(obj.n / 10)')])  # 0.1 to 0.3 s instead of 1 to 3 s
    # '%s: %.2f / %s' % (job.id.i, job.result, job.stdout), job.stdout being 'i: n\n'
    lines = re.findall(r'^(\d+): (\d+\.\d\d) / (\d+): (\d+\.\d\d)$', stdout, re.M)
    assert [int(i) for i, _, _, _ in lines] == list(range(10)), stdout
    for i, result, shown_i, shown in lines:
        assert (i, result) == (shown_i, shown)
        assert 1 <= float(result) <= 3


def test_provisional_results(scheduler, tmp_path):
    """Jobs send provisional results to job_status; one good enough cancels the others."""
    stdout = run(tmp_path, scheduler, 'provisional_results', [
        ('time.sleep(0.1)', 'time.sleep(0.01)')])
    best = re.findall(r'^best value from (\S+)/(\d+): ([\d.e-]+)$', stdout, re.M)
    assert {name for name, _, _ in best} <= node_names(scheduler), stdout
    assert 1 <= len({(name, pid) for name, pid, _ in best}) <= 4, stdout
    assert all(0 <= float(value) <= 1 for _, _, value in best), stdout
    computed = re.findall(r'^(\S+/\d+) computed: ([\d.e-]+)$', stdout, re.M)
    for job, value in computed:
        assert float(value) < 0.005
        assert 'best value from %s: %s' % (job, value) in stdout
    if not computed:  # no value good enough: the 4 jobs finished, each after provisional ones
        assert len(best) >= 8, stdout
    assert status_table(stdout) and set(status_table(stdout)) <= set(NODES), stdout


def test_replace_inmem(scheduler, tmp_path):
    """``resetup_node`` replaces each node's in-memory data: jobs 1-6 hash the files the
    nodes got first, jobs 7-12 the ones ``NodeAllocate.allocate`` gave them on resetup."""
    stdout = run(tmp_path, scheduler, 'replace_inmem', [
        ('time.sleep(n)', 'time.sleep(n / 10)')])  # 0.2 to 0.5 s instead of 2 to 5 s
    allocations = re.findall(r'^Node (127\.0\.0\.\d) \(.*\) processes "(.*)"$', stdout, re.M)
    assert len(allocations) == 4, stdout
    first, second = dict(allocations[:2]), dict(allocations[2:])
    assert set(first) == set(second) == set(NODES), stdout
    finished = re.findall(r'^job (\d+) finished by (127\.0\.0\.\d), (\w+) of (.*) is (\w+)$',
                          stdout, re.M)
    assert sorted(int(job) for job, _, _, _, _ in finished) == list(range(1, 13)), stdout
    for job, ip, algorithm, name, digest in finished:
        files = first if int(job) <= 6 else second
        assert name == os.path.basename(files[ip]), (job, ip, name, first, second)
        assert digest == checksum(tmp_path / name, algorithm), (job, name, algorithm)
    assert 'failed' not in stdout, stdout
    assert jobs_done(stdout) == 12, stdout


def test_sample(scheduler, tmp_path):
    stdout = run(tmp_path, scheduler, 'sample', [
        ('time.sleep(n)', 'time.sleep(n / 10)')])  # 0.5 to 2 s instead of 5 to 20 s
    lines = re.findall(r'^(\S+) \((127\.0\.0\.\d)\) executed job (\d+) at ([\d.]+) with (\d+)$',
                       stdout, re.M)
    assert [int(job) for _, _, job, _, _ in lines] == list(range(1, 11)), stdout
    table = status_table(stdout)
    for host, ip, _, start_time, n in lines:
        assert host == table[ip][0]  # dispy_node_name: the node's name
        assert 5 <= int(n) <= 20 and float(start_time) > 0
    assert set(table) == set(NODES) and jobs_done(stdout) == 10, stdout


def test_sshportfw(scheduler, tmp_path):
    """Jobs on the one node named in ``nodes``: this test's 127.0.0.2 for the EC2 instance."""
    before = nodes_jobs_done(scheduler)
    stdout = run(tmp_path, scheduler, 'sshportfw', [
        ("nodes = ['54.172.166.83']", "nodes = ['127.0.0.2']"),
        ('time.sleep(n)', 'time.sleep(n / 10)')])  # 0.1 to 0.6 s instead of 1 to 6 s
    assert re.findall(r'^result: (.*)$', stdout, re.M) == [str(n) for n in range(1, 7)], stdout
    after = nodes_jobs_done(scheduler)
    assert {ip: after[ip] - before[ip] for ip in NODES} == {'127.0.0.2': 6, '127.0.0.3': 0}
