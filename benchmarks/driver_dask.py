"""Benchmark driver for dask.distributed: ``run`` starts ``dask scheduler`` on 127.0.0.1 and two
``dask worker`` (127.0.0.2, 127.0.0.3, one worker process of 2 threads each, with dask's default
nanny), each a separate process, so the scheduler's CPU and memory can be read from /proc as
for the other systems (a LocalCluster would run the scheduler inside the client process);
``client`` is one client process (``distributed.Client``).

Throughput is ``client.map(compute, range(n), pure=False)`` then ``wait`` and ``gather``;
latency is sequential ``client.submit(compute, i, pure=False).result()``. The executor workload
(``client --mode executor``) is N calls ``client.submit(inc, i, pure=False)`` in a loop, then
``wait`` and ``gather``. A payload row (``client --mode payload --size S``) is
``client.submit(reverse, data, pure=False)`` per job (distinct random bytes each, passed as the
argument, as a user would), then ``future.result()`` in order, each result checked against the
input reversed and dropped with its future.
"""

import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bench_common as bc  # noqa: E402


def compute(n):
    return n


def inc(x):
    """The executor workload's trivial function."""
    return x + 1


def reverse(data):
    """The payload workload's function: bytes in, the same bytes reversed out."""
    return data[::-1]


def dask_cli():
    return os.path.join(os.path.dirname(sys.executable), 'dask')


def start(workdir):
    port = bc.free_ports(1)[0]
    address = 'tcp://127.0.0.1:%d' % port
    env = None
    daemons = []
    try:
        scheduler = bc.Daemon('scheduler', [
            sys.executable, dask_cli(), 'scheduler', '--host', '127.0.0.1', '--port', str(port),
            '--no-dashboard'], workdir, env)
        daemons.append(scheduler)
        scheduler.wait_log(r'Scheduler at:\s+tcp://127\.0\.0\.1')
        for ip in ('127.0.0.2', '127.0.0.3'):
            daemons.append(bc.Daemon('worker-' + ip, [
                sys.executable, dask_cli(), 'worker', address, '--host', ip,
                '--nworkers', '1', '--nthreads', '2', '--no-dashboard',
                '--local-directory', os.path.join(workdir, 'worker-' + ip)], workdir, env))
        from distributed import Client
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=60)
    except Exception:
        for daemon in reversed(daemons):
            daemon.stop()
        raise
    import dask
    import distributed
    extra = {'version': 'dask %s, distributed %s' % (dask.__version__, distributed.__version__),
             'scheduler': 'dask scheduler', 'python': sys.version.split()[0]}
    return daemons, scheduler.pid, extra, {'address': address}


def spawn_client_factory(workdir, state):
    options = json.dumps({'address': state['address']})

    def spawn(mode, n, name, extra=()):
        return bc.ClientProcess([sys.executable, os.path.abspath(__file__), 'client', '--mode',
                                 mode, '--n', str(n), '--options', options] + list(extra),
                                workdir, name)
    return spawn


class DaskSession:
    def __init__(self, address):
        from distributed import Client
        self.client = Client(address, timeout=60)

    def submit_all(self, n):
        """The batch's futures, and the results they should give."""
        return self.client.map(compute, range(n), pure=False), list(range(n))

    def batch(self, n, deadline):
        from distributed import wait
        t0 = time.monotonic()
        futures, expected = self.submit_all(n)
        submit_s = time.monotonic() - t0
        errors, samples = 0, []
        try:
            wait(futures, timeout=max(0.1, deadline - time.monotonic()))
            results = self.client.gather(futures, errors='skip')
        except Exception as exc:
            return n, ['%s: %s' % (type(exc).__name__, exc)], submit_s, None
        if results != expected:
            bad = [f for f in futures if f.status != 'finished']
            errors = max(len(bad), 1)
            samples = ['%s: %s' % (f.key, f.status) for f in bad[:5]] or ['wrong results']
        return errors, samples, submit_s, None

    def one(self, i, deadline):
        try:
            result = self.client.submit(compute, i, pure=False).result(
                timeout=max(0.1, deadline - time.monotonic()))
        except Exception as exc:
            return 'job %s: %s: %s' % (i, type(exc).__name__, exc)
        return None if result == i else 'job %s: result %r' % (i, result)

    def close(self):
        self.client.close()


class DaskExecutorSession(DaskSession):
    """The executor workload: ``client.submit(inc, i, pure=False)`` N times (one call per
    submit, as an executor is used), then ``wait`` and ``gather``."""

    def submit_all(self, n):
        return ([self.client.submit(inc, i, pure=False) for i in range(n)],
                list(range(1, n + 1)))


class DaskPayloadSession(DaskSession):
    """The payload rows: ``client.submit(reverse, data, pure=False)`` per job, then
    ``future.result()`` in order (the future released once its result is checked)."""

    def submit(self, data):
        return self.client.submit(reverse, data, pure=False)

    def result(self, future, timeout):
        return future.result(timeout=timeout)


def open_cluster(options):
    return DaskSession(options['address'])


def open_executor(options):
    return DaskExecutorSession(options['address'])


def open_payload(options):
    return DaskPayloadSession(options['address'])


if __name__ == '__main__':
    if sys.argv[1:2] == ['client']:
        sys.exit(bc.client_main(open_cluster, sys.argv[2:], open_executor=open_executor,
                                open_payload=open_payload))
    sys.exit(bc.driver_main('dask', start, spawn_client_factory, sys.argv[2:], executor=True,
                            payload=True))
