"""A client with Python's habits (issue 20), through the real daemons: Ctrl-C in a program
blocked on its jobs, a program that leaves without ``close()`` (and ``recover_jobs`` after it),
``job.future`` with ``concurrent.futures``, ``DispyExecutor``, and ``await job`` /
``as_completed_async`` in asyncio.

Programs run as subprocesses, as users run them. Jobs that must still be running at some point
wait for a ``release`` file the test creates (or a minute passes... ten, in fact: a test that
sees them end before its release has found a bug, not a slow machine). Deadlines are bounds that
only a hang reaches; the one timing bound asserted is the issue's: Ctrl-C raises
KeyboardInterrupt within a second.
"""

import asyncio
import collections
import concurrent.futures
import glob
import json
import os
import queue
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request

import pytest

from daemons import CLUSTER_SECRET, NODE_SECRET, REPO, free_ports, processes, wait_for

import dispyscheduler
from dispyscheduler import DispyJob, SharedJobCluster

DEADLINE = 60.0
INTERRUPT_BOUND = 1.0  # seconds from SIGINT to the program's KeyboardInterrupt handler (issue)


# ---------------------------------------------------------------------------------------------
# computations and helpers


def work(kind, value, directory=None):
    """One computation for the in-process tests: ``square`` returns value squared, ``raise``
    raises ValueError(value), ``gate`` writes ``started-VALUE`` in ``directory`` and returns
    value once ``release`` exists there."""
    import os
    import time
    if kind == 'square':
        return value * value
    if kind == 'raise':
        raise ValueError(value)
    if kind == 'gate':
        open(os.path.join(directory, 'started-%s' % (value,)), 'w').close()
        deadline = time.monotonic() + 600
        while not os.path.exists(os.path.join(directory, 'release')):
            if time.monotonic() > deadline:
                return 'never released'
            time.sleep(0.01)
        return value
    raise AssertionError(kind)


def square(n):
    return n * n


def add(a, b=0):
    return a + b


def fail_with(message):
    raise ValueError(message)


def where():
    """The directory a job runs in: under its node's --dest_path_prefix."""
    import os
    return os.getcwd()


def gate(directory, value):
    return work('gate', value, directory)


def started(directory, count):
    return all(os.path.exists(os.path.join(str(directory), 'started-%d' % n))
               for n in range(count))


def release(directory):
    open(os.path.join(str(directory), 'release'), 'w').close()


def recovery_files(directory):
    return sorted(glob.glob(os.path.join(str(directory), '_dispyscheduler_*.json')))


def child_daemons(parent):
    """PIDs of the JobCluster schedulers (``runtime.child``) of process ``parent``."""
    return [pid for pid, _, ppid, _, command in processes()
            if ppid == parent and b'dispyscheduler.runtime.child' in command]


def waiting_nodes(daemons, *ips):
    """Nodes told no scheduler: each serves the first (JobCluster) scheduler that pings it."""
    nodes = [daemons.start_node(ip, scheduler=None, wait=False) for ip in ips]
    for node in nodes:
        node.wait_log('serving with')
    return nodes


def main_thread_sleeps(pid):
    """Whether the main thread of process ``pid`` is blocked in the kernel (state S)."""
    try:
        with open('/proc/%d/task/%d/stat' % (pid, pid)) as handle:
            stat = handle.read()
    except OSError:
        return False
    return stat[stat.rindex(')') + 2] == 'S'


def without(text, *parts):
    for part in parts:
        text = text.replace(part, '')
    return text


class Program:
    """A user program running as its own process, its stdout lines read as they come, each
    with the time it arrived (``time.monotonic()``)."""

    HEADER = 'import json, os, sys, time\nimport dispyscheduler as dispy\n'

    def __init__(self, tmp_path, source, *args, name='program.py'):
        path = tmp_path / name
        path.write_text(self.HEADER + textwrap.dedent(source))
        self.process = subprocess.Popen(
            [sys.executable, str(path), *map(str, args)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(tmp_path),
            env=dict(os.environ, PYTHONPATH=REPO))
        self.lines = queue.Queue()
        self.stderr_parts = []
        self.stdout_lines = []
        self.readers = [threading.Thread(target=self._read_stdout, daemon=True),
                        threading.Thread(target=self._read_stderr, daemon=True)]
        for reader in self.readers:
            reader.start()

    @property
    def pid(self):
        return self.process.pid

    def _read_stdout(self):
        for line in self.process.stdout:
            self.lines.put((line.rstrip('\n'), time.monotonic()))
            self.stdout_lines.append(line.rstrip('\n'))
        self.lines.put((None, time.monotonic()))

    def _read_stderr(self):
        for part in self.process.stderr:
            self.stderr_parts.append(part)

    @property
    def stderr(self):
        return ''.join(self.stderr_parts)

    def expect(self, prefix, timeout=DEADLINE):
        """The next stdout line (it must start with ``prefix``) and when it came."""
        try:
            line, when = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError('no %r line from the program in %ss; stderr:\n%s'
                                 % (prefix, timeout, self.stderr)) from None
        assert line is not None and line.startswith(prefix), (
            'expected %r, got %r; stderr:\n%s' % (prefix, line, self.stderr))
        return line, when

    def tell(self, line):
        self.process.stdin.write(line + '\n')
        self.process.stdin.flush()

    def finish(self, timeout=DEADLINE):
        """Wait for the program to exit; its status."""
        try:
            status = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError('the program did not exit in %ss; stdout %r, stderr:\n%s'
                                 % (timeout, self.stdout_lines, self.stderr)) from None
        for reader in self.readers:
            reader.join(DEADLINE)
        return status

    def cleanup(self):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for reader in self.readers:
            reader.join(DEADLINE)
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            try:
                stream.close()
            except OSError:
                pass


@pytest.fixture
def programs():
    started = []

    def start(*args, **kwargs):
        program = Program(*args, **kwargs)
        started.append(program)
        return program

    yield start
    for program in started:
        program.cleanup()


GATED_COMPUTE = '''
        def compute(n, directory):
            import os, time
            open(os.path.join(directory, 'started-%d' % n), 'w').close()
            deadline = time.monotonic() + 600
            while not os.path.exists(os.path.join(directory, 'release')):
                if time.monotonic() > deadline:
                    return None
                time.sleep(0.01)
            return n * 10
'''
"""A program's computation that runs until ``release`` appears in the program's directory
(program text, indented as ``programs`` takes it)."""


def gated_program(count, extra_cluster_options=''):
    """A program whose ``count`` jobs run until ``release`` appears in its directory."""
    return GATED_COMPUTE + '''
        if __name__ == '__main__':
            port, secret = int(sys.argv[1]), sys.argv[2]
            cluster = dispy.SharedJobCluster(compute, scheduler_node='127.0.0.1',
                                             scheduler_port=port, secret=secret%s)
            jobs = [cluster.submit(n, os.getcwd()) for n in range(%d)]
    ''' % (extra_cluster_options, count)


# ---------------------------------------------------------------------------------------------
# 1. Ctrl-C


CTRL_C_JOBS = 5  # on one node of 2 CPUs: 2 running, 3 queued


@pytest.mark.parametrize('blocked_in', ['cluster.wait()', 'job()'])
@pytest.mark.parametrize('then', ['close(terminate=True)', 'exit without close()'])
def test_ctrl_c_raises_keyboard_interrupt_within_a_second(daemons, programs, tmp_path,
                                                          blocked_in, then):
    """A program blocked in ``cluster.wait()`` or ``job()`` on jobs that run for minutes gets
    KeyboardInterrupt within a second of SIGINT. Then either it closes with terminate=True
    (its jobs end Cancelled, it exits 0 promptly, no recovery file stays), or it leaves
    without closing (it says how to recover, and ``recover_jobs`` collects the results)."""
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2', cpus=2)
    program = programs(tmp_path, gated_program(CTRL_C_JOBS, ", recover_file='recover.json'") + '''
            try:
                print('READY', flush=True)
                if sys.argv[3] == 'cluster.wait()':
                    cluster.wait()
                else:
                    jobs[0]()
                print('NOT INTERRUPTED', flush=True)
            except KeyboardInterrupt:
                print('INTERRUPTED at %r' % time.monotonic(), flush=True)
            if sys.argv[4] == 'close(terminate=True)':
                cluster.close(terminate=True)
                print('CLOSED', [job.status for job in jobs], flush=True)
            print('LEAVING', flush=True)
        ''', daemons.scheduler_port, CLUSTER_SECRET, blocked_in, then)
    program.expect('READY')
    wait_for(lambda: main_thread_sleeps(program.pid), DEADLINE,
             'the main thread of the program to block')
    sent = time.monotonic()
    os.kill(program.pid, signal.SIGINT)
    line, arrived = program.expect('INTERRUPTED')
    handled = float(line.split()[-1])  # the program's own clock (CLOCK_MONOTONIC, host-wide)
    assert arrived - sent < INTERRUPT_BOUND, (
        'KeyboardInterrupt came %.3f s after SIGINT (handler ran %.3f s after)'
        % (arrived - sent, handled - sent))
    recover_file = tmp_path / 'recover.json'
    if then == 'close(terminate=True)':
        line, _ = program.expect('CLOSED')
        assert line == 'CLOSED %s' % ([DispyJob.Cancelled] * CTRL_C_JOBS,)
        program.expect('LEAVING')
        assert program.finish() == 0, program.stderr
        assert 'recover_jobs(' not in program.stderr
        assert not recover_file.exists()
        return
    program.expect('LEAVING')
    assert program.finish() == 0, program.stderr
    check_recover_message(program.stderr, str(recover_file), CTRL_C_JOBS, tmp_path)
    release(tmp_path)
    jobs = dispyscheduler.recover_jobs(str(recover_file), secret=CLUSTER_SECRET,
                                       timeout=DEADLINE)
    assert sorted((job.status, job.result) for job in jobs) == [
        (DispyJob.Finished, n * 10) for n in range(CTRL_C_JOBS)]
    assert not recover_file.exists()


def check_recover_message(stderr, path, pending, tmp_path):
    """The message a program leaving with jobs pending prints: the call that collects them,
    the recovery file's path, the number of jobs pending."""
    assert 'recover_jobs(' in stderr, stderr
    relative = os.path.relpath(path, str(tmp_path))
    assert path in stderr or repr(relative) in stderr, (path, stderr)
    # the number, as a word of its own once paths (pytest-N, ...) are taken out
    rest = without(stderr, path, str(tmp_path), relative)
    assert re.search(r'(?<![\w.-])%d(?![\w.-])' % pending, rest), (pending, stderr)


# ---------------------------------------------------------------------------------------------
# 2. leaving without close()


def test_leaving_with_jobs_pending_says_how_to_recover_them(daemons, programs, tmp_path):
    """A program that submits and leaves at once (default recovery file) prints the
    ``recover_jobs`` call, its file and how many jobs; a second program collects them."""
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2', cpus=2)
    pending = 7
    program = programs(tmp_path, gated_program(pending) + '''
            print('SUBMITTED', flush=True)
        ''', daemons.scheduler_port, CLUSTER_SECRET)
    program.expect('SUBMITTED')
    assert program.finish() == 0, program.stderr
    (recover_file,) = recovery_files(tmp_path)
    check_recover_message(program.stderr, recover_file, pending, tmp_path)
    release(tmp_path)
    collector = programs(tmp_path, '''
        if __name__ == '__main__':
            jobs = dispy.recover_jobs(sys.argv[1], secret=sys.argv[2], timeout=60)
            print('RECOVERED', json.dumps(sorted((job.status, job.result) for job in jobs)))
        ''', recover_file, CLUSTER_SECRET, name='collector.py')
    line, _ = collector.expect('RECOVERED')
    assert json.loads(line.split(' ', 1)[1]) == [[DispyJob.Finished, n * 10]
                                                 for n in range(pending)]
    assert collector.finish() == 0, collector.stderr
    assert 'recover_jobs(' not in collector.stderr
    assert not recovery_files(tmp_path)


def test_leaving_with_every_job_ended_closes_quietly(daemons, programs, tmp_path):
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2')
    program = programs(tmp_path, '''
        def compute(n):
            return n + 1

        if __name__ == '__main__':
            cluster = dispy.SharedJobCluster(compute, scheduler_node='127.0.0.1',
                                             scheduler_port=int(sys.argv[1]), secret=sys.argv[2])
            jobs = [cluster.submit(n) for n in range(10)]
            print('RESULTS', [job() for job in jobs], flush=True)
        ''', daemons.scheduler_port, CLUSTER_SECRET)
    line, _ = program.expect('RESULTS')
    assert line == 'RESULTS %s' % (list(range(1, 11)),)
    assert program.finish() == 0, program.stderr
    assert 'recover_jobs' not in program.stderr
    assert 'pending' not in program.stderr and 'had not ended' not in program.stderr
    assert not recovery_files(tmp_path)
    daemons.scheduler.wait_log(r'cluster \d+ \(compute\) closed', timeout=DEADLINE)
    assert 'left without closing' not in daemons.scheduler.log()


def test_leaving_without_a_recovery_file_cancels_pending_jobs(daemons, programs, tmp_path):
    """recover_file=False: nobody could collect them, so they are cancelled and the program
    says so; their node is free for others at once (else it would be busy for ten minutes)."""
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2', cpus=2)
    program = programs(tmp_path, gated_program(4, ', recover_file=False') + '''
            print('SUBMITTED', flush=True)
            sys.stdin.readline()
        ''', daemons.scheduler_port, CLUSTER_SECRET)
    program.expect('SUBMITTED')
    wait_for(lambda: started(tmp_path, 2), DEADLINE, 'two jobs to run')
    assert not recovery_files(tmp_path)
    program.tell('exit')
    assert program.finish() == 0, program.stderr
    assert 'cancel' in program.stderr.lower(), program.stderr
    assert not recovery_files(tmp_path)
    with SharedJobCluster(square, **daemons.client_options(recover_file=False)) as cluster:
        job = cluster.submit(12)
        assert job(timeout=DEADLINE) == 144, (job.status, job.exception)
    assert not os.path.exists(tmp_path / 'started-2')  # the queued ones never ran


def test_jobcluster_leaving_with_jobs_pending_says_how_to_recover_them(daemons, programs,
                                                                       tmp_path):
    """A program that is its own scheduler leaves with jobs running and queued on network
    nodes: it prints the ``recover_jobs`` call; ``recover_jobs(path)`` (no secret: the file
    holds how to start its scheduler again) collects every result."""
    waiting_nodes(daemons, '127.0.0.2')
    pending = 3  # on 2 CPUs: one queued
    program = programs(tmp_path, GATED_COMPUTE + '''
        if __name__ == '__main__':
            cluster = dispy.JobCluster(compute, nodes=[('127.0.0.2', int(sys.argv[1]))],
                                       host='127.0.0.1', secret=sys.argv[2], ping_interval=1,
                                       recover_file='recover.json')
            jobs = [cluster.submit(n, os.getcwd()) for n in range(int(sys.argv[3]))]
            print('SUBMITTED', flush=True)
            sys.stdin.readline()
        ''', daemons.node_port, NODE_SECRET, pending)
    program.expect('SUBMITTED')
    wait_for(lambda: started(tmp_path, 2), DEADLINE, 'two jobs to run')
    children = child_daemons(program.pid)
    program.tell('exit')
    assert program.finish() == 0, program.stderr
    recover_file = str(tmp_path / 'recover.json')
    check_recover_message(program.stderr, recover_file, pending, tmp_path)
    wait_for(lambda: not [pid for pid, *_ in processes() if pid in children], DEADLINE,
             "the program's scheduler to stop")
    release(tmp_path)
    jobs = dispyscheduler.recover_jobs(recover_file, timeout=DEADLINE)
    assert sorted((job.status, job.result) for job in jobs) == [
        (DispyJob.Finished, n * 10) for n in range(pending)]
    assert not os.path.exists(recover_file)
    assert not child_daemons(os.getpid())


# ---------------------------------------------------------------------------------------------
# 3. job.future and concurrent.futures


def test_job_future_gives_the_result_and_as_completed_yields_every_job(daemons):
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2')
    daemons.start_node('127.0.0.3')
    with SharedJobCluster(work, **daemons.client_options()) as cluster:
        jobs = [cluster.submit('square', n) for n in range(200)]
        future = jobs[0].future
        assert isinstance(future, concurrent.futures.Future)
        assert jobs[0].future is future  # the same object every time
        numbers = {job.future: n for n, job in enumerate(jobs)}
        seen = collections.Counter()
        for done in concurrent.futures.as_completed(list(numbers), timeout=DEADLINE):
            seen[done] += 1
            assert done.result() == numbers[done] ** 2
        assert len(seen) == 200 and set(seen.values()) == {1}
        assert [job.future.result(timeout=0) for job in jobs] == [n * n for n in range(200)]
        late = cluster.submit('square', 9)
        assert late() == 81
        assert late.future.done() and late.future.result() == 81  # made after the end


def test_wait_first_completed_and_done_callbacks_once_each(daemons, tmp_path):
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2')
    with SharedJobCluster(work, **daemons.client_options()) as cluster:
        slow = cluster.submit('gate', 0, str(tmp_path))
        quick = cluster.submit('square', 5)
        done, not_done = concurrent.futures.wait([slow.future, quick.future], timeout=DEADLINE,
                                                 return_when=concurrent.futures.FIRST_COMPLETED)
        assert done == {quick.future} and not_done == {slow.future}
        assert quick.future.result() == 25

        calls = collections.Counter()
        lock = threading.Condition()

        def count(future):
            with lock:
                calls[future] += 1
                lock.notify_all()

        jobs = [cluster.submit('square', n) for n in range(200)]
        for job in jobs:
            job.future.add_done_callback(count)
        slow.future.add_done_callback(count)
        release(tmp_path)
        done, not_done = concurrent.futures.wait([job.future for job in jobs + [slow]],
                                                 timeout=DEADLINE)
        assert not not_done and slow.future.result() == 0
        with lock:
            assert lock.wait_for(lambda: len(calls) == 201, DEADLINE), len(calls)
        quick.future.add_done_callback(count)  # already done: called at once, here
        assert calls[quick.future] == 1
        assert cluster.wait(timeout=DEADLINE)
    assert sorted(calls.values()) == [1] * 202


def test_a_job_that_did_not_finish_raises_job_failed(daemons, tmp_path):
    """Terminated (the computation raised) and Cancelled (``cluster.cancel``): result() and
    exception() give JobFailed with the job and its reason."""
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2')
    with SharedJobCluster(work, **daemons.client_options()) as cluster:
        failing = cluster.submit('raise', 'bad value 42')
        with pytest.raises(dispyscheduler.JobFailed) as raised:
            failing.future.result(timeout=DEADLINE)
        assert raised.value.job is failing
        assert failing.status == DispyJob.Terminated
        assert 'bad value 42' in str(raised.value) and 'ValueError' in str(raised.value)
        assert isinstance(failing.future.exception(), dispyscheduler.JobFailed)

        running = cluster.submit('gate', 0, str(tmp_path))
        wait_for(lambda: started(tmp_path, 1), DEADLINE, 'the job to run')
        assert cluster.cancel(running) == 0
        with pytest.raises(dispyscheduler.JobFailed) as raised:
            running.future.result(timeout=DEADLINE)
        assert raised.value.job is running and running.status == DispyJob.Cancelled
        assert 'Cancelled' in str(raised.value)
        assert not running.future.cancelled()  # the job was cancelled, not the future


def test_a_job_abandoned_raises_job_failed(daemons, tmp_path):
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2')
    cluster = SharedJobCluster(work, reconnect_timeout=2, **daemons.client_options())
    try:
        job = cluster.submit('gate', 0, str(tmp_path))
        wait_for(lambda: started(tmp_path, 1), DEADLINE, 'the job to run')
        daemons.scheduler.stop()
        with pytest.raises(dispyscheduler.JobFailed) as raised:
            job.future.result(timeout=DEADLINE)
        assert raised.value.job is job and job.status == DispyJob.Abandoned
        assert 'Abandoned' in str(raised.value)
    finally:
        cluster.close()


def test_future_cancel_cancels_the_job(daemons, tmp_path):
    """``job.future.cancel()`` on a running job and on a queued one: True, the future is
    cancelled and the job ends Cancelled; on an ended job: False."""
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2', cpus=1)
    with SharedJobCluster(work, **daemons.client_options()) as cluster:
        running = cluster.submit('gate', 0, str(tmp_path))
        wait_for(lambda: started(tmp_path, 1), DEADLINE, 'the job to run')
        queued = cluster.submit('gate', 1, str(tmp_path))  # the node's only CPU is taken
        ended = cluster.submit('square', 3)
        for job in (queued, running):
            assert job.future.cancel() is True
            assert job.future.cancelled() and job.future.done()
            with pytest.raises(concurrent.futures.CancelledError):
                job.future.result(timeout=0)
            assert job.finish.wait(DEADLINE)
            assert job.status == DispyJob.Cancelled
        assert ended(timeout=DEADLINE) == 9
        assert ended.future.cancel() is False and not ended.future.cancelled()
        assert ended.future.result() == 9
        assert not os.path.exists(tmp_path / 'started-1')
        assert cluster.submit('square', 4)(timeout=DEADLINE) == 16  # the CPU is free again


# ---------------------------------------------------------------------------------------------
# 4. DispyExecutor


def test_executor_runs_any_function_and_reraises_its_exception(daemons):
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2')
    daemons.start_node('127.0.0.3')
    offset = 1000

    def shifted(x):  # a closure
        return x + offset

    with dispyscheduler.DispyExecutor(nodes=['127.0.0.2'],
                                      **daemons.client_options()) as executor:
        assert isinstance(executor, concurrent.futures.Executor)
        future = executor.submit(square, 12)
        assert isinstance(future, concurrent.futures.Future)
        assert future.result(timeout=DEADLINE) == 144
        assert executor.submit(add, 2, b=3).result(timeout=DEADLINE) == 5
        assert executor.submit(lambda a, b: a * b, 6, 7).result(timeout=DEADLINE) == 42
        assert executor.submit(shifted, 1).result(timeout=DEADLINE) == 1001
        assert executor.submit(pow, 2, 10).result(timeout=DEADLINE) == 1024
        with pytest.raises(ValueError, match='^bad value 7$'):
            executor.submit(fail_with, 'bad value 7').result(timeout=DEADLINE)
        with pytest.raises(ZeroDivisionError):
            executor.submit(lambda: 1 / 0).result(timeout=DEADLINE)
        directories = {executor.submit(where).result(timeout=DEADLINE) for _ in range(10)}
        assert all('node-127.0.0.2' in path for path in directories), directories
    assert not recovery_files('.')


def function_file_seen():
    """Run on a node by the executor: the node, and the identity of the file its shared
    function came in (a file written again would be a new inode)."""
    import glob
    import os
    import time
    time.sleep(0.02)  # a call that takes a moment: calls go to every free CPU, not one
    (path,) = glob.glob(os.path.join(dispy_job_path,  # noqa: F821 (a node global)
                                     '_dispyscheduler_function_*.pickle'))
    info = os.stat(path)
    return dispy_node_ip_addr, info.st_ino, info.st_mtime_ns  # noqa: F821


def test_executor_sends_each_function_to_each_node_once(daemons):
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2')
    daemons.start_node('127.0.0.3')
    with dispyscheduler.DispyExecutor(**daemons.client_options()) as executor:
        wait_for(lambda: len(executor.cluster.status().nodes) == 2, DEADLINE,
                 'both nodes to set the computation up')  # so that calls go to both
        seen = collections.defaultdict(set)
        for _ in range(3):  # calls spread over both nodes, in rounds
            futures = [executor.submit(function_file_seen) for _ in range(40)]
            for future in futures:
                node, inode, mtime = future.result(timeout=DEADLINE)
                seen[node].add((inode, mtime))
        assert set(seen) == {'127.0.0.2', '127.0.0.3'}
        assert all(len(files) == 1 for files in seen.values()), seen


def test_executor_map_in_order_with_chunks(daemons):
    """map yields in order; chunksize=50 over 1,000 items sends 20 jobs (the scheduler's
    /status counts them)."""
    (http_port,) = free_ports(1)
    daemons.start_scheduler('--httpd', '127.0.0.1:%d' % http_port)
    daemons.start_node('127.0.0.2')
    daemons.start_node('127.0.0.3')
    with dispyscheduler.DispyExecutor(**daemons.client_options()) as executor:
        assert list(executor.map(square, range(30), timeout=DEADLINE)) == [
            n * n for n in range(30)]
        assert list(executor.map(add, range(10), range(100, 110), timeout=DEADLINE)) == [
            2 * n + 100 for n in range(10)]
        clusters = status(http_port)['clusters']
        done_before = sum(cluster['done'] for cluster in clusters)
        assert list(executor.map(square, range(1000), chunksize=50, timeout=DEADLINE)) == [
            n * n for n in range(1000)]
        clusters = status(http_port)['clusters']
        assert sum(cluster['done'] for cluster in clusters) - done_before == 20


def status(http_port):
    with urllib.request.urlopen('http://127.0.0.1:%d/status' % http_port, timeout=10) as reply:
        return json.loads(reply.read().decode())


def test_executor_map_timeout_raises_timeout_error(daemons, tmp_path):
    """map's timeout (the calls run until released, ten minutes at most) raises TimeoutError
    when the iterator comes to a result not there in time."""
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2', cpus=2)
    with dispyscheduler.DispyExecutor(**daemons.client_options()) as executor:
        try:
            results = executor.map(gate, [str(tmp_path)] * 2, [0, 1], timeout=1)
            with pytest.raises(TimeoutError):
                next(results)
        finally:
            release(tmp_path)
        assert executor.submit(square, 3).result(timeout=DEADLINE) == 9


def test_executor_shutdown_waits_for_running_calls_and_refuses_new_ones(daemons, tmp_path):
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2', cpus=2)
    executor = dispyscheduler.DispyExecutor(**daemons.client_options())
    try:
        running = [executor.submit(gate, str(tmp_path), n) for n in (0, 1)]
        wait_for(lambda: started(tmp_path, 2), DEADLINE, 'two calls to run')
        queued = [executor.submit(square, n) for n in range(5)]
        shutting = threading.Thread(target=executor.shutdown, kwargs=dict(wait=True))
        shutting.start()
        with pytest.raises(RuntimeError):
            wait_for(lambda: executor.submit(square, 2) and False, DEADLINE,
                     'submit to be refused')
        assert shutting.is_alive()  # its calls cannot end before the release
        release(tmp_path)
        shutting.join(DEADLINE)
        assert not shutting.is_alive()
        assert all(future.done() for future in running + queued)
        assert [future.result(timeout=0) for future in running] == [0, 1]
        assert [future.result(timeout=0) for future in queued] == [n * n for n in range(5)]
    finally:
        release(tmp_path)
        executor.shutdown(wait=True)
    assert not recovery_files('.')


def test_executor_shutdown_cancel_futures_cancels_the_calls_not_yet_running(daemons,
                                                                            tmp_path):
    """As ``concurrent.futures`` documents it: ``cancel_futures=True`` cancels the calls the
    executor has not started running; those running (and ended) are not cancelled, and
    ``wait=True`` waits for them."""
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2', cpus=2)
    executor = dispyscheduler.DispyExecutor(**daemons.client_options())
    try:
        ended = executor.submit(square, 4)
        assert ended.result(timeout=DEADLINE) == 16
        running = [executor.submit(gate, str(tmp_path), n) for n in (1, 2)]
        wait_for(lambda: all(os.path.exists(tmp_path / ('started-%d' % n)) for n in (1, 2)),
                 DEADLINE, 'two calls to run')
        queued = [executor.submit(gate, str(tmp_path), n) for n in range(3, 9)]
        shutting = threading.Thread(target=executor.shutdown,
                                    kwargs=dict(wait=True, cancel_futures=True))
        shutting.start()
        done, _ = concurrent.futures.wait(queued, timeout=DEADLINE)
        assert done == set(queued)
        assert all(future.cancelled() for future in queued), [
            'cancelled' if future.cancelled() else repr(future.exception(0))
            for future in queued]
        assert not any(future.done() for future in running), [
            'cancelled' if future.cancelled() else future.exception(0) for future in running]
        release(tmp_path)
        shutting.join(DEADLINE)
        assert not shutting.is_alive()
        assert [future.result(timeout=0) for future in running] == [1, 2]
        assert ended.result(timeout=0) == 16 and not ended.cancelled()
        assert not any(os.path.exists(tmp_path / ('started-%d' % n)) for n in range(3, 9))
    finally:
        release(tmp_path)
        executor.shutdown(wait=True)
    assert not recovery_files('.')


def test_executor_in_a_program_runs_functions_of_its_main(daemons, programs, tmp_path):
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2')
    program = programs(tmp_path, '''
        def cube(x):
            return x ** 3

        class Unlucky(Exception):
            pass

        if __name__ == '__main__':
            base = 100

            def shifted(x):
                return x + base

            with dispy.DispyExecutor(scheduler_node='127.0.0.1', scheduler_port=int(sys.argv[1]),
                                     secret=sys.argv[2]) as executor:
                print(executor.submit(cube, 3).result())
                print(list(executor.map(shifted, range(5))))
                print(list(executor.map(lambda x: -x, range(100), chunksize=7))[-3:])
                try:
                    executor.submit(int, 'x').result()
                except ValueError as exc:
                    print('ValueError:', exc)
            print('DONE', flush=True)
        ''', daemons.scheduler_port, CLUSTER_SECRET)
    assert program.finish() == 0, program.stderr
    assert program.stdout_lines == [
        '27', '[100, 101, 102, 103, 104]', '[-97, -98, -99]',
        "ValueError: invalid literal for int() with base 10: 'x'", 'DONE']
    assert 'recover_jobs' not in program.stderr
    assert not recovery_files(tmp_path)


def test_executor_with_a_jobcluster_of_its_own(daemons, tmp_path):
    """``cluster_class=JobCluster``: the executor brings its own scheduler, which stops at
    shutdown."""
    waiting_nodes(daemons, '127.0.0.2')
    with dispyscheduler.DispyExecutor(cluster_class=dispyscheduler.JobCluster,
                                      nodes=[('127.0.0.2', daemons.node_port)],
                                      secret=NODE_SECRET, host='127.0.0.1',
                                      ping_interval=1) as executor:
        assert len(child_daemons(os.getpid())) == 1
        assert list(executor.map(square, range(100), chunksize=10, timeout=DEADLINE)) == [
            n * n for n in range(100)]
        with pytest.raises(ValueError, match='^nope$'):
            executor.submit(fail_with, 'nope').result(timeout=DEADLINE)
        assert 'node-127.0.0.2' in executor.submit(where).result(timeout=DEADLINE)
    wait_for(lambda: not child_daemons(os.getpid()), DEADLINE, 'its scheduler to stop')
    assert not recovery_files('.')


# ---------------------------------------------------------------------------------------------
# 5. asyncio


def test_await_job_and_gather(daemons):
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2')
    daemons.start_node('127.0.0.3')
    with SharedJobCluster(work, **daemons.client_options()) as cluster:
        async def main():
            one = await cluster.submit('square', 7)
            many = await asyncio.wait_for(
                asyncio.gather(*[cluster.submit('square', n) for n in range(200)]), DEADLINE)
            failing = cluster.submit('raise', 'bad value 3')
            with pytest.raises(dispyscheduler.JobFailed) as raised:
                await asyncio.wait_for(failing, DEADLINE)
            assert raised.value.job is failing and 'bad value 3' in str(raised.value)
            return one, many

        one, many = asyncio.run(main())
    assert one == 49
    assert many == [n * n for n in range(200)]


def test_the_event_loop_goes_on_while_a_job_is_awaited(daemons, tmp_path):
    """A ticker task runs while ``await job`` waits: the job can only end once the ticker has
    ticked ten times after seeing it run (it releases it)."""
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2')
    with SharedJobCluster(work, **daemons.client_options()) as cluster:
        async def main():
            job = cluster.submit('gate', 5, str(tmp_path))
            ticks = []

            async def ticker():
                while True:
                    if os.path.exists(tmp_path / 'started-5'):
                        ticks.append(time.monotonic())
                        if len(ticks) == 10:
                            release(tmp_path)
                    await asyncio.sleep(0.005)

            task = asyncio.create_task(ticker())
            try:
                result = await asyncio.wait_for(job, DEADLINE)
            finally:
                task.cancel()
            return result, len(ticks)

        result, ticks = asyncio.run(main())
    assert result == 5 and ticks >= 10


def test_as_completed_async_yields_each_job_once_as_it_ends(daemons, tmp_path):
    """200 quick jobs and one that runs until released: all come out, each once, the quick
    ones first; a ticker task releases the slow one once it has seen the 200 come out."""
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2')
    daemons.start_node('127.0.0.3')
    with SharedJobCluster(work, **daemons.client_options()) as cluster:
        async def main():
            slow = cluster.submit('gate', 0, str(tmp_path))
            jobs = [cluster.submit('square', n) for n in range(200)]
            seen = []

            async def ticker():
                ticks = 0
                while True:
                    ticks += 1
                    if len(seen) == 200:
                        release(tmp_path)
                        return ticks
                    await asyncio.sleep(0.005)

            task = asyncio.create_task(ticker())
            async for job in dispyscheduler.as_completed_async([slow] + jobs, timeout=DEADLINE):
                seen.append(job)
            ticks = await asyncio.wait_for(task, DEADLINE)
            return slow, jobs, seen, ticks

        slow, jobs, seen, ticks = asyncio.run(main())
    assert all(isinstance(job, DispyJob) for job in seen)
    assert len(seen) == 201 and len(set(map(id, seen))) == 201
    assert set(map(id, seen)) == set(map(id, [slow] + jobs))
    assert seen[-1] is slow and slow.result == 0
    assert sorted(job.result for job in seen[:-1]) == sorted(n * n for n in range(200))
    assert ticks >= 1
