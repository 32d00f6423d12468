"""Shared pieces of the benchmark drivers: stdlib only, so every system's venv can import it.

Two roles live here:

* the *driver* side (``run_suite``): start a system's daemons, run the workload phases by
  spawning client processes, read the scheduler's CPU time and memory from /proc, print one
  ``RESULT {json}`` line;
* the *client* side (``client_main``): one client process of one phase. It connects (creates
  its cluster), runs a few warm-up jobs, prints ``READY``, waits for ``GO`` on stdin, runs the
  phase, prints ``RESULT {json}`` and disconnects. The driver reads the scheduler's CPU time
  between ``READY`` and ``GO`` and after the last result, so cluster set-up and tear-down are
  not counted.

A payload row (``run_payload_phase`` / ``payload_client``) follows the same protocol with one
client, and also resets and reads the peak RSS (``VmHWM``) of the scheduler, of every process
of each node and of the client, per row.

Every process a driver starts runs in a process group of its own inside the driver's session
and is stopped by PID (SIGTERM to its group, then SIGKILL); anything still in the session
afterwards is killed by PID and reported as a leftover.
"""

import ctypes
import hashlib
import json
import os
import queue
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

CLK_TCK = os.sysconf('SC_CLK_TCK')
NODE_SECRET = 'bench-node-secret'
CLUSTER_SECRET = 'bench-cluster-secret'
WARMUP_JOBS = 10
MIN_RATE = 50.0
"""Jobs per second below which a phase is given up as stalled (its timeout is
``60 + n / MIN_RATE`` seconds)."""


def phase_timeout(n):
    return 60.0 + n / MIN_RATE


# ---------------------------------------------------------------------------------- /proc

def proc_stat(pid):
    with open('/proc/%d/stat' % pid) as handle:
        stat = handle.read()
    return stat[stat.rindex(')') + 2:].split()


def cpu_seconds(pid):
    """utime + stime of ``pid`` in seconds (its own, not its children's)."""
    fields = proc_stat(pid)
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def memory_kb(pid):
    """``{'VmRSS': kB, 'VmHWM': kB}`` of ``pid``."""
    values = {}
    with open('/proc/%d/status' % pid) as handle:
        for line in handle:
            key, _, rest = line.partition(':')
            if key in ('VmRSS', 'VmHWM'):
                values[key] = int(rest.split()[0])
    return values


def reset_peak_rss(pid):
    """Reset ``pid``'s ``VmHWM`` to its current RSS (``echo 5 > /proc/PID/clear_refs``, Linux
    4.0 and later; needs the right to write there, i.e. root or the process's owner). A process
    already gone is ignored; any other failure raises ``RuntimeError``."""
    try:
        with open('/proc/%d/clear_refs' % pid, 'w') as handle:
            handle.write('5')
    except (FileNotFoundError, ProcessLookupError):
        pass
    except OSError as exc:
        raise RuntimeError('cannot reset the peak RSS of %d (/proc/%d/clear_refs): %s' % (
            pid, pid, exc)) from None


def descendants(pid):
    """``pid`` and every live (non-zombie) process below it in the process tree, by parent
    PID (a node's workers may be in process groups of their own)."""
    children = {}
    for entry in os.listdir('/proc'):
        if not entry.isdigit():
            continue
        try:
            fields = proc_stat(int(entry))
        except (OSError, ValueError):
            continue
        if fields[0] != 'Z':
            children.setdefault(int(fields[1]), []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, ()))
    return tree


def command_of(pid):
    """A short name of ``pid``'s command line (its first arguments, file names only)."""
    try:
        with open('/proc/%d/cmdline' % pid, 'rb') as handle:
            argv = handle.read().decode(errors='replace').split('\0')
    except OSError:
        return '?'
    return ' '.join(os.path.basename(arg) for arg in argv[:4] if arg)[:80]


def _members(field, value, exclude=()):
    """PIDs of live (non-zombie) processes whose /proc stat ``field`` (after the name) is
    ``value``: 2 for the process group, 3 for the session."""
    members = []
    for entry in os.listdir('/proc'):
        if not entry.isdigit() or int(entry) in exclude:
            continue
        try:
            fields = proc_stat(int(entry))
        except (OSError, ValueError):
            continue
        if int(fields[field]) == value and fields[0] != 'Z':
            members.append(int(entry))
    return members


def start_time(pid):
    """Start time of ``pid`` (clock ticks after boot): with the PID, names one process."""
    return int(proc_stat(pid)[19])


def same_process(pid, started):
    """``pid`` is still the live process that started at ``started``."""
    try:
        fields = proc_stat(pid)
    except (OSError, ValueError):
        return False
    return int(fields[19]) == started and fields[0] != 'Z'


def session_members(sid, exclude=()):
    """PIDs of live (non-zombie) processes in session ``sid``."""
    return _members(3, sid, exclude)


def group_members(pgid):
    return _members(2, pgid)


def kill_pids(pids):
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# ---------------------------------------------------------------------------------- ports

def port_free(address, port):
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as sock:
            if kind == socket.SOCK_STREAM:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((address, port))
            except OSError:
                return False
    return True


def free_ports(count=3, addresses=('127.0.0.1', '127.0.0.2', '127.0.0.3')):
    """``count`` consecutive ports free for TCP and UDP on every address."""
    for _ in range(200):
        base = random.randrange(20000, 32000)
        if all(port_free(a, base + i) for i in range(count) for a in addresses):
            return list(range(base, base + count))
    raise RuntimeError('no free ports found')


# ---------------------------------------------------------------------------------- daemons

def die_with_parent():
    """Before exec: SIGTERM to this process when its parent dies."""
    ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _child_setup():
    """Before exec: own process group (so it can be stopped as a group, by its PID), and
    SIGTERM if the driver dies."""
    os.setpgid(0, 0)
    die_with_parent()


class Daemon:
    def __init__(self, name, argv, workdir, env=None):
        self.name = name
        self.log_path = os.path.join(workdir, name + '.log')
        self.log_file = open(self.log_path, 'wb')
        self.process = subprocess.Popen(argv, stdout=self.log_file, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, cwd=workdir, env=env,
                                        preexec_fn=_child_setup)
        self.pid = self.process.pid

    def log(self):
        with open(self.log_path, errors='replace') as handle:
            return handle.read()

    def alive(self):
        return self.process.poll() is None

    def wait_log(self, pattern, count=1, timeout=60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(re.findall(pattern, self.log())) >= count:
                return
            if not self.alive():
                raise RuntimeError('%s exited (%s) before %r; log tail: %s' % (
                    self.name, self.process.returncode, pattern, tail(self.log())))
            time.sleep(0.05)
        raise RuntimeError('timed out waiting for %r in %s log; tail: %s' % (
            pattern, self.name, tail(self.log())))

    def stop(self, timeout=10):
        """SIGTERM to the daemon's process group (its PID), SIGKILL to what is left."""
        if self.process.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        deadline = time.monotonic() + 5
        while group_members(self.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        kill_pids(group_members(self.pid))
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.log_file.close()


def tail(text, lines=8):
    return ' | '.join(text.strip().splitlines()[-lines:])[-1500:]


def log_problems(daemons):
    """Lines of daemon logs that look like trouble: count and the first few, per daemon."""
    problems = {}
    pattern = re.compile(r'Traceback|ERROR|Error|WARNING|warning|exception', re.I)
    for daemon in daemons:
        try:
            lines = [line for line in daemon.log().splitlines() if pattern.search(line)]
        except OSError:
            continue
        if lines:
            problems[daemon.name] = {'count': len(lines), 'first': lines[:5]}
    return problems


# ---------------------------------------------------------------------------------- clients

class ClientProcess:
    """One client process of a phase: READY / GO / RESULT over its stdin and stdout."""

    def __init__(self, argv, workdir, name, env=None):
        self.name = name
        self.stderr_path = os.path.join(workdir, name + '.stderr')
        self.stderr = open(self.stderr_path, 'wb')
        self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self.stderr, cwd=workdir, env=env,
                                        preexec_fn=_child_setup, text=True, bufsize=1)
        self.pid = self.process.pid
        self.watched = []  # (pid, start time): processes it started outside its group
        self.lines = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.process.stdout:
            self.lines.put(line.rstrip('\n'))
        self.lines.put(None)

    def expect(self, prefix, deadline):
        """The first stdout line starting with ``prefix``, before ``deadline`` (monotonic)."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError('%s: timed out waiting for %s; stderr: %s' % (
                    self.name, prefix, self.stderr_tail()))
            try:
                line = self.lines.get(timeout=min(remaining, 1.0))
            except queue.Empty:
                continue
            if line is None:
                self.process.wait(5)
                raise RuntimeError('%s exited (%s) before %s; stderr: %s' % (
                    self.name, self.process.returncode, prefix, self.stderr_tail()))
            if line.startswith(prefix):
                return line[len(prefix):].strip()

    def watch(self, pids):
        """Processes this client started outside its process group (a JobCluster's own
        scheduler runs in a session of its own), to be stopped by PID with it."""
        for pid in pids:
            if pid != self.pid:
                try:
                    self.watched.append((pid, start_time(pid)))
                except OSError:
                    pass

    def go(self):
        self.process.stdin.write('GO\n')
        self.process.stdin.flush()

    def stderr_tail(self):
        try:
            with open(self.stderr_path, errors='replace') as handle:
                return tail(handle.read())
        except OSError:
            return ''

    def finish(self, timeout=60):
        """Let it close its cluster and exit; kill its group if it does not."""
        try:
            self.process.stdin.close()
        except OSError:
            pass
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        if self.process.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(10)
        kill_pids(group_members(self.pid))
        self.stderr.close()
        # what it started outside its group stops with it (a JobCluster's scheduler sees its
        # standard input close); whatever is still there after 20 s is killed by PID
        deadline = time.monotonic() + 20
        while any(same_process(*w) for w in self.watched) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = [pid for pid, started in self.watched if same_process(pid, started)]
        kill_pids(left)
        return left


def percentile(values, fraction):
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, int(-(-fraction * len(ordered) // 1)))
    return ordered[min(rank, len(ordered)) - 1]


def program_cpu_seconds(pids):
    return sum(cpu_seconds(pid) for pid in pids)


def run_phase(spawn_client, scheduler_pid, mode, n, clients, workdir, label):
    """Run one phase with ``clients`` client processes sharing ``n`` jobs; return its record.

    ``scheduler_pid`` is the shared scheduler's (None for JobCluster, where each client has
    its own). A client may name, on its ``READY`` line, the processes that make up its
    program (``{"pids": [...]}``: itself, and a JobCluster's scheduler child): their CPU time
    over the phase is the record's ``program_cpu_s``."""
    per_client = [n // clients + (1 if i < n % clients else 0) for i in range(clients)]
    procs = []
    killed = []
    try:
        for index, count in enumerate(per_client):
            procs.append(spawn_client(mode, count, '%s-c%d' % (label, index)))
        deadline = time.monotonic() + 120
        program = []
        for proc in procs:
            ready = proc.expect('READY', deadline)
            pids = json.loads(ready).get('pids', []) if ready else []
            proc.watch(pids)
            program += pids
        cpu0 = cpu_seconds(scheduler_pid) if scheduler_pid else None
        prog0 = program_cpu_seconds(program) if program else None
        wall0 = time.monotonic()
        for proc in procs:
            proc.go()
        deadline = time.monotonic() + phase_timeout(n)
        outcomes = [json.loads(proc.expect('RESULT', deadline)) for proc in procs]
        wall1 = time.monotonic()
        cpu1 = cpu_seconds(scheduler_pid) if scheduler_pid else None
        prog1 = program_cpu_seconds(program) if program else None
        memory = memory_kb(scheduler_pid) if scheduler_pid else {}
        program_hwm = sum(memory_kb(pid).get('VmHWM', 0) for pid in program)
    finally:
        for proc in procs:
            killed += proc.finish()
    record = {'mode': mode, 'n': n, 'clients': clients,
              'errors': sum(o['errors'] for o in outcomes),
              'error_samples': [s for o in outcomes for s in o.get('error_samples', [])][:5],
              'driver_wall_s': wall1 - wall0}
    if scheduler_pid:
        record.update(sched_cpu_s=cpu1 - cpu0, sched_rss_kb_after=memory.get('VmRSS'))
    if program:
        record.update(program_pids=len(program), program_cpu_s=prog1 - prog0,
                      program_peak_rss_kb=program_hwm)
    if killed:
        record['killed_after_client'] = killed
    if mode in ('throughput', 'executor'):
        start = min(o['t_start'] for o in outcomes)
        end = max(o['t_end'] for o in outcomes)
        record.update(wall_s=end - start, throughput=n / (end - start),
                      submit_s=max(o['submit_s'] for o in outcomes),
                      max_gap_s=max((o['max_gap_s'] for o in outcomes
                                     if o['max_gap_s'] is not None), default=None))
        if scheduler_pid:
            record['sched_cpu_s_per_1000'] = (cpu1 - cpu0) * 1000.0 / n
        if program:
            record['program_cpu_s_per_1000'] = (prog1 - prog0) * 1000.0 / n
    else:
        latencies = [x for o in outcomes for x in o['latencies']]
        record.update(latency_median_ms=1000 * statistics.median(latencies),
                      latency_p90_ms=1000 * percentile(latencies, 0.9),
                      latency_max_ms=1000 * max(latencies))
    return record


WORKLOADS = ('latency', 'throughput', 'executor', 'payload')
"""The workloads a run may select (``--workloads``): latency, the throughput phases, the
executor phase (trivial calls through an executor's ``submit``, one client) and the payload
rows (jobs that take bytes and return them reversed, one client per row)."""
PAYLOAD_ROWS = ((100_000, 200), (10_000_000, 40), (100_000_000, 8))
"""The payload rows, ``(bytes per job, jobs)``: 40 MB, 800 MB and 1.6 GB of payload (both
ways)."""

PAYLOAD_ROWS_QUICK = ((100_000, 50), (10_000_000, 10), (100_000_000, 2))

PAYLOAD_MIN_RATE = 5e6
"""Bytes of payload per second (both ways) below which a payload row is given up as stalled
(its timeout is ``60 + payload / PAYLOAD_MIN_RATE`` seconds)."""

PAYLOAD_WARMUP_MAX = 1_100_000
"""Bytes per warm-up job of a payload row, at most (its size if smaller): above the size from
which this project's arguments travel on their own (64 KiB) and its results are streamed
(1 MiB), so the warm-up goes through the same paths as the row, at little cost."""


def payload_timeout(size, jobs):
    return 60.0 + 2.0 * size * jobs / PAYLOAD_MIN_RATE


def parse_payload_rows(text):
    """``'100000x200,10000000x40'`` -> ``[(100000, 200), (10000000, 40)]``."""
    rows = []
    for item in text.split(','):
        if item:
            size, _, jobs = item.partition('x')
            rows.append((int(size), int(jobs)))
    return rows


def format_payload_rows(rows):
    return ','.join('%dx%d' % row for row in rows)


def run_payload_phase(spawn_client, scheduler_pid, node_pids, size, jobs, label):
    """One payload row: one client process submits ``jobs`` jobs, each with its own
    ``size`` random bytes, and checks every result (the bytes reversed).

    Peak RSS is per row: once the client is ``READY`` (its inputs made, its warm-up jobs
    done), the ``VmHWM`` of the scheduler, of every process of each node (the daemon and the
    processes below it) and of the client is reset to the current RSS (``clear_refs``); it is
    read again after the client's ``RESULT``, before the client closes its cluster."""
    record = {'mode': 'payload', 'n': size, 'clients': 1, 'size': size, 'jobs': jobs,
              'payload_bytes': 2 * size * jobs}
    proc = spawn_client('payload', jobs, label + '-c0', ['--size', str(size)])
    killed = []
    try:
        # making the inputs takes ~2.6 s per GB here (os.urandom, then sha256 of each reversed)
        proc.expect('READY', time.monotonic() + 120 + size * jobs / 1e8)
        groups = {'scheduler': [scheduler_pid], 'client': descendants(proc.pid)}
        for index, pid in enumerate(node_pids):
            groups['node%d' % index] = descendants(pid)
        record['sched_hwm_before_kb'] = memory_kb(scheduler_pid).get('VmHWM')
        for pids in groups.values():
            for pid in pids:
                reset_peak_rss(pid)
        at_go, cpu_at_go = {}, {}
        for pids in groups.values():
            for pid in pids:
                try:
                    at_go[pid] = memory_kb(pid).get('VmRSS')
                    cpu_at_go[pid] = cpu_seconds(pid)
                except OSError:
                    pass
        cpu0 = cpu_seconds(scheduler_pid)
        proc.go()
        outcome = json.loads(proc.expect('RESULT', time.monotonic() + payload_timeout(
            size, jobs)))
        cpu1 = cpu_seconds(scheduler_pid)
        # processes started during the row (a worker replaced) count too, from their start
        groups['client'] = descendants(proc.pid)
        for index, pid in enumerate(node_pids):
            groups['node%d' % index] = descendants(pid)
        processes = {}
        for name, pids in groups.items():
            for pid in pids:
                try:
                    memory = memory_kb(pid)
                    cpu = cpu_seconds(pid) - cpu_at_go.get(pid, 0.0)
                except OSError:
                    continue
                processes.setdefault(name, []).append({
                    'pid': pid, 'command': command_of(pid), 'peak_rss_kb': memory['VmHWM'],
                    'rss_at_go_kb': at_go.get(pid), 'rss_end_kb': memory['VmRSS'],
                    'cpu_s': round(cpu, 3)})
    finally:
        killed += proc.finish()
    nodes = [entries for name, entries in processes.items() if name.startswith('node')]

    def peak(name):
        return sum(p['peak_rss_kb'] for p in processes.get(name, []))

    def at_start(name):
        return sum(p['rss_at_go_kb'] or 0 for p in processes.get(name, []))

    wall = outcome['t_end'] - outcome['t_start']
    record.update(
        errors=outcome['errors'], error_samples=outcome.get('error_samples', [])[:5],
        wall_s=wall, mb_per_s=2.0 * size * jobs / wall / 1e6, submit_s=outcome['submit_s'],
        max_gap_s=outcome.get('max_gap_s'), sched_cpu_s=cpu1 - cpu0,
        sched_peak_rss_kb=peak('scheduler'), sched_rss_kb_at_go=at_start('scheduler'),
        node_peak_rss_kb=max((p['peak_rss_kb'] for entries in nodes for p in entries),
                             default=None),
        node_total_peak_rss_kb=max((sum(p['peak_rss_kb'] for p in entries)
                                    for entries in nodes), default=None),
        client_peak_rss_kb=peak('client'), client_rss_kb_at_go=at_start('client'),
        processes=processes)
    if killed:
        record['killed_after_client'] = killed
    return record


def run_suite(system, spawn_client, scheduler_pid, sizes, latency_n, workdir, extra=None,
              client_counts=(1, 2), workloads=('latency', 'throughput'), executor_n=None,
              payload_rows=(), node_pids=()):
    """All phases of one run of one system: latency, then for each size one client and two
    clients (``client_counts``), then the executor phase (``executor_n`` calls, one client),
    then the payload rows (``payload_rows``: ``(bytes per job, jobs)``, one client each; the
    nodes' processes are those below ``node_pids``), each if it is among ``workloads``.
    Returns the result dict (``failed`` set if a phase failed).

    The run's ``sched_peak_rss_kb`` is the scheduler's peak over the phases before the payload
    rows (which reset it, and report their own peaks per row); none if only payload ran."""
    result = {'system': system, 'phases': [], 'failed': None}
    result.update(extra or {})
    plan = []
    if 'latency' in workloads:
        plan.append(('latency', latency_n, 1))
    if 'throughput' in workloads:
        for n in sizes:
            plan += [('throughput', n, clients) for clients in client_counts]
    if 'executor' in workloads and executor_n:
        plan.append(('executor', executor_n, 1))
    if 'payload' in workloads and scheduler_pid:
        plan += [('payload', size, jobs) for size, jobs in payload_rows]
    for mode, n, clients in plan:
        label = '%s-%d-%dc' % (mode, n, clients)
        try:
            if mode == 'payload':  # n: bytes per job, clients: jobs
                label = 'payload-%d-x%d' % (n, clients)
                record = run_payload_phase(spawn_client, scheduler_pid, node_pids, n,
                                           clients, label)
            else:
                record = run_phase(spawn_client, scheduler_pid, mode, n, clients, workdir,
                                   label)
        except Exception as exc:
            result['failed'] = '%s: %s' % (label, exc)
            break
        result['phases'].append(record)
        if record['errors']:
            result['failed'] = '%s: %d jobs failed or missing, e.g. %s' % (
                label, record['errors'], record['error_samples'][:2])
            break
    if scheduler_pid is None:
        return result
    try:
        memory = memory_kb(scheduler_pid)
        others = [p for p in result['phases'] if p['mode'] != 'payload']
        payload = [p for p in result['phases'] if p['mode'] == 'payload']
        if others:
            # the payload rows reset VmHWM: the first one read it before it did
            hwm = payload[0]['sched_hwm_before_kb'] if payload else memory.get('VmHWM', 0)
            seen = [p['sched_rss_kb_after'] for p in others]
            result['sched_peak_rss_kb'] = max([hwm] + seen)
        result['sched_rss_kb_end'] = memory.get('VmRSS')
    except OSError as exc:
        result['failed'] = result['failed'] or 'scheduler gone: %s' % exc
    return result


def emit(result):
    print('RESULT ' + json.dumps(result), flush=True)


def driver_main(system, start, spawn_client_factory, argv=None, jobcluster=None,
                executor=False, payload=False):
    """Common ``run`` entry of a per-system driver.

    ``start(workdir)`` starts the daemons and returns ``(daemons, scheduler_pid, extra,
    state)``; ``spawn_client_factory(workdir, state)`` returns ``spawn_client(mode, n, name)``.
    ``jobcluster``: the ``(start, spawn_client_factory)`` pair of ``--jobcluster``, where only
    nodes are started (``scheduler_pid`` None: each client program is its own scheduler), the
    system is reported as ``SYSTEM-jobcluster`` and throughput phases have one client only (a
    node serves one JobCluster at a time). ``executor``: the system's clients support
    ``--mode executor`` (not with ``--jobcluster``); otherwise that workload is left out.
    ``payload``: the same for ``--mode payload`` (the payload rows, ``--payload_rows``); the
    daemons after the first (the scheduler) are the nodes whose processes are measured.
    """
    import argparse
    parser = argparse.ArgumentParser()
    parser.add_argument('--sizes', default='2000,20000')
    parser.add_argument('--latency', type=int, default=50)
    parser.add_argument('--workdir', required=True)
    parser.add_argument('--jobcluster', action='store_true')
    parser.add_argument('--workloads', default=','.join(WORKLOADS))
    parser.add_argument('--executor_n', type=int, default=20000)
    parser.add_argument('--payload_rows', default=format_payload_rows(PAYLOAD_ROWS),
                        help='payload rows, BYTESxJOBS,...')
    args = parser.parse_args(argv)
    client_counts = (1, 2)
    workloads = [w for w in args.workloads.split(',') if w]
    if args.jobcluster:
        system += '-jobcluster'
        start, spawn_client_factory = jobcluster
        client_counts = (1,)
    if args.jobcluster or not executor:
        workloads = [w for w in workloads if w != 'executor']
    if args.jobcluster or not payload:
        workloads = [w for w in workloads if w != 'payload']
    sizes = [int(x) for x in args.sizes.split(',') if x]
    os.makedirs(args.workdir, exist_ok=True)
    daemons = []
    result = {'system': system, 'phases': [], 'failed': None}
    try:
        daemons, scheduler_pid, extra, state = start(args.workdir)
        spawn_client = spawn_client_factory(args.workdir, state)
        result = run_suite(system, spawn_client, scheduler_pid, sizes, args.latency,
                           args.workdir, extra, client_counts, workloads, args.executor_n,
                           parse_payload_rows(args.payload_rows),
                           [d.pid for d in daemons if d.pid != scheduler_pid])
    except Exception as exc:
        result['failed'] = 'start: %s' % (exc,)
    finally:
        result['log_problems'] = log_problems(daemons)
        for daemon in reversed(daemons):
            daemon.stop()
        me = os.getpid()
        if os.getsid(0) == me:  # only in a session of its own (run.py starts it so)
            leftovers = session_members(me, exclude=(me,))
            if leftovers:
                kill_pids(leftovers)
                result['leftovers'] = leftovers
    emit(result)
    return 0


def client_main(open_cluster, argv=None, open_executor=None, open_payload=None):
    """Common ``client`` entry. ``open_cluster(options)`` returns an object with
    ``batch(n, deadline) -> (errors, samples, submit_s, max_gap_s)``,
    ``one(i, deadline) -> error or None`` and ``close()``, and optionally ``pids()``: the
    processes of this program whose CPU time counts (sent on the ``READY`` line).
    ``open_executor(options)``, for ``--mode executor``, returns an object with ``batch`` and
    ``close`` whose ``batch`` makes ``n`` trivial calls through an executor's ``submit``
    and waits for them all; that phase is timed as a throughput phase. ``open_payload(options)``,
    for ``--mode payload``, returns an object for ``payload_batch`` (see there)."""
    import argparse
    parser = argparse.ArgumentParser()
    parser.add_argument('--mode', choices=('throughput', 'latency', 'executor', 'payload'),
                        required=True)
    parser.add_argument('--n', type=int, required=True)
    parser.add_argument('--size', type=int, default=0, help='payload: bytes per job')
    parser.add_argument('--options', default='{}', help='JSON: connection options')
    args = parser.parse_args(argv)
    options = json.loads(args.options)
    if args.mode == 'payload':
        if open_payload is None:
            raise SystemExit('this driver has no payload workload')
        return payload_client(open_payload(options), args.n, args.size)
    if args.mode == 'executor':
        if open_executor is None:
            raise SystemExit('this driver has no executor workload')
        session = open_executor(options)
    else:
        session = open_cluster(options)
    try:
        deadline = time.monotonic() + 120
        errors, samples, _, _ = session.batch(WARMUP_JOBS, deadline)
        if errors:
            raise RuntimeError('warm-up jobs failed: %s' % samples)
        pids = getattr(session, 'pids', None)
        print('READY ' + json.dumps({'pids': pids()} if pids else {}), flush=True)
        if sys.stdin.readline().strip() != 'GO':
            return 1
        deadline = time.monotonic() + phase_timeout(args.n)
        out = {'n': args.n}
        if args.mode in ('throughput', 'executor'):
            out['t_start'] = time.monotonic()
            errors, samples, submit_s, max_gap_s = session.batch(args.n, deadline)
            out['t_end'] = time.monotonic()
            out.update(errors=errors, error_samples=samples, submit_s=submit_s,
                       max_gap_s=max_gap_s)
        else:
            latencies, errors, samples = [], 0, []
            for i in range(args.n):
                t0 = time.perf_counter()
                error = session.one(i, deadline)
                latencies.append(time.perf_counter() - t0)
                if error:
                    errors += 1
                    samples.append(error)
            out.update(latencies=latencies, errors=errors, error_samples=samples[:5])
        print('RESULT ' + json.dumps(out), flush=True)
        sys.stdin.readline()  # the driver closes stdin once it has read the scheduler's CPU
    finally:
        session.close()
    return 0


def payload_inputs(size, jobs):
    """``jobs`` distinct inputs of ``size`` random bytes each, and the sha256 of each one
    reversed (the result it should give)."""
    inputs = [os.urandom(size) for _ in range(jobs)]
    return inputs, [hashlib.sha256(data[::-1]).digest() for data in inputs]


def payload_batch(session, inputs, digests, deadline):
    """Submit every input (``session.submit(data)``, in a loop), then collect the results in
    order (``session.result(handle, timeout)``, which raises if the job did not finish),
    checking each (bytes, the input's length, sha256 of the input reversed) and dropping it at
    once, with its handle, so that no more than one result is held here at a time.
    Returns ``(errors, samples, submit_s, max_gap_s)``."""
    t0 = time.monotonic()
    handles = [session.submit(data) for data in inputs]
    submit_s = time.monotonic() - t0
    tally = Tally()
    for i, digest in enumerate(digests):
        handle, handles[i] = handles[i], None
        try:
            result = session.result(handle, max(0.1, deadline - time.monotonic()))
            if type(result) is not bytes or len(result) != len(inputs[i]):
                error = 'job %d: result %s of %s bytes, not bytes of %d' % (
                    i, type(result).__name__, len(result) if hasattr(result, '__len__')
                    else '?', len(inputs[i]))
            elif hashlib.sha256(result).digest() != digest:
                error = 'job %d: result is not the input reversed' % i
            else:
                error = None
        except Exception as exc:
            error = 'job %d: %s: %s' % (i, type(exc).__name__, str(exc)[-300:])
        result = handle = None
        tally.add(error)
    return tally.outcome(submit_s)


class Tally:
    """A batch's results as they are checked: errors (the first five kept as samples) and
    the longest wait between two results."""

    def __init__(self):
        self.errors, self.samples, self.max_gap, self.last = 0, [], 0.0, time.monotonic()

    def add(self, error):
        now = time.monotonic()
        self.max_gap, self.last = max(self.max_gap, now - self.last), now
        if error:
            self.errors += 1
            if len(self.samples) < 5:
                self.samples.append(error)

    def outcome(self, submit_s):
        """``(errors, samples, submit_s, max_gap_s)``."""
        return self.errors, self.samples, submit_s, self.max_gap


def payload_client(session, jobs, size):
    """``client --mode payload``: make the inputs, warm up with ``WARMUP_JOBS`` jobs of
    ``min(size, PAYLOAD_WARMUP_MAX)`` bytes, ``READY``, ``GO``, the row, ``RESULT``."""
    try:
        inputs, digests = payload_inputs(size, jobs)
        warm_inputs, warm_digests = payload_inputs(min(size, PAYLOAD_WARMUP_MAX), WARMUP_JOBS)
        errors, samples, _, _ = payload_batch(session, warm_inputs, warm_digests,
                                              time.monotonic() + 120)
        if errors:
            raise RuntimeError('warm-up jobs failed: %s' % samples)
        del warm_inputs, warm_digests
        print('READY {}', flush=True)
        if sys.stdin.readline().strip() != 'GO':
            return 1
        out = {'n': jobs, 'size': size, 't_start': time.monotonic()}
        errors, samples, submit_s, max_gap_s = payload_batch(
            session, inputs, digests, time.monotonic() + payload_timeout(size, jobs))
        out['t_end'] = time.monotonic()
        out.update(errors=errors, error_samples=samples, submit_s=submit_s,
                   max_gap_s=max_gap_s)
        print('RESULT ' + json.dumps(out), flush=True)
        sys.stdin.readline()  # the driver closes stdin once it has read the peaks
    finally:
        session.close()
    return 0


def wait_nodes(cluster, count, timeout=60):
    """Until ``cluster.status()`` lists ``count`` nodes (dispy's API, both systems): the
    nodes its computation is set up on. Clients wait for them before their warm-up jobs."""
    deadline = time.monotonic() + timeout
    while len(cluster.status().nodes) < count:
        if time.monotonic() > deadline:
            raise RuntimeError('fewer than %d nodes after %d s: %s' % (
                count, timeout, [getattr(n, 'ip_addr', n) for n in cluster.status().nodes]))
        time.sleep(0.05)


class DispyApiSession:
    """``batch``/``one`` over dispy's job API (``job.finish``, ``job.status``, ``job.result``),
    which dispy and dispyscheduler share."""

    def __init__(self, cluster, finished_status, pids=None, close=None):
        self.cluster = cluster
        self.finished = finished_status
        if pids is not None:
            self.pids = pids
        self._close = close or cluster.close

    def _check(self, job, expected, deadline):
        if not job.finish.wait(max(0.0, deadline - time.monotonic())):
            return 'job %s: no result before the deadline (status %s)' % (expected, job.status)
        if job.status != self.finished or job.result != expected:
            return 'job %s: status %s result %r exception %s' % (
                expected, job.status, job.result, str(job.exception)[-300:])
        return None

    def batch(self, n, deadline):
        t0 = time.monotonic()
        jobs = [self.cluster.submit(i) for i in range(n)]
        submit_s = time.monotonic() - t0
        tally = Tally()
        for i, job in enumerate(jobs):
            tally.add(self._check(job, i, deadline))
        return tally.outcome(submit_s)

    def one(self, i, deadline):
        return self._check(self.cluster.submit(i), i, deadline)

    def close(self):
        self._close()
