"""Benchmark driver for dispy 4.15.2 (the real one, from PyPI): ``run`` starts dispy's own
``dispyscheduler.py`` on 127.0.0.1 and two ``dispynode.py`` (127.0.0.2, 127.0.0.3, --cpus 2),
and runs the phases; ``client`` is one client process (``dispy.SharedJobCluster``).

dispy broadcasts (UDP) to find nodes and schedulers, so ``run`` refuses to start unless its
network namespace has no interface but ``lo``: run.py starts it as ``unshare --net ...``, and
scheduler, nodes and clients are all its children in that namespace.

``run --jobcluster`` starts only the two nodes, without ``--scheduler_host`` (they wait for a
scheduler's ping), and each client process is a ``dispy.JobCluster`` program: dispy's scheduler
runs inside it, and finds the nodes by pinging 127.0.0.2 and 127.0.0.3 (port 9701).

dispy uses fixed ports (9700 client/scheduler TCP, 9701 nodes, 9702 shared scheduler), which
is fine in a private namespace. dispy 4.15.2 finds its own address with ``netifaces`` if that is
installed and by resolving the given host otherwise; pip does not install netifaces with dispy
and it is not needed here, since every address is given explicitly.
"""

import json
import os
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bench_common as bc  # noqa: E402


def setup():
    # dispynode 4.15.2 runs jobs in a "setup process" only when setup leaves a global behind;
    # without it, each job is a multiprocessing.Process whose pid is read after start(), and a
    # sub-millisecond job can be reaped first: AttributeError in job_request, a lost result.
    global bench_ready
    bench_ready = True
    return 0


def compute(n):
    return n


def dispy_script(name):
    return os.path.join(os.path.dirname(sys.executable), name)


def private_network():
    """Bring ``lo`` up; fail unless ``lo`` is the only interface in this namespace."""
    names = [name for _, name in socket.if_nameindex()]
    if names != ['lo']:
        raise RuntimeError('refusing to run dispy: network namespace has interfaces %s '
                           '(run it under "unshare --net")' % names)
    subprocess.run(['ip', 'link', 'set', 'lo', 'up'], check=True, timeout=10)


def wait_listening(daemon, ip, port, timeout=60):
    """dispy logs its listening and discovery at debug level only, and debug logging of every
    job would slow it down: wait until the port takes connections instead."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not daemon.alive():
            raise RuntimeError('%s exited; log: %s' % (daemon.name, bc.tail(daemon.log())))
        try:
            socket.create_connection((ip, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError('%s: nothing listening on %s:%s' % (daemon.name, ip, port))


def start_nodes(workdir, env, scheduler):
    """dispy's two nodes; ``scheduler``: the --scheduler_host to join (None: wait for a
    JobCluster's ping)."""
    daemons = []
    for ip in ('127.0.0.2', '127.0.0.3'):
        argv = [sys.executable, dispy_script('dispynode.py'), '--daemon', '-i', ip,
                '--cpus', '2', '-s', bc.NODE_SECRET,
                '--dest_path_prefix', os.path.join(workdir, 'node-' + ip)]
        if scheduler:
            argv += ['--scheduler_host', scheduler]
        daemons.append(bc.Daemon('node-' + ip, argv, workdir, env))
    return daemons


def version_extra(scheduler):
    from importlib.metadata import version
    return {'version': 'dispy %s, pycos %s' % (version('dispy'), version('pycos')),
            'scheduler': scheduler, 'python': sys.version.split()[0]}


def start_jobcluster(workdir):
    private_network()
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    daemons = []
    try:
        daemons += start_nodes(workdir, env, None)
        for daemon, ip in zip(daemons, ('127.0.0.2', '127.0.0.3')):
            wait_listening(daemon, ip, 9701)
    except Exception:
        for daemon in reversed(daemons):
            daemon.stop()
        raise
    return daemons, None, version_extra('dispy.JobCluster (scheduler in the program)'), {
        'jobcluster': True}


def start(workdir):
    private_network()
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    daemons = []
    try:
        scheduler = bc.Daemon('scheduler', [
            sys.executable, dispy_script('dispyscheduler.py'), '--daemon', '-i', '127.0.0.1',
            '-n', '127.0.0.2', '-n', '127.0.0.3', '--node_secret', bc.NODE_SECRET,
            '--cluster_secret', bc.CLUSTER_SECRET,
            '--dest_path_prefix', os.path.join(workdir, 'scheduler')], workdir, env)
        daemons.append(scheduler)
        wait_listening(scheduler, '127.0.0.1', 9702)
        daemons += start_nodes(workdir, env, '127.0.0.1')
        for daemon, ip in zip(daemons[1:], ('127.0.0.2', '127.0.0.3')):
            wait_listening(daemon, ip, 9701)
    except Exception:
        for daemon in reversed(daemons):
            daemon.stop()
        raise
    return daemons, scheduler.pid, version_extra('dispy/dispyscheduler.py'), {}


def spawn_client_factory(workdir, state):
    def spawn(mode, n, name):
        options = json.dumps(dict(state, recover_file=os.path.join(workdir, '_dispy_' + name)))
        return bc.ClientProcess([sys.executable, os.path.abspath(__file__), 'client', '--mode',
                                 mode, '--n', str(n), '--options', options], workdir, name)
    return spawn


def open_cluster(options):
    import dispy
    if options.get('jobcluster'):
        # dispy's scheduler in this process: it pings the nodes (at dispy's node port, 9701)
        cluster = dispy.JobCluster(compute, setup=setup, nodes=['127.0.0.2', '127.0.0.3'],
                                   host='127.0.0.1', secret=bc.NODE_SECRET, ping_interval=1,
                                   loglevel=dispy.logger.ERROR,
                                   recover_file=options['recover_file'])
        bc.wait_nodes(cluster, 2)
        # shutdown(): close the computation (nodes freed) and stop the scheduler
        return bc.DispyApiSession(cluster, dispy.DispyJob.Finished,
                                  pids=lambda: [os.getpid()], close=cluster.shutdown)
    # ip_addr only picks the address family (dispy ignores it for binding); host is the
    # client's address; client_port=0 lets two clients run at once.
    cluster = dispy.SharedJobCluster(compute, setup=setup, scheduler_host='127.0.0.1',
                                     host='127.0.0.1', ip_addr='127.0.0.1', client_port=0,
                                     secret=bc.CLUSTER_SECRET, loglevel=dispy.logger.ERROR,
                                     recover_file=options['recover_file'])
    # the nodes that the scheduler has set this computation up on; the driver cannot see
    # dispy's discovery (debug-level logs only), so each client waits for both nodes here
    bc.wait_nodes(cluster, 2)
    return bc.DispyApiSession(cluster, dispy.DispyJob.Finished)


if __name__ == '__main__':
    if sys.argv[1:2] == ['client']:
        sys.exit(bc.client_main(open_cluster, sys.argv[2:]))
    sys.exit(bc.driver_main('dispy', start, spawn_client_factory, sys.argv[2:],
                            jobcluster=(start_jobcluster, spawn_client_factory)))
