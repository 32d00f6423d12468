#!/usr/bin/env python3
"""Benchmark dispyscheduler against dispy 4.15.2 and dask.distributed on the same workload.

    python3 benchmarks/run.py [--quick] [--systems dispyscheduler,dispy,dask] [--runs 3]
                              [--workloads latency,throughput,executor,payload]

Creates (once) a virtual environment per system under benchmarks/.venvs/, then runs each
system's driver (driver_<system>.py, in that system's venv, in a session of its own; dispy's
inside ``unshare --net``) once per run, interleaved (run 1: every system, run 2: ...), and
prints machine-readable lines on stdout. ``dispyscheduler-jobcluster`` and ``dispy-jobcluster``
are the two JobClusters (each client program its own scheduler; ``driver_X.py run
--jobcluster``), compared with each other. The ``executor`` workload (trivial calls through
``DispyExecutor.submit`` against dask's ``Client.submit``) is run by the systems in
``EXECUTOR_SYSTEMS`` only, and so is the ``payload`` workload (``PAYLOAD_SYSTEMS``: jobs taking
bytes and returning them reversed, 100 KB x 200, 10 MB x 40 and 100 MB x 8, MB/s of payload
both ways and per-row peak RSS of scheduler, nodes and client). A payload row's ``n`` is its
bytes per job:

    RUN system=S run=K metric=M n=N clients=C value=V         one value of one run
    BENCH system=S metric=M n=N clients=C min=.. median=.. max=.. runs=R
    BENCH system=S status=failed run=K reason="..."
    RATIO metric=M n=N clients=C better=higher dispyscheduler/dispy=.. dispyscheduler/dask=..
    SYSTEM system=S version=.. python=.. scheduler=..
    TARGET name=.. value=.. target=.. met=yes|no            the issues' targets (medians)
    SCALE ...                                               scale.py's lines (1,000 nodes;
                                                            SCALE mixed ...: mixed sizes)
    SUMMARY elapsed_s=.. runs=.. systems=.. failed_runs=..

Ratios are of medians, this project's over the peer's; ``better`` says which way is good.
Progress goes to stderr as lines starting with ``#``. Needs root for dispy (``unshare``).
"""

import argparse
import hashlib
import json
import os
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
VENVS = os.path.join(HERE, '.venvs')
sys.path.insert(0, HERE)

import bench_common as bc  # noqa: E402  (stdlib only)

SYSTEMS = ('dispyscheduler', 'dispy', 'dask', 'dispyscheduler-jobcluster', 'dispy-jobcluster')
OURS = 'dispyscheduler'
OURS_JOBCLUSTER = 'dispyscheduler-jobcluster'
COMPARED = {OURS: ('dispy', 'dask'), OURS_JOBCLUSTER: ('dispy-jobcluster',)}
"""Which system's medians are divided by which peers' on RATIO lines."""
WORKLOADS = bc.WORKLOADS
EXECUTOR_SYSTEMS = ('dispyscheduler', 'dask')
"""The systems with an executor workload (dispy has no executor; a JobCluster's is not
measured)."""
PAYLOAD_SYSTEMS = ('dispyscheduler', 'dask')
"""The systems with a payload workload (issue 18: this project beside dask)."""
WORKLOAD_SYSTEMS = {'executor': EXECUTOR_SYSTEMS, 'payload': PAYLOAD_SYSTEMS}
"""Workloads that only some systems run (the others: every system)."""
MB = 10 ** 6
SCALE_TIMEOUT = 1800.0  # seconds for scale.py (plain and mixed runs: about 2 minutes here)
SETTLE_SECONDS = 5.0
"""Pause before each driver, after writing back dirty pages (``sync``), so that what the
previous system left to the kernel (files to write, processes being reaped) is not charged to
the next one."""

# (name, system the value is of, metric key (n None: any), divided by this peer's value or
# None, target)
TARGETS = (
    ('throughput_20000_vs_dispy', OURS, ('throughput_jobs_per_s', 20000, 1), 'dispy', '>=', 20),
    ('throughput_20000_vs_dask', OURS, ('throughput_jobs_per_s', 20000, 1), 'dask', '>=', 5),
    ('latency_median_ms', OURS, ('latency_median_ms', None, 1), None, '<=', 0.5),
    ('latency_p90_ms', OURS, ('latency_p90_ms', None, 1), None, '<=', 1.0),
    # issue 16: JobCluster beside dispy 4.15.2's JobCluster
    ('jobcluster_throughput_20000_vs_dispy', OURS_JOBCLUSTER,
     ('throughput_jobs_per_s', 20000, 1), 'dispy-jobcluster', '>=', 20),
    ('jobcluster_latency_median_ms', OURS_JOBCLUSTER, ('latency_median_ms', None, 1), None,
     '<=', 0.5),
    # issue 20: DispyExecutor.submit beside dask's Client.submit, trivial calls
    ('executor_vs_dask', OURS, ('executor_calls_per_s', None, 1), 'dask', '>=', 5),
    # issue 18: large arguments and results (payload both ways, one client)
    ('payload_10MB_vs_dask', OURS, ('payload_mb_per_s', 10 * MB, 1), 'dask', '>=', 3),
    ('payload_100MB_vs_dask', OURS, ('payload_mb_per_s', 100 * MB, 1), 'dask', '>=', 3),
    ('payload_10MB_mb_per_s', OURS, ('payload_mb_per_s', 10 * MB, 1), None, '>=', 400),
    # the scheduler's peak RSS does not grow with the payload: at 100 MB per job (8 jobs, 1.6 GB
    # through it) at most 1.5x its peak at 100 KB per job (same run, same daemons): on a
    # scheduler of 50-70 MB, less than a third of one job's argument more; holding a single
    # 100 MB payload in memory at a time would already be about 2.5x
    ('payload_sched_rss_100MB_over_100KB', OURS, ('payload_scheduler_peak_rss_mb', 100 * MB, 1),
     (OURS, ('payload_scheduler_peak_rss_mb', 100 * 1000, 1)), '<=', 1.5),
)
"""A target divides its value by the same metric's of a peer (a system's name) or by another
value (``(system, key)``), if it names one."""


def base_system(system):
    """The venv and driver of a system: ``dispy-jobcluster`` runs ``driver_dispy.py run
    --jobcluster`` in the dispy venv."""
    return system.split('-')[0]


def note(*parts):
    print('#', *parts, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------- venvs

def venv_specs():
    with open(os.path.join(REPO, 'requirements.txt')) as handle:
        requirements = handle.read()
    return {
        # this project's dependencies only: its code runs from the checkout (bin/, the package)
        'dispyscheduler': (['-r', os.path.join(REPO, 'requirements.txt')], requirements),
        'dispy': (['dispy==4.15.2'], 'dispy==4.15.2'),
        'dask': (['dask[distributed]'], 'dask[distributed]'),
    }


def ensure_venv(name, timeout=900):
    """The venv of ``name``, created and filled by pip once; rebuilt when its spec changes.
    Returns the path of its python."""
    args, spec = venv_specs()[name]
    path = os.path.join(VENVS, name)
    python = os.path.join(path, 'bin', 'python')
    stamp = os.path.join(path, '.bench-spec')
    digest = hashlib.sha256(spec.encode()).hexdigest()
    try:
        with open(stamp) as handle:
            if handle.read().strip() == digest and os.path.exists(python):
                return python
    except OSError:
        pass
    note('creating venv %s (pip install %s)' % (path, ' '.join(args)))
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(VENVS, exist_ok=True)
    subprocess.run([sys.executable, '-m', 'venv', path], check=True, timeout=120)
    subprocess.run([python, '-m', 'pip', 'install', '--quiet', '--disable-pip-version-check']
                   + args, check=True, timeout=timeout)
    with open(stamp, 'w') as handle:
        handle.write(digest + '\n')
    return python


# ---------------------------------------------------------------------------------- drivers

def kill_session(sid):
    """SIGKILL, by PID, every process of session ``sid`` (a driver and all it started)."""
    members = bc.session_members(sid)
    bc.kill_pids(members)
    return members


def loadavg():
    with open('/proc/loadavg') as handle:
        return ' '.join(handle.read().split()[:3])


def system_workloads(system, workloads):
    """The selected workloads that ``system`` runs."""
    return [w for w in workloads if system in WORKLOAD_SYSTEMS.get(w, (system,))]


def driver_timeout(sizes, latency, system='', workloads=WORKLOADS, executor_n=0,
                   payload_rows=()):
    clients = (1,) if system.endswith('-jobcluster') else (1, 2)
    workloads = system_workloads(system, workloads)
    phases = [latency] if 'latency' in workloads else []
    if 'throughput' in workloads:
        phases += [n for n in sizes for _ in clients]
    if 'executor' in workloads:
        phases.append(executor_n)
    timeout = 120 + sum(120 + bc.phase_timeout(n) for n in phases)  # + set-up per phase
    if 'payload' in workloads:  # + set-up and making the inputs per row
        timeout += sum(120 + size * jobs / 1e8 + bc.payload_timeout(size, jobs)
                       for size, jobs in payload_rows)
    return timeout


def run_driver(system, python, run, sizes, latency, workdir, workloads=WORKLOADS,
               executor_n=20000, payload_rows=bc.PAYLOAD_ROWS):
    """One run of one system; returns its result dict (``failed`` set on failure)."""
    argv = [python, os.path.join(HERE, 'driver_%s.py' % base_system(system)), 'run',
            '--sizes', ','.join(map(str, sizes)), '--latency', str(latency),
            '--workloads', ','.join(system_workloads(system, workloads)),
            '--executor_n', str(executor_n),
            '--payload_rows', bc.format_payload_rows(payload_rows), '--workdir', workdir]
    if system.endswith('-jobcluster'):
        argv.append('--jobcluster')
    if base_system(system) == 'dispy':
        # dispy broadcasts: scheduler, nodes and clients all live in a private network
        # namespace where only lo exists (the driver checks it and brings lo up)
        argv = ['unshare', '--net', '--'] + argv
    os.makedirs(workdir, exist_ok=True)
    timeout = driver_timeout(sizes, latency, system, workloads, executor_n, payload_rows)
    load_before = loadavg()
    started = time.monotonic()
    with open(os.path.join(workdir, 'driver.stderr'), 'wb') as stderr:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr,
                                stdin=subprocess.DEVNULL, start_new_session=True, cwd=workdir,
                                preexec_fn=bc.die_with_parent)
        try:
            out, _ = proc.communicate(timeout=timeout)
            reason = None
        except subprocess.TimeoutExpired:
            reason = 'driver timed out after %.0f s' % timeout
            kill_session(proc.pid)
            out, _ = proc.communicate(timeout=30)
        except BaseException:  # ^C: take the driver and all it started down, by PID
            kill_session(proc.pid)
            raise
    leftovers = kill_session(proc.pid)
    result = None
    for line in out.decode(errors='replace').splitlines():
        if line.startswith('RESULT '):
            result = json.loads(line[len('RESULT '):])
    if result is None:
        with open(os.path.join(workdir, 'driver.stderr'), errors='replace') as handle:
            err = ' | '.join(handle.read().strip().splitlines()[-5:])[-800:]
        result = {'system': system, 'phases': [],
                  'failed': reason or 'driver exited %s without a result: %s' % (
                      proc.returncode, err)}
    if leftovers:
        result.setdefault('leftovers', []).extend(leftovers)
    result['run'] = run
    result['driver_s'] = time.monotonic() - started
    result['loadavg_before'] = load_before
    result['loadavg_after'] = loadavg()
    return result


# ---------------------------------------------------------------------------------- report

def values_of(result):
    """``{(metric, n, clients): value}`` of one run's result."""
    values = {}
    for phase in result.get('phases', []):
        n, clients = phase['n'], phase['clients']
        if phase['errors']:
            continue
        if phase['mode'] == 'latency':
            values[('latency_median_ms', n, clients)] = phase['latency_median_ms']
            values[('latency_p90_ms', n, clients)] = phase['latency_p90_ms']
        elif phase['mode'] == 'payload':  # n: bytes per job
            values[('payload_mb_per_s', n, clients)] = phase['mb_per_s']
            for metric, field in (('payload_scheduler_peak_rss_mb', 'sched_peak_rss_kb'),
                                  ('payload_node_peak_rss_mb', 'node_peak_rss_kb'),
                                  ('payload_node_total_peak_rss_mb', 'node_total_peak_rss_kb'),
                                  ('payload_client_peak_rss_mb', 'client_peak_rss_kb')):
                if phase.get(field):
                    values[(metric, n, clients)] = phase[field] / 1024.0
        elif phase['mode'] == 'executor':
            values[('executor_calls_per_s', n, clients)] = phase['throughput']
            if 'sched_cpu_s_per_1000' in phase:
                values[('executor_sched_cpu_s_per_1000_calls', n, clients)] = \
                    phase['sched_cpu_s_per_1000']
        else:
            values[('throughput_jobs_per_s', n, clients)] = phase['throughput']
            if 'sched_cpu_s_per_1000' in phase:
                values[('sched_cpu_s_per_1000_jobs', n, clients)] = phase['sched_cpu_s_per_1000']
            if 'program_cpu_s_per_1000' in phase:  # JobCluster: the program and its scheduler
                values[('program_cpu_s_per_1000_jobs', n, clients)] = \
                    phase['program_cpu_s_per_1000']
    if result.get('sched_peak_rss_kb') and not result.get('failed'):
        values[('sched_peak_rss_mb', None, None)] = result['sched_peak_rss_kb'] / 1024.0
    return values


BETTER = {'throughput_jobs_per_s': 'higher', 'latency_median_ms': 'lower',
          'latency_p90_ms': 'lower', 'sched_cpu_s_per_1000_jobs': 'lower',
          'program_cpu_s_per_1000_jobs': 'lower', 'executor_calls_per_s': 'higher',
          'executor_sched_cpu_s_per_1000_calls': 'lower', 'sched_peak_rss_mb': 'lower',
          'payload_mb_per_s': 'higher', 'payload_scheduler_peak_rss_mb': 'lower',
          'payload_node_peak_rss_mb': 'lower', 'payload_node_total_peak_rss_mb': 'lower',
          'payload_client_peak_rss_mb': 'lower'}


def metric_systems(metric):
    """The systems that measure ``metric`` (its workload's)."""
    for workload, systems in WORKLOAD_SYSTEMS.items():
        if metric.startswith(workload + '_'):
            return systems
    return SYSTEMS


def run_scale(python, quick):
    """scale.py in this project's venv; its SCALE lines go straight to stdout. True if ok."""
    note('scale: 1,000 simulated nodes, 1k/10k/100k queued jobs, plain and mixed ...'
         if not quick else
         'scale (quick): 100 simulated nodes, 1k/10k queued jobs, plain and mixed ...')
    argv = [python, os.path.join(HERE, 'scale.py')] + (['--quick'] if quick else [])
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True, cwd=REPO,
                            preexec_fn=bc.die_with_parent)
    try:
        returncode = proc.wait(SCALE_TIMEOUT)
    except subprocess.TimeoutExpired:
        note('scale: timed out after %.0f s' % SCALE_TIMEOUT)
        returncode = None
    finally:
        leftovers = kill_session(proc.pid)
        proc.wait(30)
    if leftovers:
        note('scale left processes behind (killed): %s' % leftovers)
    return returncode == 0


def key_text(key):
    metric, n, clients = key
    text = 'metric=%s' % metric
    if n is not None:
        text += ' n=%d clients=%d' % (n, clients)
    return text


def fmt(value):
    if value >= 100:
        return '%.0f' % value
    if value >= 10:
        return '%.1f' % value
    if value >= 1:
        return '%.2f' % value
    return '%.3g' % value


def report(results, systems, elapsed, runs):
    for system in systems:
        for result in results:
            if result['system'] == system and result.get('version'):
                print('SYSTEM system=%s version=%s python=%s scheduler=%s' % (
                    system, shlex.quote(result['version']), result.get('python'),
                    shlex.quote(result.get('scheduler', ''))))
                break
    collected = {system: {} for system in systems}
    for result in results:
        for key, value in values_of(result).items():
            collected[result['system']].setdefault(key, []).append(value)
    order = []
    for system in systems:
        for key in collected[system]:
            if key not in order:
                order.append(key)
    order.sort(key=lambda k: (list(BETTER).index(k[0]), k[1] or 0, k[2] or 0))
    medians = {}
    for system in systems:
        for key in order:
            vals = collected[system].get(key)
            if not vals:
                continue
            med = statistics.median(vals)
            medians[(system, key)] = med
            print('BENCH system=%s %s min=%s median=%s max=%s runs=%d' % (
                system, key_text(key), fmt(min(vals)), fmt(med), fmt(max(vals)), len(vals)))
    for result in results:
        if result.get('failed'):
            print('BENCH system=%s status=failed run=%d reason=%s' % (
                result['system'], result['run'], shlex.quote(result['failed'][:600])))
    for mine, compared in COMPARED.items():
        peers = [s for s in compared if s in systems]
        if mine not in systems or not peers:
            continue
        for key in order:
            if not any((system, key) in medians for system in [mine] + peers):
                continue
            ours = medians.get((mine, key))
            parts = []
            for peer in peers:
                if peer not in metric_systems(key[0]):
                    continue  # dispy has no executor or payload rows: no NA for it
                theirs = medians.get((peer, key))
                ratio = ours / theirs if ours is not None and theirs else None
                parts.append('%s/%s=%s' % (mine, peer, 'NA' if ratio is None else
                                           '%.2f' % ratio))
            print('RATIO %s better=%s %s' % (key_text(key), BETTER[key[0]], ' '.join(parts)))
    for name, system, key, peer, sense, target in TARGETS:
        if key[1] is None:
            key = next((k for k in order if k[0] == key[0]), key)
        value = medians.get((system, key))
        if peer is not None:
            theirs = medians.get(peer if isinstance(peer, tuple) else (peer, key))
            value = value / theirs if value is not None and theirs else None
        if value is not None:
            met = value >= target if sense == '>=' else value <= target
            print('TARGET name=%s value=%s target%s%s met=%s' % (
                name, fmt(value), sense, target, 'yes' if met else 'no'))
    print('SUMMARY elapsed_s=%.0f runs=%d systems=%s failed_runs=%d' % (
        elapsed, runs, ','.join(systems), sum(1 for r in results if r.get('failed'))))


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--quick', action='store_true',
                        help='N=500, 1 run, 20 latency jobs, 1,000 executor calls, payload rows '
                             '100000x50,10000000x10,100000000x2: checks that everything works')
    parser.add_argument('--systems', default=','.join(SYSTEMS),
                        help='any of %s (default: all)' % ','.join(SYSTEMS))
    parser.add_argument('--runs', type=int, default=None, help='default 3 (1 with --quick)')
    parser.add_argument('--sizes', default=None, help='job counts, default 2000,20000')
    parser.add_argument('--latency', type=int, default=None, help='sequential jobs, default 50')
    parser.add_argument('--json', default=None, help='also write every raw result here')
    parser.add_argument('--keep', action='store_true', help='keep the work directory (logs)')
    parser.add_argument('--no_scale', action='store_true',
                        help='skip scale.py (1,000 simulated nodes; 100 with --quick)')
    parser.add_argument('--workloads', default=','.join(WORKLOADS),
                        help='any of %s (default: all); executor and payload only for %s' % (
                            ','.join(WORKLOADS), ','.join(EXECUTOR_SYSTEMS)))
    parser.add_argument('--executor_n', type=int, default=None,
                        help='calls of the executor workload, default 20000 (1000 with --quick)')
    parser.add_argument('--payload_rows', default=None,
                        help='payload rows, BYTESxJOBS,... default %s (%s with --quick)' % (
                            bc.format_payload_rows(bc.PAYLOAD_ROWS),
                            bc.format_payload_rows(bc.PAYLOAD_ROWS_QUICK)))
    args = parser.parse_args()
    # SIGTERM unwinds like ^C: the driver running then is killed with all it started, by PID
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    systems = [s for s in args.systems.split(',') if s]
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        parser.error('unknown systems: %s' % ', '.join(sorted(unknown)))
    workloads = [w for w in args.workloads.split(',') if w]
    unknown = set(workloads) - set(WORKLOADS)
    if unknown or not workloads:
        parser.error('unknown workloads: %s' % ', '.join(sorted(unknown)) if unknown else
                     'no workload selected')
    workloads = [w for w in WORKLOADS if w in workloads]
    skipped = [s for s in systems if not system_workloads(s, workloads)]
    if skipped:
        note('not run (no selected workload applies): %s' % ', '.join(skipped))
        systems = [s for s in systems if s not in skipped]
    executor_n = args.executor_n or (1000 if args.quick else 20000)
    payload_rows = (bc.parse_payload_rows(args.payload_rows) if args.payload_rows else
                    list(bc.PAYLOAD_ROWS_QUICK if args.quick else bc.PAYLOAD_ROWS))
    runs = args.runs or (1 if args.quick else 3)
    sizes = [int(x) for x in (args.sizes or ('500' if args.quick else '2000,20000')).split(',')]
    latency = args.latency or (20 if args.quick else 50)
    started = time.monotonic()
    note('load average at start: %s (%d CPUs)' % (loadavg(), os.cpu_count()))

    pythons, results = {}, []
    for system in systems:
        try:
            pythons[system] = ensure_venv(base_system(system))
        except Exception as exc:
            results.append({'system': system, 'run': 0, 'phases': [],
                            'failed': 'venv: %s' % exc})
            note('venv for %s failed: %s' % (system, exc))
    workroot = tempfile.mkdtemp(prefix='dispyscheduler-bench-')
    note('work directory %s; workloads %s; sizes %s, latency %d, executor calls %d, payload '
         'rows %s; %d run(s)' % (workroot, ','.join(workloads), sizes, latency, executor_n,
                                 bc.format_payload_rows(payload_rows), runs))
    for run in range(1, runs + 1):
        for system in systems:
            if system not in pythons:
                continue
            os.sync()
            time.sleep(SETTLE_SECONDS)
            note('run %d/%d: %s ...' % (run, runs, system))
            result = run_driver(system, pythons[system], run, sizes, latency,
                                os.path.join(workroot, '%s-run%d' % (system, run)),
                                workloads, executor_n, payload_rows)
            results.append(result)
            for key, value in sorted(values_of(result).items(), key=lambda kv: str(kv[0])):
                print('RUN system=%s run=%d %s value=%s' % (system, run, key_text(key),
                                                            fmt(value)), flush=True)
            note('run %d/%d: %s done in %.0f s (load average %s before, %s after)%s' % (
                run, runs, system, result['driver_s'], result['loadavg_before'],
                result['loadavg_after'],
                ', FAILED: ' + result['failed'] if result.get('failed') else ''))
            if result.get('log_problems'):
                note('%s log lines that look like trouble: %s' % (
                    system, json.dumps(result['log_problems'])[:800]))
            if result.get('leftovers'):
                note('%s left processes behind (killed): %s' % (system, result['leftovers']))
    scale_failed = False
    if OURS in pythons and not args.no_scale and workloads == list(WORKLOADS):
        # scale.py belongs to the default run (every workload), not to a selection
        scale_failed = not run_scale(pythons[OURS], args.quick)
    elapsed = time.monotonic() - started
    report(results, systems, elapsed, runs)
    if args.json:
        with open(args.json, 'w') as handle:
            json.dump({'sizes': sizes, 'latency': latency, 'runs': runs,
                       'workloads': workloads, 'executor_n': executor_n,
                       'payload_rows': payload_rows, 'results': results,
                       'elapsed_s': elapsed}, handle, indent=1)
    if args.keep or any(r.get('failed') for r in results):
        note('logs kept in %s' % workroot)
    else:
        shutil.rmtree(workroot, ignore_errors=True)
    return 1 if scale_failed or any(r.get('failed') for r in results) else 0


if __name__ == '__main__':
    sys.exit(main())
