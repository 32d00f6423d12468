"""Benchmark driver for this project: ``run`` starts bin/dispyscheduler on 127.0.0.1 and two
bin/dispynode (127.0.0.2, 127.0.0.3, --cpus 2) from the checkout, and runs the phases;
``client`` is one client process (``from dispyscheduler import SharedJobCluster``).

``run --jobcluster`` starts only the two nodes, without ``--scheduler_node`` (they wait for a
scheduler's ping), and each client process is a ``dispyscheduler.JobCluster`` program: its own
scheduler in a child process, which finds the nodes by pinging 127.0.0.2 and 127.0.0.3 at their
port. The client names that child on its READY line, so that its CPU time is counted with the
program's and it is stopped by PID if it outlives the program.

``client --mode executor`` (the executor workload) is a ``dispyscheduler.DispyExecutor`` with
the same connection options as the SharedJobCluster clients: N calls ``executor.submit(inc, i)``
in a loop, then ``concurrent.futures.wait`` for them all, every result checked.

``client --mode payload --size S`` (a payload row) is a ``SharedJobCluster(reverse, setup=setup,
...)`` with the same options: ``submit(data)`` per job (distinct random bytes each), then
``job(clear=True)`` in order, each result checked against the input reversed and dropped.

Run with a Python that has requirements.txt installed (run.py uses .venvs/dispyscheduler).
"""

import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
BIN = os.path.join(REPO, 'bin')
sys.path.insert(0, HERE)

import bench_common as bc  # noqa: E402


def setup():
    global bench_ready
    bench_ready = True
    return 0


def compute(n):
    return n


def inc(x):
    """The executor workload's trivial function."""
    return x + 1


def reverse(data):
    """The payload workload's function: bytes in, the same bytes reversed out."""
    return data[::-1]


def start(workdir):
    port, node_port, client_port = bc.free_ports(3)
    daemons = []
    try:
        scheduler = bc.Daemon('scheduler', [
            sys.executable, os.path.join(BIN, 'dispyscheduler'), '-i', '127.0.0.1',
            '-p', str(port), '--scheduler_port', str(client_port), '--node_port', str(node_port),
            '--node_secret', bc.NODE_SECRET, '--cluster_secret', bc.CLUSTER_SECRET,
            '--dest_path_prefix', os.path.join(workdir, 'scheduler'),
            '-n', '127.0.0.2', '-n', '127.0.0.3'], workdir)
        daemons.append(scheduler)
        scheduler.wait_log('serving nodes')
        for ip in ('127.0.0.2', '127.0.0.3'):
            daemons.append(bc.Daemon('node-' + ip, [
                sys.executable, os.path.join(BIN, 'dispynode'), '-i', ip, '--cpus', '2',
                '-s', bc.NODE_SECRET, '-p', str(node_port), '--scheduler_node', '127.0.0.1',
                '--scheduler_port', str(port),
                '--dest_path_prefix', os.path.join(workdir, 'node-' + ip)], workdir))
        scheduler.wait_log(r'node 127\.0\.0\.[23]:\d+ .* joined', count=2)
    except Exception:
        for daemon in reversed(daemons):
            daemon.stop()
        raise
    extra = version_extra('bin/dispyscheduler')
    return daemons, scheduler.pid, extra, {'scheduler_port': client_port}


def version_extra(scheduler):
    sys.path.insert(0, REPO)
    import dispyscheduler
    try:
        commit = subprocess.run(['git', '-C', REPO, 'describe', '--always', '--dirty'],
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = 'unknown'
    return {'version': 'dispyscheduler %s (checkout %s)' % (dispyscheduler.__version__, commit),
            'scheduler': scheduler, 'python': sys.version.split()[0]}


def start_jobcluster(workdir):
    """The two nodes only, waiting for a scheduler's ping (no --scheduler_node)."""
    node_port = bc.free_ports(1)[0]
    daemons = []
    try:
        for ip in ('127.0.0.2', '127.0.0.3'):
            daemons.append(bc.Daemon('node-' + ip, [
                sys.executable, os.path.join(BIN, 'dispynode'), '-i', ip, '--cpus', '2',
                '-s', bc.NODE_SECRET, '-p', str(node_port),
                '--dest_path_prefix', os.path.join(workdir, 'node-' + ip)], workdir))
        for daemon in daemons:
            daemon.wait_log('serving with')
    except Exception:
        for daemon in reversed(daemons):
            daemon.stop()
        raise
    extra = version_extra('dispyscheduler.JobCluster (scheduler in a child process)')
    return daemons, None, extra, {'node_port': node_port}


def spawn_client_factory(workdir, state):
    options = json.dumps(state)

    def spawn(mode, n, name, extra=()):
        return bc.ClientProcess([sys.executable, os.path.abspath(__file__), 'client', '--mode',
                                 mode, '--n', str(n), '--options', options] + list(extra),
                                workdir, name)
    return spawn


def open_cluster(options):
    sys.path.insert(0, REPO)
    from dispyscheduler import DispyJob, JobCluster, SharedJobCluster
    if 'node_port' in options:
        port = options['node_port']
        cluster = JobCluster(compute, setup=setup,
                             nodes=[('127.0.0.2', port), ('127.0.0.3', port)],
                             host='127.0.0.1', secret=bc.NODE_SECRET, ping_interval=1,
                             recover_file=False)
        bc.wait_nodes(cluster, 2)
        # the program: this process and its scheduler (a child in a session of its own)
        children = [child.process.pid for child in cluster._stopper.children]
        return bc.DispyApiSession(cluster, DispyJob.Finished,
                                  pids=lambda: [os.getpid()] + children)
    cluster = SharedJobCluster(compute, setup=setup, scheduler_node='127.0.0.1',
                               scheduler_port=options['scheduler_port'],
                               secret=bc.CLUSTER_SECRET)
    return bc.DispyApiSession(cluster, DispyJob.Finished)


class ExecutorSession:
    """The executor workload: ``executor.submit(inc, i)`` N times, then
    ``concurrent.futures.wait`` for all of them; each result must be ``i + 1``."""

    def __init__(self, executor):
        self.executor = executor

    def batch(self, n, deadline):
        import concurrent.futures
        t0 = time.monotonic()
        futures = [self.executor.submit(inc, i) for i in range(n)]
        submit_s = time.monotonic() - t0
        _, not_done = concurrent.futures.wait(futures,
                                              timeout=max(0.1, deadline - time.monotonic()))
        errors, samples = 0, []
        for i, future in enumerate(futures):
            if future in not_done:
                error = 'call %d: no result before the deadline' % i
            elif future.exception() is not None:
                error = 'call %d: %s: %s' % (i, type(future.exception()).__name__,
                                             str(future.exception())[-300:])
            elif future.result() != i + 1:
                error = 'call %d: result %r' % (i, future.result())
            else:
                continue
            errors += 1
            if len(samples) < 5:
                samples.append(error)
        return errors, samples, submit_s, None

    def close(self):
        self.executor.shutdown(wait=True)


def open_executor(options):
    sys.path.insert(0, REPO)
    from dispyscheduler import DispyExecutor
    return ExecutorSession(DispyExecutor(scheduler_node='127.0.0.1',
                                         scheduler_port=options['scheduler_port'],
                                         secret=bc.CLUSTER_SECRET))


class PayloadSession:
    """The payload rows: ``cluster.submit(data)`` per job, ``job(clear=True)`` to collect (the
    job's result dropped from it as it is read)."""

    def __init__(self, cluster, finished):
        self.cluster = cluster
        self.finished = finished

    def submit(self, data):
        return self.cluster.submit(data)

    def result(self, job, timeout):
        if not job.finish.wait(timeout):
            raise TimeoutError('no result before the deadline (status %s)' % job.status)
        if job.status != self.finished:
            raise RuntimeError('status %s exception %s' % (job.status,
                                                          str(job.exception)[-300:]))
        return job(clear=True)

    def close(self):
        self.cluster.close()


def open_payload(options):
    sys.path.insert(0, REPO)
    from dispyscheduler import DispyJob, SharedJobCluster
    cluster = SharedJobCluster(reverse, setup=setup, scheduler_node='127.0.0.1',
                               scheduler_port=options['scheduler_port'],
                               secret=bc.CLUSTER_SECRET)
    return PayloadSession(cluster, DispyJob.Finished)


if __name__ == '__main__':
    if sys.argv[1:2] == ['client']:
        sys.exit(bc.client_main(open_cluster, sys.argv[2:], open_executor=open_executor,
                                open_payload=open_payload))
    sys.exit(bc.driver_main('dispyscheduler', start, spawn_client_factory, sys.argv[2:],
                            jobcluster=(start_jobcluster, spawn_client_factory),
                            executor=True, payload=True))
