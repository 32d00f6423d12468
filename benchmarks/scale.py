"""Scale benchmark: one scheduler, 1,000 simulated nodes, 10 clients, up to 100,000 queued jobs.

    .venv/bin/python benchmarks/scale.py            # 1,000 nodes; 1k, 10k, 100k queued
    .venv/bin/python benchmarks/scale.py --quick    # 100 nodes; 1k and 10k queued

(from a checkout, after ``make venv``; ``benchmarks/run.py`` runs it too)

For each level Q of queued jobs, with a fresh scheduler (``bin/dispyscheduler``, durable state
on, in a temporary directory) and a fresh ``node_simulator.py`` (N node links over loopback,
speaking the real protocol, answering jobs at once but only while their gate is open):

1. the simulator's gate is held; 10 client processes (``SharedJobCluster``, ``compute(n):
   return n``) each create a cluster; once every cluster is set up on every node the
   scheduler's RSS is read (idle baseline);
2. the clients together submit Q + M + S jobs, where M is the measurement window and S the
   node slots (N x 1 CPU x ``MAX_DISPATCH_DEPTH``, the most the scheduler keeps in flight):
   the nodes hold what they got, the rest is queued; the scheduler's RSS is read again;
3. the gate opens; once M jobs have completed (their results saved by the scheduler and
   acknowledged to their nodes, counted by the simulator) the scheduler's CPU time (utime +
   stime, /proc/PID/stat) is read again. The queue went from about Q + M to about Q meanwhile.

Printed: ``SCALE`` lines, one per level and a summary (flatness of the CPU per job across
levels, memory per queued job at the largest level, each against its target). Every wait has
a timeout; every process started here is stopped by its PID. Loopback only.
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

MAX_DISPATCH_DEPTH = 8  # dispyscheduler.constants.MAX_DISPATCH_DEPTH (slots per node CPU)
FLATNESS_TARGET = 1.5
MEMORY_TARGET = 2048  # bytes of scheduler memory per queued trivial job
CLIENT_MAX_SECONDS = 1200  # a client exits by itself after this long, whatever happens
SIMULATOR_MAX_SECONDS = 1200


def compute(n):
    return n


# ---------------------------------------------------------------------------------- client

def client_main(argv):
    """One client process: create the cluster, READY; on GO submit --count jobs, SUBMITTED;
    then answer STATUS until QUIT (or end of input)."""
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
        command = line.strip()
        if command == 'GO':
            start = time.monotonic()
            jobs = [cluster.submit(i) for i in range(args.count)]
            print('SUBMITTED %d %.3f' % (len(jobs), time.monotonic() - start), flush=True)
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


def measure_window(pid, simulator, window):
    """Open the simulator's gate for exactly ``window`` jobs; the scheduler's CPU seconds
    for them: dispatched earlier, now completed (result saved, sent to the client, acknowledged
    to the node and by the client) and each replaced on its node by a queued job."""
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
    # the slots freed are refilled from the queue (the nodes hold those jobs), and the
    # clients' acknowledgements of the results (sent within 50 ms) are processed
    wait_until(lambda: counted(lambda c: c['received'] >= before['received'] + window), 30,
               'the freed slots to be refilled', 0.02)
    time.sleep(0.3)
    cpu1 = cpu_seconds(pid)
    jobs = after['acked'] - before['acked']
    return {'jobs': jobs, 'wall_s': wall1 - wall0, 'cpu_s': cpu1 - cpu0,
            'cpu_us_per_job': (cpu1 - cpu0) * 1e6 / jobs}


def run_level(queued, options, workdir):
    """One level, with its own scheduler, simulator and clients; returns its record."""
    nodes, clients, window = options.nodes, options.clients, options.window
    slots = nodes * MAX_DISPATCH_DEPTH
    total = queued + options.repeat * window + slots
    per_client = [total // clients + (1 if i < total % clients else 0) for i in range(clients)]
    port, client_port, node_port, http_port = bc.free_ports(4, ('127.0.0.1',))
    level_dir = os.path.join(workdir, 'q%d' % queued)
    os.makedirs(level_dir)
    record = {'queued': queued, 'nodes': nodes, 'clients': clients, 'window': window,
              'submitted': total}
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
                           '--nodes', str(nodes), '--max_seconds', str(SIMULATOR_MAX_SECONDS)],
                          level_dir, 'simulator')
        simulator.expect('READY', time.monotonic() + 60 + nodes / 10)
        wait_until(lambda: len(fetch_status(http_port)['nodes']) == nodes, 60,
                   '%d nodes in /status' % nodes, 0.5)
        record['nodes_up_s'] = time.monotonic() - started
        simulator.ask('hold', 'OK hold', 10)

        for index, count in enumerate(per_client):
            procs.append(Child([sys.executable, os.path.abspath(__file__), 'client',
                                '--port', str(client_port), '--count', str(count)],
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

        # submit Q + M + S; the nodes hold what they get
        profiler = Profiler(pid, os.path.join(level_dir, 'submit.raw')) if options.profile \
            else None
        submit_start = time.monotonic()
        for proc in procs:
            proc.send('GO')
        submit_timeout = 60 + total / 500
        deadline = submit_start + submit_timeout
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
        record['submit_s'] = time.monotonic() - submit_start
        cpu_submitted = cpu_seconds(pid)
        if profiler is not None:
            record['profile_submit'] = profiler.stop()
        time.sleep(2.0)  # let the last commits and acknowledgements settle
        status = fetch_status(http_port)
        queued_start = sum(c['queued'] for c in status['clusters'])
        rss_loaded = rss_kb(pid)
        record.update(
            in_flight=in_flight, queued_at_start=queued_start,
            sched_cpu_us_per_submit=(cpu_submitted - cpu_idle) * 1e6 / total,
            rss_idle_mb=rss_idle / 1024, rss_loaded_mb=rss_loaded / 1024,
            bytes_per_job_held=(rss_loaded - rss_idle) * 1024 / total)

        # the windows: each opens the gate for exactly M jobs, which complete; the queue
        # refills the slots they free, and the nodes hold those again
        profiler = Profiler(pid, os.path.join(level_dir, 'windows.raw')) if options.profile \
            else None
        for _ in range(options.repeat):
            windows.append(measure_window(pid, simulator, window))
        if profiler is not None:
            record['profile_windows'] = profiler.stop()
        costs = sorted(w['cpu_us_per_job'] for w in windows)
        status = fetch_status(http_port)
        record.update(
            sched_cpu_us_per_job=costs[len(costs) // 2],
            cpu_us_per_job_all=[round(w['cpu_us_per_job'], 2) for w in windows],
            window_jobs=sum(w['jobs'] for w in windows),
            jobs_per_s=sum(w['jobs'] for w in windows) / sum(w['wall_s'] for w in windows),
            queued_at_end=sum(c['queued'] for c in status['clusters']),
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


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ['client']:
        return client_main(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--quick', action='store_true',
                        help='100 nodes, levels 1k and 10k, a window of 2k jobs')
    parser.add_argument('--nodes', type=int)
    parser.add_argument('--clients', type=int, default=10)
    parser.add_argument('--levels', help='queued jobs per level, e.g. 1000,10000,100000')
    parser.add_argument('--window', type=int, help='jobs completed in each measurement')
    parser.add_argument('--repeat', type=int, default=3,
                        help='measurements per level (the median is reported)')
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
    workdir = tempfile.mkdtemp(prefix='dispyscheduler-scale-')
    started = time.monotonic()
    print('SCALE setup nodes=%d cpus_per_node=1 clients=%d levels=%s window=%d repeat=%d '
          'python=%s host_cpus=%d' % (options.nodes, options.clients,
                                      ','.join(map(str, levels)), options.window,
                                      options.repeat, sys.version.split()[0], os.cpu_count()),
          flush=True)
    records = []
    for queued in levels:
        record = run_level(queued, options, workdir)
        records.append(record)
        shown = ['queued', 'submitted', 'queued_at_start', 'queued_at_end', 'in_flight',
                 'window_jobs', 'sched_cpu_us_per_job', 'cpu_us_per_job_all', 'jobs_per_s',
                 'sched_cpu_us_per_submit', 'submit_s', 'idle_cpu_pct', 'rss_idle_mb',
                 'rss_loaded_mb', 'bytes_per_job_held', 'peak_rss_mb', 'level_s']
        print('SCALE ' + ' '.join('%s=%s' % (key, fmt(record[key]))
                                  for key in shown if key in record), flush=True)
        for key in ('profile_submit', 'profile_windows'):
            if record.get(key):
                print('SCALE queued=%d %s %s' % (queued, key, ' '.join(record[key])), flush=True)
        problems = record.get('log_problems')
        if problems:
            sys.stderr.write('scheduler log at %d queued: %d lines look like trouble, e.g.\n  %s\n'
                             % (queued, problems['count'], '\n  '.join(problems['first'])))
        if record.get('failed'):
            print('SCALE queued=%d status=failed reason=%r' % (queued, record['failed']),
                  flush=True)
            break
    failed = [r for r in records if r.get('failed')] or len(records) < len(levels)
    if not failed:
        low, high = records[0], records[-1]
        flatness = high['sched_cpu_us_per_job'] / low['sched_cpu_us_per_job']
        print('SCALE flatness=%.2f (cpu per job at %d queued / at %d queued) target<=%.1f '
              'target_met=%s' % (flatness, high['queued'], low['queued'], FLATNESS_TARGET,
                                 'yes' if flatness <= FLATNESS_TARGET else 'no'), flush=True)
        memory = high['bytes_per_job_held']
        print('SCALE memory_per_queued_job_bytes=%d (at %d queued, %d held) target<=%d '
              'memory_target_met=%s' % (memory, high['queued'], high['submitted'], MEMORY_TARGET,
                                        'yes' if memory <= MEMORY_TARGET else 'no'), flush=True)
    print('SCALE elapsed_s=%d status=%s' % (time.monotonic() - started,
                                            'failed' if failed else 'ok'), flush=True)
    if options.json:
        with open(options.json, 'w') as handle:
            json.dump(records, handle, indent=1)
    if options.keep or failed:
        print('SCALE workdir=%s' % workdir, flush=True)
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == '__main__':
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    sys.exit(main())
