"""Scale benchmark: one scheduler, 1,000 simulated nodes, 10 clients, up to 100,000 queued jobs.

    .venv/bin/python benchmarks/scale.py            # 1,000 nodes; 1k, 10k, 100k queued
    .venv/bin/python benchmarks/scale.py --quick    # 100 nodes; 1k and 10k queued
    .venv/bin/python benchmarks/scale.py --mixed    # only the mixed run (--plain: the plain)

(from a checkout, after ``make venv``; ``benchmarks/run.py`` runs it too, both runs)

Two runs. The plain one: nodes of one CPU, jobs of one CPU. The mixed one (``--mixed``):
nodes of mixed sizes (``node_simulator.py --mixed``: 1, 2, 4, 8 or 16 CPUs, 4 to 64 GiB, some
with GPUs, some with ``licence=2``), and jobs of one CPU among which 20% of Q ask for more
(``LARGER_JOBS`` in turn: 2 CPUs; 4 CPUs and 8G; a GPU; a licence), each of which some node has.

For each level Q of queued jobs, with a fresh scheduler (``bin/dispyscheduler``, durable state
on, in a temporary directory) and a fresh ``node_simulator.py`` (N node links over loopback,
speaking the real protocol, answering jobs at once but only while their gate is open):

1. the simulator's gate is held; 10 client processes (``SharedJobCluster``, ``compute(n):
   return n``) each create a cluster; once every cluster is set up on every node the
   scheduler's RSS is read (idle baseline);
2. the clients together submit S jobs, then Q + W x M, where S is the node slots (every node
   CPU x ``MAX_DISPATCH_DEPTH``, the most the scheduler keeps in flight: N x 8 on the plain
   run), M the measurement window and W the windows (warm-up ones too): the nodes hold the
   first S (fewer if they cannot: then as many more are submitted as the queue lacks of
   Q + W x M), the rest is queued; the scheduler's RSS is read again. The larger jobs of the
   mixed run come with the Q + W x M, when the nodes are full, so they are all queued;
3. the gate opens; once M jobs have completed (their results saved by the scheduler and
   acknowledged to their nodes, counted by the simulator) and the slots they freed refilled,
   the scheduler's CPU time (utime + stime, /proc/PID/stat) is read again. The queue went
   from about Q + M to about Q meanwhile. The mixed run first runs one warm-up window, not
   counted (the clusters' dispatch depth changes, nodes start being kept for larger jobs), and
   ends a window once the nodes have received no job for ``MIXED_QUIET`` seconds (a node
   kept free for a larger job takes no other until it is empty, so a completion is not always
   refilled at once).

Printed: ``SCALE`` lines (the mixed run's begin ``SCALE mixed``), one per level and a summary
(flatness of the CPU per completed job across levels, memory per queued job at the largest
level, each against its target; for the mixed run also the flatness per event, completion or
dispatch). Every wait has a timeout; every process started here is stopped by its PID.
Loopback only.
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
BIN = os.path.join(REPO, 'bin')
sys.path.insert(0, HERE)

import bench_common as bc  # noqa: E402

MIXED_CPUS = (1, 2, 4, 8, 16)  # node_simulator.MIXED_CPUS: the CPUs of --mixed nodes in turn
MAX_DISPATCH_DEPTH = 8  # dispyscheduler.constants.MAX_DISPATCH_DEPTH (slots per node CPU)
FLATNESS_TARGET = 1.5
MEMORY_TARGET = 2048  # bytes of scheduler memory per queued trivial job
CLIENT_MAX_SECONDS = 1200  # a client exits by itself after this long, whatever happens
SIMULATOR_MAX_SECONDS = 1200

LARGER_JOBS = ({'cpus': 2}, {'cpus': 4, 'memory': '8G'}, {'gpus': 1}, {'licence': 1})
"""What the larger jobs of a mixed run ask for (``dispy_job_resources``), in turn; each fits
some node of ``node_simulator.py --mixed`` (``node_size``). The other jobs need one CPU."""
LARGER_SHARE = 0.2
"""Larger jobs in a mixed run: this share of Q, spread evenly over the jobs submitted once
the nodes are full, so that the queue holds as many of them at every level and none is in
flight when the windows begin. Not a share of every job submitted: while jobs of one CPU keep
the nodes full, a larger job runs only on a node kept free for it (``Node.reserved``) once
the jobs that node has end, and at most one node is kept for each cluster and need at a time,
so the windows dispatch hardly any; a share of everything submitted (S + Q + W x M) would
make the queue at the level of 1k hold 16k of them."""
TOP_UP_ROUNDS = 8
"""Submissions at most to bring the queue to Q + W x M (see ``run_level``)."""
MIXED_QUIET = 0.5  # seconds without a dispatch that end a window of a mixed run


def compute(n):
    return n


# ---------------------------------------------------------------------------------- client

def client_main(argv):
    """One client process: create the cluster, READY; on ``GO [N [K]]`` submit --count (or N
    more) jobs, K of them (spread evenly) asking for ``LARGER_JOBS`` in turn, SUBMITTED; then
    answer STATUS until QUIT (or end of input)."""
    parser = argparse.ArgumentParser(prog='scale.py client')
    parser.add_argument('--port', type=int, required=True)
    parser.add_argument('--count', type=int, required=True)
    args = parser.parse_args(argv)
    watchdog = threading.Timer(CLIENT_MAX_SECONDS, os._exit, (3,))
    watchdog.daemon = True
    watchdog.start()
    sys.path.insert(0, REPO)
    from dispyscheduler import DispyJob, SharedJobCluster
    cluster = SharedJobCluster(compute, scheduler_node='127.0.0.1', scheduler_port=args.port,
                               secret=bc.CLUSTER_SECRET, recover_file=False)
    print('READY', flush=True)
    jobs = []
    for line in sys.stdin:
        words = line.split()
        command = words[0] if words else ''
        if command == 'GO':
            count = int(words[1]) if len(words) > 1 else args.count
            larger = min(count, int(words[2])) if len(words) > 2 else 0
            start = time.monotonic()
            first = len(jobs)
            if larger:
                for i in range(count):
                    if (i + 1) * larger // count > i * larger // count:  # K spread over count
                        request = LARGER_JOBS[i * larger // count % len(LARGER_JOBS)]
                        jobs.append(cluster.submit(first + i, dispy_job_resources=request))
                    else:
                        jobs.append(cluster.submit(first + i))
            else:
                jobs.extend(cluster.submit(i) for i in range(first, first + count))
            print('SUBMITTED %d %.3f' % (count, time.monotonic() - start), flush=True)
        elif command == 'STATUS':
            finished = sum(1 for job in jobs if job.status == DispyJob.Finished)
            print('STATUS finished=%d' % finished, flush=True)
        elif command == 'QUIT':
            break
    os._exit(0)  # no close(): the benchmark ends the scheduler itself


# ---------------------------------------------------------------------------------- driver

class Failure(Exception):
    pass


def wait_until(predicate, timeout, what, interval=0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise Failure('timed out after %ds waiting for %s' % (timeout, what))
        time.sleep(interval)


def fetch_status(port):
    with urllib.request.urlopen('http://127.0.0.1:%d/status' % port, timeout=30) as reply:
        return json.loads(reply.read())


def cpu_seconds(pid):
    return bc.cpu_seconds(pid)


def rss_kb(pid):
    return bc.memory_kb(pid)['VmRSS']


class Child(bc.ClientProcess):
    """A process driven over its stdin and stdout (the simulator, a client)."""

    def send(self, line):
        self.process.stdin.write(line + '\n')
        self.process.stdin.flush()

    def ask(self, command, prefix, timeout):
        self.send(command)
        return self.expect(prefix, time.monotonic() + timeout)

    def stop_with(self, command, timeout=10):
        """Tell it to end (``command``); stopped by its PID if it has not within ``timeout``."""
        try:
            self.send(command)
        except OSError:
            pass
        self.finish(timeout=timeout)


class Profiler:
    """``py-spy record`` of the scheduler (raw format, without pausing it) until ``stop``."""

    def __init__(self, pid, path):
        exe = os.path.join(os.path.dirname(sys.executable), 'py-spy')
        if not os.path.exists(exe):
            exe = shutil.which('py-spy') or 'py-spy'
        self.path = path
        self.process = subprocess.Popen(
            [exe, 'record', '--pid', str(pid), '--rate', '100', '--nonblocking', '--format',
             'raw', '-o', path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=bc._child_setup)

    def stop(self):
        """Stop it (SIGINT makes py-spy write its file); the top functions, by the share of
        samples they are on the stack."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        try:
            with open(self.path) as handle:
                lines = handle.read().splitlines()
        except OSError:
            return []
        total, inclusive = 0, {}
        for line in lines:
            stack, _, count = line.rpartition(' ')
            if not count.isdigit():
                continue
            total += int(count)
            for name in {frame.split(' (')[0] for frame in stack.split(';')}:
                inclusive[name] = inclusive.get(name, 0) + int(count)
        ranked = sorted(inclusive.items(), key=lambda item: -item[1])
        return ['%s=%.0f%%' % (name, 100.0 * count / total) for name, count in ranked
                if not name.startswith(('_handle_and_close', 'Link.run_reader',
                                        'ClientSide.serve_client', 'NodeSide.serve_node'))][:8]


def counters(line):
    return {key: int(value) for key, value in (item.split('=') for item in line.split())}


def settled(read, quiet, timeout, what, interval=0.05):
    """Wait until ``read()`` has not changed for ``quiet`` seconds; its last value."""
    deadline = time.monotonic() + timeout
    last, since = read(), time.monotonic()
    while True:
        time.sleep(interval)
        value, now = read(), time.monotonic()
        if value != last:
            last, since = value, now
        elif now - since >= quiet:
            return value
        if now > deadline:
            raise Failure('timed out after %ds waiting for %s' % (timeout, what))


def measure_window(pid, simulator, window, mixed=False):
    """Open the simulator's gate for exactly ``window`` jobs; the scheduler's CPU seconds
    for them: dispatched earlier, now completed (result saved, sent to the client, acknowledged
    to the node and by the client) and each replaced on its node by a queued job.

    With ``mixed`` nodes and jobs a completion is not always replaced by one job (a node kept
    free for a larger job takes none until it is empty, then that one job; a larger job that
    ends frees room for several): the window ends once the nodes have received no job for
    ``MIXED_QUIET`` seconds (that idle time is in the CPU seconds, the same at every level)."""
    before = counters(simulator.ask('count', 'COUNT', 10))
    if before['budget'] != 0:
        raise Failure('the simulator is not holding jobs: %s' % before)
    cpu0 = cpu_seconds(pid)
    wall0 = time.monotonic()
    simulator.ask('go %d' % window, 'OK go', 30)

    def counted(check):
        now = counters(simulator.ask('count', 'COUNT', 10))
        if now['lost']:
            raise Failure('%d node links were closed by the scheduler' % now['lost'])
        return now if check(now) else None
    after = wait_until(lambda: counted(lambda c: c['acked'] >= before['acked'] + window),
                       60 + window / 100, '%d jobs to complete' % window, 0.02)
    wall1 = time.monotonic()
    if mixed:
        received, larger = settled(lambda: tuple(counted(lambda c: True)[key] for key in (
            'received', 'larger')), MIXED_QUIET, 60, 'the nodes to stop receiving jobs')
    else:
        # the slots freed are refilled from the queue (the nodes hold those jobs), and the
        # clients' acknowledgements of the results (sent within 50 ms) are processed
        end = wait_until(
            lambda: counted(lambda c: c['received'] >= before['received'] + window), 30,
            'the freed slots to be refilled', 0.02)
        received, larger = end['received'], end['larger']
    time.sleep(0.3)
    cpu1 = cpu_seconds(pid)
    jobs = after['acked'] - before['acked']
    dispatched = received - before['received']
    return {'jobs': jobs, 'wall_s': wall1 - wall0, 'cpu_s': cpu1 - cpu0,
            'cpu_us_per_job': (cpu1 - cpu0) * 1e6 / jobs, 'dispatched': dispatched,
            'larger_dispatched': larger - before['larger'],
            'cpu_us_per_event': (cpu1 - cpu0) * 1e6 / (jobs + dispatched)}


def split(count, parts):
    """``count`` in ``parts`` shares as even as can be, the larger first."""
    return [count // parts + (1 if i < count % parts else 0) for i in range(parts)]


def queued_of(status):
    return sum(c['queued'] for c in status['clusters'])


def submit_round(procs, count, submitted, http_port, simulator, larger=0):
    """The clients together submit ``count`` more jobs (``larger`` of them asking for
    ``LARGER_JOBS``), after ``submitted``; once the scheduler holds them all and the nodes
    have the ones it sent, how many were submitted in all."""
    total = submitted + count
    deadline = time.monotonic() + 60 + count / 500
    for proc, share, share_larger in zip(procs, split(count, len(procs)),
                                         split(larger, len(procs))):
        proc.send('GO %d %d' % (share, share_larger))
    for proc in procs:
        proc.expect('SUBMITTED', deadline)

    def all_in():
        status = fetch_status(http_port)
        held = sum(c['queued'] + c['running'] for c in status['clusters'])
        return status if held == total else None
    status = wait_until(all_in, max(10, deadline - time.monotonic()),
                        'the scheduler to hold all %d jobs' % total, 0.5)
    in_flight = sum(c['running'] for c in status['clusters'])
    wait_until(lambda: counters(simulator.ask('count', 'COUNT', 10))['received']
               >= in_flight, 60, 'the nodes to receive the %d jobs sent' % in_flight)
    time.sleep(0.2)  # their acknowledgements
    return total


def run_level(queued, options, workdir, mixed=False):
    """One level, with its own scheduler, simulator and clients; returns its record."""
    nodes, clients, window = options.nodes, options.clients, options.window
    port, client_port, node_port, http_port = bc.free_ports(4, ('127.0.0.1',))
    level_dir = os.path.join(workdir, '%sq%d' % ('mixed-' if mixed else '', queued))
    os.makedirs(level_dir)
    warmup = options.warmup if options.warmup is not None else (1 if mixed else 0)
    target = queued + (warmup + options.repeat) * window  # queued when the first window opens
    record = {'queued': queued, 'nodes': nodes, 'clients': clients, 'window': window}
    scheduler = simulator = profiler = None
    procs = []
    windows = []
    try:
        started = time.monotonic()
        scheduler = bc.Daemon('scheduler', [
            sys.executable, os.path.join(BIN, 'dispyscheduler'), '-i', '127.0.0.1',
            '-p', str(port), '--scheduler_port', str(client_port), '--node_port', str(node_port),
            '--node_secret', bc.NODE_SECRET, '--cluster_secret', bc.CLUSTER_SECRET,
            '--dest_path_prefix', os.path.join(level_dir, 'scheduler'),
            '--pulse_interval', '10', '--httpd', '127.0.0.1:%d' % http_port,
            '--max_unauthenticated', '4000', '--max_unauthenticated_per_source', '4000'],
            level_dir)
        scheduler.wait_log('serving nodes', timeout=30)
        pid = scheduler.pid

        simulator = Child([sys.executable, os.path.join(HERE, 'node_simulator.py'),
                           '--port', str(port), '--secret', bc.NODE_SECRET,
                           '--nodes', str(nodes), '--max_seconds', str(SIMULATOR_MAX_SECONDS)]
                          + (['--mixed'] if mixed else []), level_dir, 'simulator')
        simulator.expect('READY', time.monotonic() + 60 + nodes / 10)
        wait_until(lambda: len(fetch_status(http_port)['nodes']) == nodes, 60,
                   '%d nodes in /status' % nodes, 0.5)
        pool = fetch_status(http_port)['resources']
        # S: the most the scheduler keeps in flight, MAX_DISPATCH_DEPTH jobs of one CPU on
        # each CPU (N x 8 with one-CPU nodes)
        slots = pool['cpus'] * MAX_DISPATCH_DEPTH
        record.update(pool_cpus=pool['cpus'], pool_gpus=pool.get('gpus', 0),
                      pool_licence=pool.get('licence', 0), slots=slots,
                      nodes_up_s=time.monotonic() - started)
        simulator.ask('hold', 'OK hold', 10)

        for index in range(clients):
            procs.append(Child([sys.executable, os.path.abspath(__file__), 'client',
                                '--port', str(client_port), '--count', '0'],
                               level_dir, 'client-%d' % index))
        deadline = time.monotonic() + 120
        for proc in procs:
            proc.expect('READY', deadline)
        wait_until(lambda: [c['nodes'] for c in fetch_status(http_port)['clusters']]
                   == [nodes] * clients, 120, 'every cluster set up on every node', 0.5)
        time.sleep(1.0)
        cpu_idle = cpu_seconds(pid)
        time.sleep(2.0)
        rss_idle = rss_kb(pid)
        record['idle_cpu_pct'] = (cpu_seconds(pid) - cpu_idle) * 100 / 2.0
        cpu_idle = cpu_seconds(pid)

        # submit S jobs of one CPU, which fill the nodes, then Q + W x M (the larger jobs of a
        # mixed run among them: queued, as many at every level), fewer by what the first left
        # queued, then as many as the queue still lacks of that; the nodes hold what they get
        profiler = Profiler(pid, os.path.join(level_dir, 'submit.raw')) if options.profile \
            else None
        submit_start = time.monotonic()
        larger = round(LARGER_SHARE * queued) if mixed else 0
        record['larger_submitted'] = larger
        total = submit_round(procs, slots, 0, http_port, simulator)
        rounds = 1
        count = target - queued_of(fetch_status(http_port))
        while count > 0 and rounds < TOP_UP_ROUNDS:
            total = submit_round(procs, count, total, http_port, simulator,
                                 larger if rounds == 1 else 0)
            rounds += 1
            count = target - queued_of(fetch_status(http_port))
        status = fetch_status(http_port)
        in_flight = sum(c['running'] for c in status['clusters'])
        record['larger_in_flight'] = counters(simulator.ask('count', 'COUNT', 10))['larger']
        record['submit_s'] = time.monotonic() - submit_start
        cpu_submitted = cpu_seconds(pid)
        if profiler is not None:
            record['profile_submit'] = profiler.stop()
        time.sleep(2.0)  # let the last commits and acknowledgements settle
        cpu_settled = cpu_seconds(pid)
        time.sleep(1.0)
        record['settled_cpu_pct'] = (cpu_seconds(pid) - cpu_settled) * 100
        status = fetch_status(http_port)
        queued_start = queued_of(status)
        rss_loaded = rss_kb(pid)
        record.update(
            submitted=total, submit_rounds=rounds, in_flight=in_flight,
            queued_at_start=queued_start,
            reserved_nodes=sum(1 for n in status['nodes'] if n.get('reserved_for')),
            sched_cpu_us_per_submit=(cpu_submitted - cpu_idle) * 1e6 / total,
            rss_idle_mb=rss_idle / 1024, rss_loaded_mb=rss_loaded / 1024,
            bytes_per_job_held=(rss_loaded - rss_idle) * 1024 / total)

        # the windows: each opens the gate for exactly M jobs, which complete; the queue
        # refills the slots they free, and the nodes hold those again
        profiler = Profiler(pid, os.path.join(level_dir, 'windows.raw')) if options.profile \
            else None
        queued_before = []
        for index in range(warmup + options.repeat):
            if index:  # (the first: queued_at_start) between windows, outside their CPU time
                queued_before.append(queued_of(fetch_status(http_port)))
                time.sleep(0.2)
            else:
                queued_before.append(queued_start)
            windows.append(measure_window(pid, simulator, window, mixed))
        if profiler is not None:
            record['profile_windows'] = profiler.stop()
        warmups, windows = windows[:warmup], windows[warmup:]
        costs = sorted(w['cpu_us_per_job'] for w in windows)
        per_event = sorted(w['cpu_us_per_event'] for w in windows)
        status = fetch_status(http_port)
        record.update(
            sched_cpu_us_per_job=costs[len(costs) // 2],
            cpu_us_per_job_all=[round(w['cpu_us_per_job'], 2) for w in windows],
            sched_cpu_us_per_event=per_event[len(per_event) // 2],
            cpu_us_per_job_warmup=[round(w['cpu_us_per_job'], 2) for w in warmups],
            dispatched_warmup=[w['dispatched'] for w in warmups],
            larger_dispatched_warmup=[w['larger_dispatched'] for w in warmups],
            warmup_jobs=sum(w['jobs'] for w in warmups),
            queued_per_window=queued_before[warmup:],
            dispatched_per_window=[w['dispatched'] for w in windows],
            larger_dispatched_per_window=[w['larger_dispatched'] for w in windows],
            window_jobs=sum(w['jobs'] for w in windows),
            jobs_per_s=sum(w['jobs'] for w in windows) / sum(w['wall_s'] for w in windows),
            queued_at_end=queued_of(status),
            in_flight_at_end=sum(c['running'] for c in status['clusters']),
            reserved_nodes_at_end=sum(1 for n in status['nodes'] if n.get('reserved_for')),
            rss_end_mb=rss_kb(pid) / 1024,
            peak_rss_mb=bc.memory_kb(pid)['VmHWM'] / 1024)
        expected = sum(w['jobs'] for w in windows)

        def results_in():
            got = sum(counters(proc.ask('STATUS', 'STATUS', 30))['finished'] for proc in procs)
            return got if got >= expected else None
        finished = wait_until(results_in, 30, 'the clients to receive %d results' % expected,
                              0.5)
        record['client_results'] = finished
        record['level_s'] = time.monotonic() - started
    except (Failure, RuntimeError, OSError) as exc:
        record['failed'] = str(exc)
    finally:
        if profiler is not None:
            profiler.stop()
        for proc in procs:
            proc.stop_with('QUIT')
        if scheduler is not None:
            scheduler.stop(timeout=30)
        if simulator is not None:
            simulator.stop_with('quit')
        if scheduler is not None:
            record['log_problems'] = log_problems(scheduler.log_path)
    return record


def log_problems(path):
    """Scheduler log lines that look like trouble, up to its shutdown (stopping it closes
    every node link and logs each node as lost), and tracebacks anywhere."""
    with open(path, errors='replace') as handle:
        lines = handle.read().splitlines()
    stop = next((i for i, line in enumerate(lines) if line.endswith(' INFO stopping')),
                len(lines))
    pattern = re.compile(r'Traceback|ERROR|Error|WARNING|exception', re.I)
    found = [line for line in lines[:stop] if pattern.search(line)]
    found += [line for line in lines[stop:] if 'Traceback' in line or 'Error' in line]
    return {'count': len(found), 'first': found[:5]} if found else None


def fmt(value):
    if isinstance(value, float):
        return '%.4g' % value
    if isinstance(value, list):
        return ','.join(fmt(item) for item in value)
    return str(value)


PLAIN_SHOWN = ['queued', 'submitted', 'queued_at_start', 'queued_at_end', 'in_flight',
               'window_jobs', 'sched_cpu_us_per_job', 'cpu_us_per_job_all', 'jobs_per_s',
               'sched_cpu_us_per_submit', 'submit_s', 'idle_cpu_pct', 'rss_idle_mb',
               'rss_loaded_mb', 'bytes_per_job_held', 'peak_rss_mb', 'level_s']
MIXED_SHOWN = ['queued', 'pool_cpus', 'pool_gpus', 'pool_licence', 'slots', 'submitted',
               'submit_rounds', 'queued_at_start', 'queued_per_window', 'queued_at_end',
               'in_flight', 'in_flight_at_end', 'larger_submitted', 'larger_in_flight',
               'reserved_nodes', 'reserved_nodes_at_end', 'settled_cpu_pct', 'warmup_jobs',
               'cpu_us_per_job_warmup', 'dispatched_warmup', 'larger_dispatched_warmup',
               'window_jobs', 'dispatched_per_window',
               'larger_dispatched_per_window',
               'sched_cpu_us_per_job', 'cpu_us_per_job_all', 'sched_cpu_us_per_event',
               'jobs_per_s', 'sched_cpu_us_per_submit', 'submit_s', 'idle_cpu_pct',
               'rss_idle_mb', 'rss_loaded_mb', 'bytes_per_job_held', 'peak_rss_mb', 'level_s']


def run_series(options, levels, workdir, mixed):
    """Every level, plain (one-CPU nodes and jobs) or mixed; prints its SCALE lines (those of
    a mixed run begin ``SCALE mixed``). True if every level ran."""
    tag = 'SCALE mixed' if mixed else 'SCALE'
    if mixed:
        print('%s setup nodes=%d node_cpus=%s clients=%d %s levels=%s window=%d '
              'repeat=%d python=%s host_cpus=%d' % (
                  tag, options.nodes, ','.join(map(str, MIXED_CPUS)), options.clients,
                  mix_text(), ','.join(map(str, levels)), options.window, options.repeat,
                  sys.version.split()[0], os.cpu_count()), flush=True)
    else:
        print('%s setup nodes=%d cpus_per_node=1 clients=%d levels=%s window=%d repeat=%d '
              'python=%s host_cpus=%d' % (tag, options.nodes, options.clients,
                                          ','.join(map(str, levels)), options.window,
                                          options.repeat, sys.version.split()[0],
                                          os.cpu_count()), flush=True)
    records = []
    for queued in levels:
        record = run_level(queued, options, workdir, mixed)
        record['mixed'] = mixed
        records.append(record)
        shown = MIXED_SHOWN if mixed else PLAIN_SHOWN
        print(tag + ' ' + ' '.join('%s=%s' % (key, fmt(record[key]))
                                   for key in shown if key in record), flush=True)
        for key in ('profile_submit', 'profile_windows'):
            if record.get(key):
                print('%s queued=%d %s %s' % (tag, queued, key, ' '.join(record[key])),
                      flush=True)
        problems = record.get('log_problems')
        if problems:
            sys.stderr.write('scheduler log at %d queued%s: %d lines look like trouble, '
                             'e.g.\n  %s\n' % (queued, ' (mixed)' if mixed else '',
                                                 problems['count'],
                                                 '\n  '.join(problems['first'])))
        if record.get('failed'):
            print('%s queued=%d status=failed reason=%r' % (tag, queued, record['failed']),
                  flush=True)
            break
    failed = [r for r in records if r.get('failed')] or len(records) < len(levels)
    if not failed:
        low, high = records[0], records[-1]
        flatness = high['sched_cpu_us_per_job'] / low['sched_cpu_us_per_job']
        print('%s flatness=%.2f (cpu per job at %d queued / at %d queued) target<=%.1f '
              'target_met=%s' % (tag, flatness, high['queued'], low['queued'],
                                 FLATNESS_TARGET, 'yes' if flatness <= FLATNESS_TARGET
                                 else 'no'), flush=True)
        if mixed:
            ratio = high['sched_cpu_us_per_event'] / low['sched_cpu_us_per_event']
            print('%s flatness_per_event=%.2f (cpu per completion or dispatch, at %d queued / '
                  'at %d queued) target<=%.1f target_met=%s' % (
                      tag, ratio, high['queued'], low['queued'], FLATNESS_TARGET,
                      'yes' if ratio <= FLATNESS_TARGET else 'no'), flush=True)
        memory = high['bytes_per_job_held']
        print('%s memory_per_queued_job_bytes=%d (at %d queued, %d held) target<=%d '
              'memory_target_met=%s' % (tag, memory, high['queued'], high['submitted'],
                                        MEMORY_TARGET,
                                        'yes' if memory <= MEMORY_TARGET else 'no'),
              flush=True)
    return records, not failed


def mix_text():
    """``larger_share=0.2 larger=cpus=2|cpus=4+memory=8G|gpus=1|licence=1``, for a SCALE
    line."""
    return 'larger_share=%g larger=%s' % (LARGER_SHARE, '|'.join(
        '+'.join('%s=%s' % item for item in request.items()) for request in LARGER_JOBS))


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ['client']:
        return client_main(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true',
                        help='100 nodes, levels 1k and 10k, a window of 2k jobs')
    which = parser.add_mutually_exclusive_group()
    which.add_argument('--plain', action='store_true',
                       help='only the plain run (one-CPU nodes, one-CPU jobs)')
    which.add_argument('--mixed', action='store_true',
                       help='only the mixed run (nodes of mixed sizes, jobs of mixed needs)')
    parser.add_argument('--nodes', type=int)
    parser.add_argument('--clients', type=int, default=10)
    parser.add_argument('--levels', help='queued jobs per level, e.g. 1000,10000,100000')
    parser.add_argument('--window', type=int, help='jobs completed in each measurement')
    parser.add_argument('--repeat', type=int, default=3,
                        help='measurements per level (the median is reported)')
    parser.add_argument('--warmup', type=int,
                        help='windows run before the measured ones, not counted (default: 1 '
                             'on the mixed run, 0 on the plain one)')
    parser.add_argument('--profile', action='store_true',
                        help='py-spy the scheduler during the submissions and the windows '
                             '(its top functions are printed; figures are then a bit higher)')
    parser.add_argument('--json', help='write every level\'s record to this file')
    parser.add_argument('--keep', action='store_true', help='keep the work directory')
    options = parser.parse_args(argv)
    quick = dict(nodes=100, levels='1000,10000', window=2000)
    full = dict(nodes=1000, levels='1000,10000,100000', window=10000)
    for key, value in (quick if options.quick else full).items():
        if getattr(options, key) is None:
            setattr(options, key, value)
    levels = [int(x) for x in options.levels.split(',') if x]
    series = [False] if options.plain else [True] if options.mixed else [False, True]
    workdir = tempfile.mkdtemp(prefix='dispyscheduler-scale-')
    started = time.monotonic()
    records, ok = [], True
    for mixed in series:
        done, fine = run_series(options, levels, workdir, mixed)
        records.extend(done)
        ok = ok and fine
    print('SCALE elapsed_s=%d status=%s' % (time.monotonic() - started,
                                            'ok' if ok else 'failed'), flush=True)
    if options.json:
        with open(options.json, 'w') as handle:
            json.dump(records, handle, indent=1)
    if options.keep or not ok:
        print('SCALE workdir=%s' % workdir, flush=True)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


if __name__ == '__main__':
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    sys.exit(main())
