"""Real networks between hosts, made of network namespaces: broadcast discovery whichever side
starts first, a node on another subnet behind a router, a scheduler behind NAT, and a link
that goes down mid-run. Each test builds its own namespaces (private 10.99.x addresses that
exist only there) and removes them; it skips, saying why, where namespaces cannot be made.
"""

import json
import os
import re
import subprocess
import sys
import time

import pytest

import netns
from daemons import BIN, REPO, Daemon, check_no_crashes, session_members, wait_for

WHY_NOT = netns.available()
pytestmark = pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or '')

NODE_SECRET, CLUSTER_SECRET = 'n-secret', 'c-secret'

CLIENT = '''
import json, sys, time
from dispyscheduler import DispyJob, SharedJobCluster

def work(n, seconds):
    import time
    time.sleep(seconds)
    return n * n

scheduler, count, seconds, reentrant = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), \\
    sys.argv[4] == 'reentrant'
ended = {}
def callback(job):
    if job.status in (DispyJob.Finished, DispyJob.Terminated, DispyJob.Cancelled,
                      DispyJob.Abandoned):
        ended[job.id] = ended.get(job.id, 0) + 1
with SharedJobCluster(work, scheduler_node=scheduler, secret=%r, reentrant=reentrant,
                      callback=callback) as cluster:
    jobs = [cluster.submit(n, seconds) for n in range(count)]
    print('submitted', flush=True)
    cluster.wait()
print(json.dumps({'results': [job.result for job in jobs],
                  'ip_addrs': sorted({job.ip_addr for job in jobs if job.ip_addr}),
                  'ended': [ended.get(job.id, 0) for job in jobs]}))
''' % CLUSTER_SECRET


class Hosts:
    """The namespaces and daemons of one test."""

    def __init__(self, directory):
        self.directory = directory
        self.net = netns.Network()
        self.daemons = []

    def start(self, host, program, *argv):
        log = os.path.join(self.directory, '%s-%s.log' % (host, program))
        daemon = Daemon('%s-%s' % (host, program), self.net.command(
            host, [sys.executable, os.path.join(BIN, program)] + list(argv)), log)
        self.daemons.append(daemon)
        return daemon

    def scheduler(self, host, *argv):
        return self.start(host, 'dispyscheduler', '--node_secret', NODE_SECRET,
                          '--cluster_secret', CLUSTER_SECRET, '--pulse_interval', '1',
                          '--ping_interval', '1', '--dest_path_prefix',
                          os.path.join(self.directory, host + '-scheduler'), *argv)

    def node(self, host, *argv):
        return self.start(host, 'dispynode', '--cpus', '2', '-s', NODE_SECRET,
                          '--ping_interval', '1', '--dest_path_prefix',
                          os.path.join(self.directory, host + '-node'), *argv)

    def client(self, host, scheduler, count, seconds=0.05, reentrant=False):
        """A client program on ``host``; returns its Popen (stdout: 'submitted', then JSON)."""
        import subprocess
        script = os.path.join(self.directory, 'client.py')
        with open(script, 'w') as handle:
            handle.write(CLIENT)
        return subprocess.Popen(
            self.net.command(host, [sys.executable, script, scheduler, str(count), str(seconds),
                                    'reentrant' if reentrant else 'plain']),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=self.directory,
            env=dict(os.environ, PYTHONPATH=REPO))

    def stop(self):
        leftovers = []
        for daemon in reversed(self.daemons):
            daemon.stop()
        for daemon in self.daemons:
            leftovers += session_members(daemon.pid)
        self.net.remove()
        return leftovers


@pytest.fixture
def hosts(tmp_path, request):
    world = Hosts(str(tmp_path))
    yield world
    leftovers = world.stop()
    report = getattr(request.node, 'rep_call', None)
    if report is not None and report.failed:
        for daemon in world.daemons:
            sys.stderr.write('----- %s -----\n%s\n' % (daemon.name, daemon.log()[-4000:]))
    assert not leftovers, 'processes left running: %s' % (leftovers,)
    check_no_crashes(world.daemons)


def finish(program, timeout=120):
    try:
        out, err = program.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        program.kill()  # its own children (a JobCluster's scheduler) stop with it
        program.communicate()
        raise
    assert program.returncode == 0, err.decode()[-3000:]
    return json.loads(out.decode().splitlines()[-1])


def one_lan(hosts):
    """A LAN 10.99.1.0/24: the scheduler at .1, nodes at .2 and .3."""
    net = hosts.net
    net.lan('lan')
    net.host('sched', 'lan', '10.99.1.1/24')
    net.host('n1', 'lan', '10.99.1.2/24')
    net.host('n2', 'lan', '10.99.1.3/24')


def test_broadcast_discovery_with_nodes_started_after_the_scheduler(hosts):
    one_lan(hosts)
    scheduler = hosts.scheduler('sched', '-i', '10.99.1.1')
    scheduler.wait_log('serving nodes')
    hosts.node('n1')
    hosts.node('n2')
    scheduler.wait_log(r'node 10\.99\.1\.2:51348 .* joined', timeout=20)
    scheduler.wait_log(r'node 10\.99\.1\.3:51348 .* joined', timeout=20)
    summary = finish(hosts.client('sched', '10.99.1.1', 40))
    assert summary['results'] == [n * n for n in range(40)]
    assert summary['ip_addrs'] == ['10.99.1.2', '10.99.1.3']


def test_broadcast_discovery_with_the_scheduler_started_after_the_nodes(hosts):
    one_lan(hosts)
    first = hosts.node('n1')
    second = hosts.node('n2')
    first.wait_log('serving with 2 CPUs')
    second.wait_log('serving with 2 CPUs')
    time.sleep(1.5)  # their announcements at start went unheard
    scheduler = hosts.scheduler('sched', '-i', '10.99.1.1')
    scheduler.wait_log(r'node 10\.99\.1\.2:51348 .* joined', timeout=20)
    scheduler.wait_log(r'node 10\.99\.1\.3:51348 .* joined', timeout=20)
    summary = finish(hosts.client('sched', '10.99.1.1', 40))
    assert summary['results'] == [n * n for n in range(40)]
    assert summary['ip_addrs'] == ['10.99.1.2', '10.99.1.3']


def test_node_on_another_subnet_found_with_n(hosts):
    """Broadcasts do not cross a router; ``-n`` pings a node on another subnet."""
    net = hosts.net
    net.lan('lan')
    net.lan('far')
    net.router('router', [('lan', '10.99.1.254/24'), ('far', '10.99.2.254/24')])
    net.host('sched', 'lan', '10.99.1.1/24', gateway='10.99.1.254')
    net.host('n1', 'lan', '10.99.1.2/24', gateway='10.99.1.254')
    net.host('n3', 'far', '10.99.2.3/24', gateway='10.99.2.254')
    scheduler = hosts.scheduler('sched', '-i', '10.99.1.1', '-n', '*', '-n', '10.99.2.3')
    hosts.node('n1')
    hosts.node('n3')
    scheduler.wait_log(r'node 10\.99\.1\.2:51348 .* joined', timeout=20)
    scheduler.wait_log(r'node 10\.99\.2\.3:51348 .* joined', timeout=20)
    summary = finish(hosts.client('sched', '10.99.1.1', 40))
    assert summary['results'] == [n * n for n in range(40)]
    assert summary['ip_addrs'] == ['10.99.1.2', '10.99.2.3']


@pytest.mark.skipif(not netns.nat_available(),
                    reason="nftables (nft) is not installed: .ci/run installs Debian's "
                           'nftables package when it can')
def test_scheduler_behind_nat(hosts):
    """The seed's NAT setup: the scheduler on a private network behind a gateway that forwards
    TCP 51347 and 51349 and UDP 51347 to it; it announces the gateway's outside address
    (``--ext_ip_addr``); nodes and a client outside use that address."""
    net = hosts.net
    net.lan('private')
    net.lan('public')
    net.router('gateway', [('private', '10.99.3.1/24'), ('public', '10.99.4.1/24')])
    net.forward_ports('gateway', '10.99.4.1', '10.99.3.2', tcp_ports=(51347, 51349),
                      udp_ports=(51347,))
    net.host('sched', 'private', '10.99.3.2/24', gateway='10.99.3.1')
    net.host('n1', 'public', '10.99.4.5/24')
    net.host('n2', 'public', '10.99.4.6/24')
    net.host('user', 'public', '10.99.4.7/24')
    scheduler = hosts.scheduler('sched', '-i', '10.99.3.2', '--ext_ip_addr', '10.99.4.1',
                                '-n', '10.99.4.5')
    scheduler.wait_log('serving nodes')
    pinged = hosts.node('n1')  # found by the scheduler's ping through the gateway
    told = hosts.node('n2', '--scheduler_node', '10.99.4.1')  # told where it is
    pinged.wait_log('pinged by scheduler at 10.99.4.1:51347', timeout=20)
    scheduler.wait_log(r'node 10\.99\.4\.5:51348 .* joined', timeout=20)
    scheduler.wait_log(r'node 10\.99\.4\.6:51348 .* joined', timeout=20)
    told.wait_log('linked to scheduler at 10.99.4.1:51347')
    summary = finish(hosts.client('user', '10.99.4.1', 40))
    assert summary['results'] == [n * n for n in range(40)]
    assert summary['ip_addrs'] == ['10.99.4.5', '10.99.4.6']


def test_link_down_mid_run_and_back(hosts):
    """A node whose cable is pulled mid-run is presumed dead after 5 x pulse_interval (1 s
    here); its reentrant jobs finish on the other node; with the cable back it rejoins, is
    told to drop what it held, and every result reaches the client once."""
    one_lan(hosts)
    scheduler = hosts.scheduler('sched', '-i', '10.99.1.1')
    hosts.node('n1')
    hosts.node('n2')
    scheduler.wait_log(r'node 10\.99\.1\.2:51348 .* joined', timeout=20)
    scheduler.wait_log(r'node 10\.99\.1\.3:51348 .* joined', timeout=20)
    program = hosts.client('sched', '10.99.1.1', 12, seconds=2, reentrant=True)
    try:
        assert program.stdout.readline().strip() == b'submitted'
        time.sleep(1)  # both nodes run jobs
        hosts.net.link('n1', 'lan', up=False)
        cut = time.monotonic()
        scheduler.wait_log(r'node 10\.99\.1\.2:51348 lost: no pulse', timeout=20)
        detected = time.monotonic() - cut
        assert 3 <= detected < 5 + 3, detected  # 5 pulses of 1 s, give or take one
        hosts.net.link('n1', 'lan', up=True)
        summary = finish(program)
    finally:
        program.kill()
        program.wait()
    assert summary['results'] == [n * n for n in range(12)]
    assert summary['ended'] == [1] * 12
    wait_for(lambda: scheduler.log().count('node 10.99.1.2:51348 (') >= 2, 30,
             'the node to rejoin')


@pytest.mark.skipif(not netns.nat_available(),
                    reason="nftables (nft) is not installed: .ci/run installs Debian's "
                           'nftables package when it can')
def test_discovery_when_most_pings_are_lost(hosts):
    """Pings repeat every --ping_interval: a node that loses 80 % of them still joins."""
    one_lan(hosts)
    netns.drop_udp(hosts.net, 'n1', 51348, 80)
    scheduler = hosts.scheduler('sched', '-i', '10.99.1.1')
    scheduler.wait_log('serving nodes')
    hosts.node('n1')
    scheduler.wait_log(r'node 10\.99\.1\.2:51348 .* joined', timeout=60)
    summary = finish(hosts.client('sched', '10.99.1.1', 10))
    assert summary['ip_addrs'] == ['10.99.1.2']


JOBCLUSTER = '''
import json, sys, threading
import dispyscheduler as dispy

def compute(n):
    return n * n

options = json.loads(sys.argv[1])
wanted = options.pop('wait_for_nodes', 1)
ready = threading.Semaphore(0)

def cluster_status(status, node, job):
    if status == dispy.DispyNode.Initialized:
        ready.release()

cluster = dispy.JobCluster(compute, secret=%r, ping_interval=1, cluster_status=cluster_status,
                           **options)
for _ in range(wanted):  # every node there before the jobs, so that each gets some
    assert ready.acquire(timeout=60)
jobs = [cluster.submit(n) for n in range(40)]
cluster.wait()
print(json.dumps({'results': [job.result for job in jobs],
                  'ip_addrs': sorted({job.ip_addr for job in jobs if job.ip_addr})}))
cluster.close()
''' % NODE_SECRET


def jobcluster(hosts, on, **options):
    """A JobCluster program (dispy's, changed only in its import) on host ``on``."""
    import subprocess
    script = os.path.join(hosts.directory, 'jobcluster.py')
    with open(script, 'w') as handle:
        handle.write(JOBCLUSTER)
    return subprocess.Popen(hosts.net.command(on, [sys.executable, script,
                                                     json.dumps(options)]),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=hosts.directory, env=dict(os.environ, PYTHONPATH=REPO))


def test_jobcluster_finds_nodes_on_its_lan_by_broadcast(hosts):
    """dispy's JobCluster(compute): nodes '*' by default, found by broadcast."""
    one_lan(hosts)
    for host in ('n1', 'n2'):
        hosts.node(host).wait_log('serving with 2 CPUs')
    summary = finish(jobcluster(hosts, 'sched', wait_for_nodes=2))
    assert summary['results'] == [n * n for n in range(40)]
    assert summary['ip_addrs'] == ['10.99.1.2', '10.99.1.3']


def test_jobcluster_finds_a_node_on_another_subnet_by_name(hosts):
    net = hosts.net
    net.lan('lan')
    net.lan('far')
    net.router('router', [('lan', '10.99.1.254/24'), ('far', '10.99.2.254/24')])
    net.host('sched', 'lan', '10.99.1.1/24', gateway='10.99.1.254')
    net.host('n3', 'far', '10.99.2.3/24', gateway='10.99.2.254')
    hosts.node('n3').wait_log('serving with 2 CPUs')
    summary = finish(jobcluster(hosts, 'sched', nodes=['10.99.2.3']))
    assert summary['results'] == [n * n for n in range(40)]
    assert summary['ip_addrs'] == ['10.99.2.3']


@pytest.mark.skipif(not netns.nat_available(),
                    reason="nftables (nft) is not installed: .ci/run installs Debian's "
                           'nftables package when it can')
def test_jobcluster_behind_nat_with_ext_ip_addr(hosts):
    """The program on a private network behind a gateway that forwards its port
    (``dispy_port``, TCP and UDP); it announces the gateway's address (``ext_ip_addr``)."""
    net = hosts.net
    net.lan('private')
    net.lan('public')
    net.router('gateway', [('private', '10.99.3.1/24'), ('public', '10.99.4.1/24')])
    net.forward_ports('gateway', '10.99.4.1', '10.99.3.2', tcp_ports=(51350,),
                      udp_ports=(51350,))
    net.host('sched', 'private', '10.99.3.2/24', gateway='10.99.3.1')
    net.host('n1', 'public', '10.99.4.5/24')
    node = hosts.node('n1')
    node.wait_log('serving with 2 CPUs')
    summary = finish(jobcluster(hosts, 'sched', nodes=['10.99.4.5'], host='10.99.3.2',
                                ext_ip_addr='10.99.4.1', dispy_port=51350))
    assert summary['results'] == [n * n for n in range(40)]
    assert summary['ip_addrs'] == ['10.99.4.5']
    node.wait_log('pinged by scheduler at 10.99.4.1:51350')


def run_example(hosts, on, name, changes):
    """One of dispy 4.15.2's example programs as a JobCluster program on host ``on``, changed
    only in its import and sleep lengths (``changes``): it finds the LAN's nodes as dispy's
    does, by broadcast."""
    import subprocess

    from test_dispy_examples import EXAMPLES, example_source, replace, use_dispyscheduler
    for entry in os.listdir(EXAMPLES):
        if entry.endswith('.py'):
            with open(os.path.join(EXAMPLES, entry)) as source, \
                    open(os.path.join(hosts.directory, entry), 'w') as copy:
                copy.write(source.read())
    with open(os.path.join(hosts.directory, name + '.py'), 'w') as handle:
        handle.write(use_dispyscheduler(replace(example_source(name), changes)))
    result = subprocess.run(hosts.net.command(on, [sys.executable, name + '.py']),
                            capture_output=True, text=True, timeout=120, cwd=hosts.directory,
                            env=dict(os.environ, PYTHONPATH=REPO))
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_dispy_example_programs_as_jobcluster_programs(hosts):
    """sample.py (which never closes its cluster), obj_instances.py and node_shvars.py with
    their JobCluster, on a LAN whose nodes run with dispy's default (empty) secret."""
    one_lan(hosts)
    for host in ('n1', 'n2'):
        hosts.node(host, '-s', '').wait_log('serving with 2 CPUs')
    stdout = run_example(hosts, 'sched', 'sample', [('time.sleep(n)', 'time.sleep(n / 20)')])
    lines = re.findall(r'^\S+ \((10\.99\.1\.\d)\) executed job (\d+) at [\d.]+ with (\d+)$',
                       stdout, re.M)
    assert [int(job) for _, job, _ in lines] == list(range(1, 11)), stdout
    assert {ip for ip, _, _ in lines} <= {'10.99.1.2', '10.99.1.3'}
    assert all(5 <= int(n) <= 20 for _, _, n in lines)
    stdout = run_example(hosts, 'sched', 'obj_instances',
                         [('time.sleep(obj.n)', 'time.sleep(obj.n / 10)')])
    shown = re.findall(r'^(\d+): (\d+\.\d\d) / (\d+): (\d+\.\d\d)$', stdout, re.M)
    assert [int(i) for i, _, _, _ in shown] == list(range(10)), stdout
    assert all((i, result) == (again, printed) for i, result, again, printed in shown)
    stdout = run_example(hosts, 'sched', 'node_shvars', [])
    assert [int(job) for job in re.findall(r'^(\d+): \d+$', stdout, re.M)] == \
        list(range(1, 11)), stdout
    assert not [name for name in os.listdir(hosts.directory) if name.endswith('.state')]
