"""Arguments of any size (issue 18, first part): a job's arguments whose pickle is larger than
1 MiB no longer travel in its ``Submit``; each large argument is sent on its own, once, kept by
the scheduler in a file, streamed to each node once, and forgotten everywhere once no job
needs it. Real daemons on loopback; each test is a user's program (``SharedJobCluster``,
``submit``, ``job()``) and checks what the user would see, and what the daemons did from the
outside: files on disk, /proc counters of the scheduler process, its status page.
"""

import collections
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from daemons import CLUSTER_SECRET, REPO, free_ports, wait_for

import dispyscheduler.client.cluster as client_cluster
from dispyscheduler import DispyJob, SharedJobCluster

MB = 1000 * 1000
DEADLINE = 120  # seconds for a large transfer on a loaded two-core machine
VALUE_PREFIX = '_dispyscheduler_value_'
NODES = ('127.0.0.2', '127.0.0.3')


# what the jobs run (on the nodes)

def digest(data):
    """The data's SHA-256 and length, and the value files in the computation's directory."""
    import hashlib
    import os
    names = sorted(name for name in os.listdir(dispy_job_path)  # noqa: F821 (a node global)
                   if name.startswith('_dispyscheduler_value_'))
    return hashlib.sha256(data).hexdigest(), len(data), names


def value_file_seen(data):
    """Run on a node: the node, the identity of the file the value came in (a file written
    again is a new inode or a new mtime), and the data's digest."""
    import glob
    import hashlib
    import os
    import time
    time.sleep(0.2)  # work long enough that the jobs spread over both nodes
    (path,) = glob.glob(os.path.join(dispy_job_path,  # noqa: F821 (a node global)
                                     '_dispyscheduler_value_*.pickle'))
    info = os.stat(path)
    return (dispy_node_ip_addr, info.st_ino, info.st_mtime_ns,  # noqa: F821
            hashlib.sha256(data).hexdigest())


def lengths(*args, **kwargs):
    return [len(arg) for arg in args], {name: len(arg) for name, arg in kwargs.items()}


# what the tests look at

def start_daemons(daemons, *extra):
    scheduler = daemons.start_scheduler(*extra)
    nodes = {ip: daemons.start_node(ip) for ip in NODES}
    return scheduler, nodes


def scheduler_directory(daemons):
    return os.path.join(daemons.directory, 'scheduler')


def node_directory(daemons, ip):
    return os.path.join(daemons.directory, 'node-' + ip)


def value_files(*directories):
    """Paths of stored values (``_dispyscheduler_value_*``) anywhere under ``directories``,
    hidden directories (the scheduler's ``.uploads``) included."""
    found = []
    for directory in directories:
        for root, _, names in os.walk(directory):
            found += [os.path.join(root, name) for name in names
                      if name.startswith(VALUE_PREFIX)]
    return found


def size_of(path):
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return None


def proc_status(pid, field):
    """A field of /proc/PID/status, in bytes (the kernel gives kB)."""
    with open('/proc/%d/status' % pid) as handle:
        for line in handle:
            if line.startswith(field + ':'):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def proc_io(pid):
    with open('/proc/%d/io' % pid) as handle:
        return {key: int(value) for key, value in
                (line.split(':') for line in handle if line.strip())}


def process_state(pid):
    with open('/proc/%d/stat' % pid) as handle:
        return handle.read().rsplit(')', 1)[1].split()[0]


def freeze(pid):
    """SIGSTOP, and wait until it has taken effect (the signal is delivered asynchronously:
    the process may run on another CPU a moment after ``kill`` returns)."""
    os.kill(pid, signal.SIGSTOP)
    wait_until(lambda: process_state(pid) == 'T', 10, 'process %d to stop' % pid)


def wait_until(predicate, timeout, what, interval=0.005):
    """``wait_for`` polling more often: for a state that lasts a fraction of a second."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(interval)
    raise AssertionError('timed out after %ss waiting for %s' % (timeout, what))


def finished(job, timeout=DEADLINE):
    """The job's result once it ended Finished (its exception otherwise, in the failure)."""
    result = job(timeout=timeout)
    assert job.status == DispyJob.Finished, (job.status, job.exception)
    return result


# 1

def test_a_200_mb_argument_reaches_its_job_intact(daemons):
    """200 MB of random bytes: the job sees them whole (digest, length), in a value file of
    the computation's directory; the scheduler, which passes them on in chunks, never holds
    much of them at once (its peak resident size, VmHWM, stays under 300 MB)."""
    scheduler, _ = start_daemons(daemons)
    data = os.urandom(200 * MB)
    expected = hashlib.sha256(data).hexdigest()
    with SharedJobCluster(digest, **daemons.client_options()) as cluster:
        job = cluster.submit(data)
        sha, length, names = finished(job)
        assert (sha, length) == (expected, len(data))
        assert len(names) == 1 and names[0].startswith(VALUE_PREFIX), names
        peak = proc_status(scheduler.pid, 'VmHWM')
    print('scheduler VmHWM after a 200 MB argument: %.1f MB (%d kB)' % (peak / MB, peak // 1024))
    assert peak < 300 * MB, 'the scheduler peaked at %.1f MB resident' % (peak / MB)


def test_a_1_gb_argument_costs_the_client_and_the_scheduler_a_few_chunks(daemons):
    """A 1 GB argument: the job sees it whole; the scheduler's peak resident size stays under
    300 MB, and this program's grows by far less than the argument (its pickle waits in a
    temporary file, not in memory: peak resident size, reset once the data is made, grows by
    less than 200 MB)."""
    scheduler, _ = start_daemons(daemons)
    data = b'\x5a' * (1000 * MB)
    expected = hashlib.sha256(data).hexdigest()
    with open('/proc/self/clear_refs', 'w') as handle:
        handle.write('5')  # VmHWM from here on
    before = proc_status(os.getpid(), 'VmRSS')
    with SharedJobCluster(digest, **daemons.client_options()) as cluster:
        sha, length, _ = finished(cluster.submit(data), timeout=300)
        client_peak = proc_status(os.getpid(), 'VmHWM')
        scheduler_peak = proc_status(scheduler.pid, 'VmHWM')
    assert (sha, length) == (expected, len(data))
    print('1 GB argument: the program grew by %.1f MB at most, the scheduler peaked at %.1f MB'
          % ((client_peak - before) / MB, scheduler_peak / MB))
    assert client_peak - before < 200 * MB, (client_peak - before) / MB
    assert scheduler_peak < 300 * MB, scheduler_peak / MB


def test_many_large_arguments_at_once_cost_the_client_a_bounded_amount(daemons):
    """30 distinct 10 MB arguments submitted in a loop (faster than the scheduler saves
    them): the program's peak resident size grows by less than 150 MB beyond the data it
    made (pickles awaiting the scheduler are kept in memory up to 32 MiB in all, the rest in
    temporary files), and every job sees its own data."""
    start_daemons(daemons)
    inputs = [os.urandom(10 * MB) for _ in range(30)]
    expected = [hashlib.sha256(data).hexdigest() for data in inputs]
    with SharedJobCluster(digest, **daemons.client_options()) as cluster:
        with open('/proc/self/clear_refs', 'w') as handle:
            handle.write('5')  # VmHWM from here on
        before = proc_status(os.getpid(), 'VmRSS')
        jobs = [cluster.submit(data) for data in inputs]
        results = [finished(job)[:2] for job in jobs]
        grown = proc_status(os.getpid(), 'VmHWM') - before
    assert results == [(sha, 10 * MB) for sha in expected]
    print('30 x 10 MB arguments: the program grew by %.1f MB at most' % (grown / MB))
    assert grown < 150 * MB, grown / MB


# 2

def test_one_argument_given_to_40_jobs_travels_once_to_the_scheduler_and_each_node(daemons,
                                                                                   monkeypatch):
    """The same 50 MB bytes object given to 40 jobs on two nodes: every job sees the right
    data; the client pickled it once; each node got the value once (every job there saw the
    same file: one inode and mtime per node); the scheduler received it once and sent it to
    each node once (/proc/PID/io wchar counts its file writes and what it sends straight from
    files, os.sendfile, not other socket sends: one write and two sends of 50 MB, under 3.5 x
    50 MB in all, where a copy per job would be 40 x)."""
    pickled = collections.Counter()
    spool_value = client_cluster.spool_value

    def counting_spool_value(value, *args):
        pickled[len(value) if isinstance(value, bytes) else -1] += 1
        return spool_value(value, *args)

    monkeypatch.setattr(client_cluster, 'spool_value', counting_spool_value)
    scheduler, _ = start_daemons(daemons)
    data = os.urandom(50 * MB)
    expected = hashlib.sha256(data).hexdigest()
    before = proc_io(scheduler.pid)
    with SharedJobCluster(value_file_seen, **daemons.client_options()) as cluster:
        wait_for(lambda: len(cluster.status().nodes) == 2, DEADLINE,
                 'both nodes to set the computation up')  # so that jobs go to both
        jobs = [cluster.submit(data) for _ in range(40)]
        results = [finished(job) for job in jobs]
        after = proc_io(scheduler.pid)
    files = collections.defaultdict(set)
    for ip, inode, mtime, sha in results:
        assert sha == expected
        files[ip].add((inode, mtime))
    assert pickled == {50 * MB: 1}, pickled
    assert set(files) == set(NODES), 'jobs ran on %s only' % sorted(files)
    assert all(len(seen) == 1 for seen in files.values()), dict(files)
    written = after['wchar'] - before['wchar']
    read = after['rchar'] - before['rchar']
    print('scheduler over 40 jobs of one 50 MB argument: wrote %.1f MB, read %.1f MB'
          % (written / MB, read / MB))
    assert written < (1 + len(NODES) + 0.5) * 50 * MB, 'the scheduler wrote %.1f MB' % (
        written / MB)


# 3

def test_values_are_forgotten_once_no_job_needs_them(daemons, monkeypatch):
    """VALUE_LINGER 0: once the job given a 5 MB argument has ended (and one more job, after
    which the client has surely said so), the value's files are gone from the scheduler and
    from both nodes; the same data given to a later job is sent again and works."""
    monkeypatch.setattr(client_cluster, 'VALUE_LINGER', 0)
    start_daemons(daemons)
    directories = [scheduler_directory(daemons)] + [node_directory(daemons, ip) for ip in NODES]
    data = os.urandom(5 * MB)
    expected = hashlib.sha256(data).hexdigest()
    with SharedJobCluster(digest, **daemons.client_options()) as cluster:
        sha, length, names = finished(cluster.submit(data))
        assert (sha, length) == (expected, len(data))
        assert len(names) == 1, names  # it came as a value, not inline
        assert finished(cluster.submit(b'small'))[:2] == (hashlib.sha256(b'small').hexdigest(),
                                                          5)
        wait_for(lambda: not value_files(*directories), 60,
                 'the value files to go: %s' % (value_files(*directories),))
        sha, length, names = finished(cluster.submit(data))
        assert (sha, length) == (expected, len(data))
        assert len(names) == 1, names


# 4

CLIENT_PROGRAM = '''
import collections, hashlib, json, os, sys
from dispyscheduler import DispyJob, SharedJobCluster

def hash_and_count(data, directory):
    """Hash the data, then (only then) count this run: one line per completed run."""
    import hashlib, os
    sha = hashlib.sha256(data).hexdigest()
    with open(os.path.join(directory, 'runs'), 'a') as handle:
        handle.write(sha + '\\n')
    return sha, len(data)

port, secret, directory = int(sys.argv[1]), sys.argv[2], sys.argv[3]
data = os.urandom(200 * 1000 * 1000)
expected = hashlib.sha256(data).hexdigest()
final = collections.Counter()

def callback(job):
    if job.status in (DispyJob.Finished, DispyJob.Terminated, DispyJob.Cancelled,
                      DispyJob.Abandoned):
        final[job.id] += 1

with SharedJobCluster(hash_and_count, scheduler_node='127.0.0.1', scheduler_port=port,
                      secret=secret, callback=callback) as cluster:
    job = cluster.submit(data, directory)
    print('submitted', flush=True)
    job()
    cluster.wait()
print(json.dumps({'expected': expected, 'status': job.status, 'result': job.result,
                  'exception': job.exception, 'final_callbacks': final[job.id]}), flush=True)
'''


def start_program(daemons, tmp_path, text):
    """Run ``text`` as a client program (its arguments: the scheduler's client port, the
    secret, a directory for its jobs to count their runs in); returns that directory and the
    process."""
    runs = tmp_path / 'runs'
    runs.mkdir()
    script = tmp_path / 'client_program.py'
    script.write_text(text)
    program = subprocess.Popen([sys.executable, str(script), str(daemons.scheduler_port),
                                CLUSTER_SECRET, str(runs)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, cwd=str(tmp_path),
                               env=dict(os.environ, PYTHONPATH=REPO))
    return runs, program


def restart_and_collect(daemons, program):
    """Start the killed scheduler again on its state, and read the client program's summary
    (its last line, JSON) once it has ended, successfully."""
    restarted = daemons.start_scheduler(name='scheduler-restarted')
    restarted.wait_log(r'restored 1 clusters')
    out, err = program.communicate(timeout=300)
    assert program.returncode == 0, err.decode()[-5000:]
    return json.loads(out.decode().splitlines()[-1])


@pytest.mark.parametrize('phase', ['upload', 'stream'])
def test_scheduler_killed_during_a_large_transfer_and_restarted(daemons, tmp_path, phase):
    """kill -9 of the scheduler while a 200 MB argument is on its way, then a restart on the
    same --dest_path_prefix (and so the same state): the client program, left running,
    reconnects, and its job completes exactly once with the right digest.

    To catch the transfer half way every time, whatever the machine's speed, the party that
    receives is frozen (SIGSTOP) the moment its file appears, the scheduler is killed, and
    the frozen party is let go (SIGCONT) before the restart:

    - ``upload``: the client program is frozen once the scheduler's upload file exists (the
      client sends the value chunk by chunk, each after the one before has left), so the
      scheduler is killed with part of the value received;
    - ``stream``: the node is frozen once the value's file exists in its directory, so the
      scheduler is killed while streaming it there (the job, sent after its value, has not
      reached the node).

    Either way the killed copy is shown to be partial: its size below the value's."""
    _, nodes = start_daemons(daemons)
    runs, program = start_program(daemons, tmp_path, CLIENT_PROGRAM)
    frozen = None
    try:
        if phase == 'upload':
            uploads = scheduler_directory(daemons)
            (path,) = wait_until(lambda: value_files(uploads), DEADLINE,
                                 'the value to start arriving at the scheduler')
            frozen = program.pid
            freeze(frozen)
        else:
            directories = {ip: node_directory(daemons, ip) for ip in NODES}
            found = wait_until(lambda: [(ip, path) for ip, directory in directories.items()
                                        for path in value_files(directory)], DEADLINE,
                               'the value to start arriving at a node')
            ip, path = found[0]
            frozen = nodes[ip].pid
            freeze(frozen)
        daemons.scheduler.kill()
        killed_at = size_of(path)
        assert killed_at is not None and killed_at < 200 * MB, (
            'the %s was not caught half way: %s has %s bytes' % (phase, path, killed_at))
        os.kill(frozen, signal.SIGCONT)
        frozen = None
        summary = restart_and_collect(daemons, program)
    finally:
        if frozen is not None:
            os.kill(frozen, signal.SIGCONT)
        program.kill()
        program.wait()
    print('%s: scheduler killed with %d of 200000000+ bytes of the value in %s'
          % (phase, killed_at, path))
    assert summary['status'] == DispyJob.Finished, summary
    assert summary['result'] == [summary['expected'], 200 * MB], summary
    assert summary['final_callbacks'] == 1, summary
    completed = (runs / 'runs').read_text().splitlines()
    assert completed == [summary['expected']], completed  # exactly one completed run


# 5

PAGE = 4096  # tmpfs allocates in pages


def mount_tmpfs(directory, size):
    directory.mkdir()
    mounted = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=%d' % size, 'tmpfs',
                              str(directory)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip('cannot mount a %d MB tmpfs here (it needs root): %s'
                    % (size // MB, mounted.stderr.decode().strip()))


def unmount(directory):
    """Unmount a test's tmpfs (lazily if something still holds it)."""
    if subprocess.run(['umount', str(directory)], capture_output=True).returncode:
        subprocess.run(['umount', '-l', str(directory)], capture_output=True)


def free_bytes(directory):
    info = os.statvfs(directory)
    return info.f_bavail * info.f_frsize


def fill_disk(directory, leave):
    """Take the free space of ``directory``'s disk but ``leave`` bytes (a whole number of
    pages), with one file."""
    filler = os.path.join(directory, 'filler')
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.posix_fallocate(fd, 0, free_bytes(directory) - leave)
    finally:
        os.close(fd)
    assert free_bytes(directory) == leave, (free_bytes(directory), leave)


@pytest.mark.parametrize('when', ['before', 'during', 'last_chunk'])
def test_a_full_disk_at_the_scheduler_ends_the_job_with_the_reason(daemons, tmp_path, when):
    """The scheduler's --dest_path_prefix on a small disk: a job given a 50 MB argument ends
    Terminated, saying the scheduler could not keep the argument and why (the disk space);
    the scheduler stays up, nothing of the value is left on its disk, and small jobs of the
    same cluster and of another one finish.

    - ``before``: a 30 MB disk (the state database on it too, as by default): the value
      cannot fit, and is refused before any of it is written;
    - ``during``: a disk with room for the value (beside the space the scheduler keeps
      free, DISK_RESERVE), which the test fills while the value arrives: the scheduler is
      frozen (SIGSTOP) once the value's file appears, all but half of what the rest of the
      value needs is taken, and the scheduler goes on (SIGCONT): a write fails, ENOSPC;
    - ``last_chunk``: the same, with room left for every chunk but half the last one: the
      last write is short (the kernel writes what fits and returns its count).

    In the last two the state database is on another disk (a full state disk stops the
    scheduler, by design: test_never_lose_a_job)."""
    from dispyscheduler.constants import DISK_RESERVE, FILE_CHUNK_SIZE
    from dispyscheduler.wire.serialize import dumps
    small_disk = tmp_path / 'small-disk'
    data = os.urandom(50 * MB)
    total = len(dumps(data))  # the value's size, as the client announces it
    last_offset = (total - 1) // FILE_CHUNK_SIZE * FILE_CHUNK_SIZE
    mount_tmpfs(small_disk, 30 * 1024 * 1024 if when == 'before'
                else DISK_RESERVE + 64 * 1024 * 1024)
    try:
        extra = ['--dest_path_prefix', str(small_disk)]  # the last one given wins
        if when != 'before':
            extra += ['--state_dir', os.path.join(daemons.directory, 'state')]
        scheduler, _ = start_daemons(daemons, *extra)
        with SharedJobCluster(lengths, **daemons.client_options()) as cluster:
            if when == 'before':
                big = cluster.submit(data)
            else:
                submitting = threading.Thread(target=lambda: jobs.append(cluster.submit(data)))
                jobs = []
                submitting.start()
                (path,) = wait_until(lambda: value_files(str(small_disk)), DEADLINE,
                                     'the value to start arriving at the scheduler')
                try:
                    freeze(scheduler.pid)
                    written = size_of(path)
                    assert written is not None and written < last_offset, (
                        'the upload was not caught half way: %s bytes of %d' % (written, total))
                    if when == 'during':
                        leave = (total - written) // 2 // PAGE * PAGE
                    else:
                        leave = (last_offset - written + (total - last_offset) // 2) \
                            // PAGE * PAGE
                    fill_disk(str(small_disk), leave)
                finally:
                    os.kill(scheduler.pid, signal.SIGCONT)
                submitting.join(DEADLINE)
                (big,) = jobs
            big(timeout=DEADLINE)
            print('%s: the job given 50 MB: %s, %s' % (when, big.status, big.exception))
            assert big.status == DispyJob.Terminated, (big.status, big.result, big.exception)
            reason = r'bytes free' if when == 'before' else 'No space left on device'
            assert re.search(r'could not be kept by the scheduler: .*' + reason,
                             big.exception), big.exception
            assert scheduler.alive()
            assert not value_files(str(small_disk)), value_files(str(small_disk))
            assert finished(cluster.submit(b'small')) == ([5], {})
            with SharedJobCluster(lengths, **daemons.client_options()) as other:
                assert finished(other.submit(b'other', key=b'xy')) == ([5], {'key': 2})
            assert finished(cluster.submit(b'again')) == ([5], {})
        assert scheduler.alive()
    finally:
        if daemons.scheduler is not None:
            os.kill(daemons.scheduler.pid, signal.SIGCONT)  # (if a failure left it stopped)
            daemons.scheduler.stop()  # off the disk before it goes
        unmount(small_disk)


# 6

def test_a_full_disk_on_a_node_ends_the_job_with_the_reason_and_service_resumes(daemons,
                                                                                 tmp_path):
    """A node whose --dest_path_prefix fills while a value arrives: the job given it ends
    Terminated saying the argument could not be written there and why; the node keeps
    serving (a small job runs), and once there is room again the same data, given to a new
    job, is sent again and the job finishes."""
    from dispyscheduler.constants import DISK_RESERVE
    small_disk = tmp_path / 'node-disk'
    mount_tmpfs(small_disk, DISK_RESERVE + 64 * 1024 * 1024)
    node = None
    try:
        daemons.start_scheduler()
        node = daemons.start_node(NODES[0], '--dest_path_prefix', str(small_disk))
        data = os.urandom(40 * MB)
        with SharedJobCluster(lengths, nodes=[NODES[0]], **daemons.client_options()) as cluster:
            # the computation set up (the node keeps DISK_RESERVE free for that), the disk
            # fills: 20 MB are left for a value of 40
            assert finished(cluster.submit(b'first')) == ([5], {})
            fill_disk(str(small_disk), 20 * 1024 * 1024)
            big = cluster.submit(data)
            big(timeout=DEADLINE)
            assert big.status == DispyJob.Terminated, (big.status, big.exception)
            assert re.search(r'could not be written on node %s: .*No space left on device'
                             % re.escape(NODES[0]), big.exception), big.exception
            assert finished(cluster.submit(b'small')) == ([5], {})
            os.unlink(small_disk / 'filler')  # room again
            assert finished(cluster.submit(data)) == ([len(data)], {})
        assert node.alive()
    finally:
        if node is not None:
            node.stop()  # off the disk before it goes
        unmount(small_disk)


def http_get(port, path):
    with urllib.request.urlopen('http://127.0.0.1:%d%s' % (port, path), timeout=10) as reply:
        return reply.read().decode()


def test_an_unpicklable_argument_is_refused_at_submit_and_nothing_is_sent(daemons):
    """A lock among a job's arguments, alone (small arguments) or beside 2 MB of data (the
    path of large arguments): submit() raises TypeError naming it, sends nothing (no job
    reaches the scheduler, no value is uploaded), and the cluster goes on."""
    (http_port,) = free_ports(1)
    start_daemons(daemons, '--httpd', '127.0.0.1:%d' % http_port)
    big = os.urandom(2 * MB)
    with SharedJobCluster(lengths, **daemons.client_options()) as cluster:
        with pytest.raises(TypeError) as small_case:
            cluster.submit(b'abc', threading.Lock())
        with pytest.raises(TypeError) as large_case:
            cluster.submit(big, threading.Lock())
        with pytest.raises(TypeError) as keyword_case:
            cluster.submit(big, guard=threading.RLock())
        for caught in (small_case, large_case, keyword_case):
            message = str(caught.value)
            print('TypeError: %s' % message)
            assert 'argument' in message, message
            assert re.search(r'_thread\.(lock|RLock)', message), message
        assert finished(cluster.submit(b'abc')) == ([3], {})
        # every message goes in order: had anything of the refused jobs been sent, it would
        # have reached the scheduler before the job that just ended
        assert not value_files(scheduler_directory(daemons))
        (status,) = json.loads(http_get(http_port, '/status'))['clusters']
        assert status['done'] == 1 and status['queued'] == 0 and status['running'] == 0, status
        submitted = re.search(r'^dispyscheduler_jobs_submitted(?:_total)? (\S+)$',
                              http_get(http_port, '/metrics'), re.M)
        assert submitted and float(submitted.group(1)) == 1, submitted
        assert finished(cluster.submit(big, key=b'xyz')) == ([2 * MB], {'key': 3})
        assert cluster.wait(timeout=DEADLINE)
