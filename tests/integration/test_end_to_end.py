"""The whole path, real: scheduler and nodes as subprocesses on loopback, clients connecting.

Scheduler on 127.0.0.1, nodes on 127.0.0.2 and 127.0.0.3, each its own address; real sockets
and real worker processes. The ``daemons`` fixture fails a test that leaves a process behind.
"""

import json
import logging
import os
import signal
import subprocess
import sys
import time

import pytest
from certs import self_signed
from daemons import BIN, CLUSTER_SECRET, REPO, wait_for

from dispyscheduler import AuthenticationError, DispyJob, SharedJobCluster

HERE = os.path.dirname(os.path.abspath(__file__))


def square(n):
    return n * n


def fails_on_odd(n):
    if n % 2:
        raise ValueError('odd input %d' % n)
    return n


def nap(seconds, tag):
    import time
    time.sleep(seconds)
    return tag


def run_client_program(daemons, count, offset):
    return subprocess.Popen(
        [sys.executable, os.path.join(HERE, 'client_program.py'), str(daemons.scheduler_port),
         CLUSTER_SECRET, str(count), str(offset)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=REPO))


def test_two_client_programs_at_once(daemons):
    """Two programs, 200 jobs each: every result exact, seen once, and both nodes used."""
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2')
    daemons.start_node('127.0.0.3')
    programs = [run_client_program(daemons, 200, offset) for offset in (0, 1000000)]
    for program, offset in zip(programs, (0, 1000000)):
        out, err = program.communicate(timeout=120)
        assert program.returncode == 0, err.decode()
        summary = json.loads(out)
        assert summary['results'] == [n * n + offset for n in range(200)]
        assert set(summary['statuses']) == {DispyJob.Finished}
        assert summary['exceptions'] == []
        assert summary['final_callbacks'] == [1] * 200
        assert summary['ip_addrs'] == ['127.0.0.2', '127.0.0.3']
        # worker processes are reused: two nodes x two CPUs, not a process per job
        assert summary['worker_pids'] <= 4


def test_fair_share_between_clusters(daemons):
    """A cluster submitting 10 jobs behind another's long queue gets them through promptly."""
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2')
    daemons.start_node('127.0.0.3')
    big = SharedJobCluster(nap, **daemons.client_options())
    small = SharedJobCluster(nap, **daemons.client_options())
    try:
        big_jobs = [big.submit(0.05, i) for i in range(1000)]
        wait_for(lambda: any(job.status == DispyJob.Finished for job in big_jobs), 30,
                 'the big cluster to start')
        started = time.monotonic()
        small_jobs = [small.submit(0.05, i) for i in range(10)]
        assert small.wait(timeout=30)
        took = time.monotonic() - started
        big_done = sum(job.status == DispyJob.Finished for job in big_jobs)
        assert [job.result for job in small_jobs] == list(range(10))
        # 4 CPUs, 50 ms jobs: the big queue alone would take 12 s; with fair share the 10
        # jobs take a handful of job lengths, while most of the big queue is still waiting
        assert took < 5, took
        assert big_done < 500, big_done
    finally:
        big.close(terminate=True)
        small.close()
    assert all(job.status in (DispyJob.Finished, DispyJob.Cancelled) for job in big_jobs)


def test_wrong_cluster_secret_is_refused(daemons):
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2')
    started = time.monotonic()
    with pytest.raises(AuthenticationError, match='authentication failed'):
        SharedJobCluster(square, **daemons.client_options(secret='not the secret'))
    assert time.monotonic() - started < 5
    daemons.scheduler.wait_log('client at 127.0.0.1 failed authentication')
    with SharedJobCluster(square, **daemons.client_options()) as cluster:
        assert cluster.submit(7)() == 49


def test_wrong_node_secret_is_refused(daemons):
    daemons.start_scheduler(nodes=('127.0.0.2', '127.0.0.4'))
    daemons.start_node('127.0.0.2')
    intruder = daemons.start_node('127.0.0.4', secret='not the secret', wait=False)
    intruder.wait_log('refused this node: authentication failed')
    daemons.scheduler.wait_log('node at 127.0.0.4 failed authentication')
    with SharedJobCluster(square, **daemons.client_options()) as cluster:
        jobs = [cluster.submit(n) for n in range(20)]
        cluster.wait(timeout=30)
    assert {job.ip_addr for job in jobs} == {'127.0.0.2'}
    assert 'node 127.0.0.4' not in daemons.scheduler.log()
    assert intruder.alive()


def test_job_that_raises(daemons):
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2')
    with SharedJobCluster(fails_on_odd, **daemons.client_options()) as cluster:
        jobs = [cluster.submit(n) for n in range(10)]
        cluster.wait(timeout=30)
        for n, job in enumerate(jobs):
            if n % 2:
                assert job.status == DispyJob.Terminated
                assert 'Traceback' in job.exception
                assert 'ValueError: odd input %d' % n in job.exception
                assert job.result is None
            else:
                assert job.status == DispyJob.Finished
                assert job.result == n
        # the node keeps serving
        assert cluster.submit(42)() == 42


def test_stdout_and_stderr_are_captured(daemons):
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2')

    def chatty(n):
        import sys
        print('out', n)
        sys.stderr.write('err %d\n' % n)
        return n

    with SharedJobCluster(chatty, **daemons.client_options()) as cluster:
        job = cluster.submit(5)
        assert job() == 5
    assert job.stdout == 'out 5\n'
    assert job.stderr == 'err 5\n'
    assert job.start_time <= job.end_time


def test_cancel_queued_and_running_jobs(daemons):
    """As in dispy 4.15, ``callback`` hears of ends (and provisional results) only, and
    ``cluster_status`` of every change, Running included."""
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2', cpus=1)
    statuses = []
    changes = []
    with SharedJobCluster(nap, callback=lambda job: statuses.append((job.id, job.status)),
                          cluster_status=lambda status, node, job: changes.append(
                              (job.id if job else None, status)),
                          **daemons.client_options()) as cluster:
        running = cluster.submit(30, 'long')
        queued = [cluster.submit(30, n) for n in range(3)]
        wait_for(lambda: running.status == DispyJob.Running, 20, 'the first job to run')
        assert cluster.cancel(queued[-1]) == 0
        assert cluster.cancel(running) == 0
        for job in queued[:-1]:
            cluster.cancel(job)
        assert cluster.wait(timeout=20)
        assert running.status == DispyJob.Cancelled
        assert all(job.status == DispyJob.Cancelled for job in queued)
        assert cluster.cancel(running) == -1
        # the node's CPU is free again: a new job runs at once
        after = cluster.submit(0, 'after')
        assert after() == 'after'
    assert (running.id, DispyJob.Running) in changes
    assert sorted(statuses) == sorted([(job.id, DispyJob.Cancelled) for job in [running] + queued]
                                      + [(after.id, DispyJob.Finished)])


def test_node_lost_cancels_or_requeues(daemons):
    """A node that dies: its jobs are cancelled, naming the node, unless the cluster is
    reentrant, in which case they run elsewhere."""
    daemons.start_scheduler()
    doomed = daemons.start_node('127.0.0.2', cpus=1)
    plain = SharedJobCluster(nap, nodes=['127.0.0.2'], **daemons.client_options())
    reentrant = SharedJobCluster(nap, reentrant=True, **daemons.client_options())
    try:
        lost = plain.submit(30, 'lost')
        moved = reentrant.submit(5, 'moved')
        # one CPU, two jobs in flight: one runs, the other waits on the same node
        wait_for(lambda: lost.status == DispyJob.Running or moved.status == DispyJob.Running,
                 20, 'a job to run on the doomed node')
        daemons.start_node('127.0.0.3', cpus=1)
        doomed.process.kill()
        assert lost() is None
        assert lost.status == DispyJob.Cancelled
        assert '127.0.0.2' in lost.exception
        assert moved() == 'moved'
        assert moved.ip_addr == '127.0.0.3'
    finally:
        plain.close()
        reentrant.close()


def test_scheduler_and_nodes_with_tls(daemons, tmp_path):
    """TLS on both links (self-signed certificates): a whole run."""
    cert, key = self_signed(tmp_path)
    daemons.start_scheduler('--node_certfile', cert, '--node_keyfile', key,
                            '--cluster_certfile', cert, '--cluster_keyfile', key)
    daemons.start_node('127.0.0.2', '--certfile', cert, '--keyfile', key)
    with SharedJobCluster(square, certfile=cert, keyfile=key,
                          **daemons.client_options()) as cluster:
        jobs = [cluster.submit(n) for n in range(50)]
        assert [job() for job in jobs] == [n * n for n in range(50)]
    with pytest.raises(ConnectionError, match='TLS'):
        SharedJobCluster(square, **daemons.client_options())


def test_ext_ip_addr_is_announced(daemons):
    """Pings announce --ext_ip_addr (paired with the first -i): nodes connect there."""
    daemons.start_scheduler('-i', '127.0.0.6', '--ext_ip_addr', '127.0.0.6')
    node = daemons.start_node('127.0.0.2', scheduler=None)
    node.wait_log('pinged by scheduler at 127.0.0.6')
    with SharedJobCluster(square, **daemons.client_options()) as cluster:
        assert cluster.submit(3)() == 9


@pytest.mark.parametrize('program, argv, complaint', [
    ('dispyscheduler', ['--pulse_interval', '0'], 'between 1 and 600'),
    ('dispyscheduler', ['--pulse_interval', '601'], 'between 1 and 600'),
    ('dispyscheduler', ['--ping_interval', 'often'], 'not a number'),
    ('dispyscheduler', ['--port', '70000'], 'between 1 and 65535'),
    ('dispyscheduler', ['--max_file_size', 'big'], 'not a size'),
    ('dispyscheduler', ['--node_certfile', '/nonexistent/cert.pem'], 'cannot read'),
    ('dispyscheduler', ['--no_such_option'], 'unrecognized arguments'),
    ('dispynode', ['--cpus', 'many'], 'invalid int'),
    ('dispynode', ['--cpus', '-1000'], 'leaves no CPU'),
    ('dispynode', ['-i', 'no.such.host.invalid'], 'cannot resolve'),
    ('dispynode', ['--zombie_interval', '0'], 'between'),
])
def test_invalid_command_line_exits_2(program, argv, complaint, tmp_path):
    result = subprocess.run([sys.executable, os.path.join(BIN, program)] + argv
                            + ['--dest_path_prefix', str(tmp_path)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2, result
    assert result.stdout == ''
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert complaint in lines[0]


def prepare():
    global table
    table = {n: n * 10 for n in range(100)}
    return 0


def look_up(n):
    import os
    return table[n], os.getpid()


def test_setup_runs_once_per_node_and_jobs_see_its_globals(daemons):
    """setup runs in the computation's setup process; worker processes forked from it share
    its globals, and are reused across jobs."""
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2')
    with SharedJobCluster(look_up, setup=prepare, **daemons.client_options()) as cluster:
        jobs = [cluster.submit(n) for n in range(40)]
        cluster.wait(timeout=30)
    assert [job.result[0] for job in jobs] == [n * 10 for n in range(40)]
    assert len({job.result[1] for job in jobs}) <= 2


def test_silent_node_is_presumed_dead_and_used_again_when_back(daemons):
    """A node that stops answering (SIGSTOP: no reset, no close) is dropped after
    5 x --pulse_interval (1 s here); its reentrant job runs elsewhere; once it answers again
    it rejoins and takes jobs."""
    daemons.start_scheduler()
    silent = daemons.start_node('127.0.0.2', cpus=1)
    with SharedJobCluster(nap, reentrant=True, nodes=['127.0.0.*'],
                          **daemons.client_options()) as cluster:
        job = cluster.submit(3, 'survived')
        wait_for(lambda: job.status == DispyJob.Running, 20, 'the job to run')
        daemons.start_node('127.0.0.3', cpus=1)
        os.kill(silent.pid, signal.SIGSTOP)
        try:
            stopped = time.monotonic()
            daemons.scheduler.wait_log(r'node 127\.0\.0\.2:\d+ lost: no pulse', timeout=20)
            assert 4 <= time.monotonic() - stopped < 12
            assert job() == 'survived'
            assert job.ip_addr == '127.0.0.3'
        finally:
            os.kill(silent.pid, signal.SIGCONT)
        wait_for(lambda: daemons.scheduler.log().count('node 127.0.0.2') >= 3, 20,
                 'the node to join again')
        jobs = [cluster.submit(0.2, n) for n in range(8)]
        cluster.wait(timeout=30)
        assert {job.ip_addr for job in jobs} == {'127.0.0.2', '127.0.0.3'}


def test_node_started_before_its_scheduler_joins_when_it_appears(daemons):
    """--scheduler_node: the node keeps trying, with back-off, until the scheduler is there."""
    node = daemons.start_node('127.0.0.2', wait=False)
    node.wait_log('cannot reach scheduler at 127.0.0.1')
    daemons.start_scheduler()
    daemons.scheduler.wait_log(r'node 127\.0\.0\.2:\d+ .* joined', timeout=20)
    with SharedJobCluster(square, **daemons.client_options()) as cluster:
        assert cluster.submit(4)() == 16


def test_cluster_without_nodes_warns_its_client_and_job_can_time_out(daemons, caplog):
    daemons.start_scheduler(nodes=('127.0.0.9',))
    with caplog.at_level(logging.WARNING, logger='dispyscheduler'):
        with SharedJobCluster(square, nodes=['127.0.0.7'], **daemons.client_options()) as cluster:
            job = cluster.submit(3)
            started = time.monotonic()
            assert job(timeout=1) is None
            assert 1 <= time.monotonic() - started < 3
            wait_for(lambda: 'no node has set up this cluster' in caplog.text, 20,
                     'the warning')
            cluster.close(terminate=True)
    assert 'its nodes are 127.0.0.7' in caplog.text
    assert job.status == DispyJob.Cancelled
