"""Every submitted job ends in exactly one final state that the client sees once, whatever
fails: nodes killed or frozen, the scheduler killed and restarted, the client killed, daemons
stopped. Real processes on loopback; each test counts jobs and checks that none is lost and
none is reported twice.
"""

import collections
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

from daemons import CLUSTER_SECRET, REPO, wait_for

from dispyscheduler import DispyJob, SharedJobCluster, recover_jobs

HERE = os.path.dirname(os.path.abspath(__file__))
FINAL = (DispyJob.Finished, DispyJob.Terminated, DispyJob.Cancelled, DispyJob.Abandoned)


def nap(seconds, tag):
    import time
    time.sleep(seconds)
    return tag


class FinalCounter:
    """A callback that counts how often each job is reported ended."""

    def __init__(self):
        self.counts = collections.Counter()

    def __call__(self, job):
        if job.status in FINAL:
            self.counts[job.id] += 1


def test_node_killed_while_running_jobs(daemons):
    """kill -9 of a node's whole process group: a reentrant cluster still finishes every job;
    a plain one gets Cancelled (naming the node) for the jobs that were there, Finished for
    the rest, and nothing stays pending."""
    daemons.start_scheduler()
    doomed = daemons.start_node('127.0.0.2')
    daemons.start_node('127.0.0.3')
    counted = FinalCounter(), FinalCounter()
    reentrant = SharedJobCluster(nap, reentrant=True, callback=counted[0],
                                 **daemons.client_options())
    plain = SharedJobCluster(nap, callback=counted[1], **daemons.client_options())
    try:
        moved = [reentrant.submit(0.3, n) for n in range(20)]
        stayed = [plain.submit(0.3, n) for n in range(20)]
        wait_for(lambda: any(job.status == DispyJob.Running and job.ip_addr == '127.0.0.2'
                             for job in stayed), 20, 'a plain job to run on the doomed node')
        doomed.kill()
        assert reentrant.wait(timeout=60) and plain.wait(timeout=60)
    finally:
        reentrant.close()
        plain.close()
    assert [job.result for job in moved] == list(range(20))
    assert counted[0].counts == {job.id: 1 for job in moved}
    cancelled = [job for job in stayed if job.status == DispyJob.Cancelled]
    assert cancelled, 'no plain job was on the killed node'
    assert all('127.0.0.2' in job.exception and 'lost' in job.exception for job in cancelled)
    finished = [job for job in stayed if job.status == DispyJob.Finished]
    assert len(cancelled) + len(finished) == 20
    assert all(job.result == n for n, job in enumerate(stayed) if job in finished)
    assert counted[1].counts == {job.id: 1 for job in stayed}


def test_scheduler_killed_and_restarted_with_the_same_state(daemons, tmp_path):
    """kill -9 of the scheduler mid-run; started again with the same --state_dir, it reloads
    its state; nodes and the client program (started before the kill) reconnect on their own,
    and the program gets every result once."""
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2')
    daemons.start_node('127.0.0.3')
    program = subprocess.Popen(
        [sys.executable, os.path.join(HERE, 'client_program.py'), str(daemons.scheduler_port),
         CLUSTER_SECRET, '1500', '7'], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        cwd=str(tmp_path), env=dict(os.environ, PYTHONPATH=REPO))
    try:
        daemons.scheduler.wait_log('cluster 1 ')
        time.sleep(1)  # jobs are running, some results are in, most are still to come
        daemons.scheduler.kill()
        time.sleep(0.5)
        restarted = daemons.start_scheduler(name='scheduler-restarted')
        restarted.wait_log(r'restored 1 clusters')
        out, err = program.communicate(timeout=120)
    finally:
        program.kill()
        program.wait()
    assert program.returncode == 0, err.decode()[-3000:]
    summary = json.loads(out)
    assert summary['results'] == [n * n + 7 for n in range(1500)]
    assert summary['final_callbacks'] == [1] * 1500
    assert 'reconnected to the scheduler' in err.decode()
    restarted.wait_log(r'node 127\.0\.0\.2:\d+ .* joined')


RECOVERY_PROGRAM = '''
import sys, time
from dispyscheduler import SharedJobCluster

def slow(n):
    import time
    time.sleep(1.5)
    return n * 10

cluster = SharedJobCluster(slow, scheduler_node='127.0.0.1', scheduler_port=int(sys.argv[1]),
                           secret=sys.argv[2], recover_file='recover.json')
for n in range(12):
    cluster.submit_job_id('job-%d' % n, n)
cluster.wait(timeout=0.5)
print('submitted', flush=True)
time.sleep(60)
'''


def run_and_kill_a_client(daemons, directory):
    """Run RECOVERY_PROGRAM and kill it once it has submitted its jobs."""
    script = directory / 'doomed_client.py'
    script.write_text(RECOVERY_PROGRAM)
    doomed = subprocess.Popen([sys.executable, str(script), str(daemons.scheduler_port),
                               CLUSTER_SECRET], stdout=subprocess.PIPE, cwd=str(directory),
                              env=dict(os.environ, PYTHONPATH=REPO))
    try:
        assert doomed.stdout.readline().strip() == b'submitted'
    finally:
        doomed.kill()
        doomed.wait()


def test_client_killed_and_its_results_collected_by_another_process(daemons, tmp_path):
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2')
    daemons.start_node('127.0.0.3')
    run_and_kill_a_client(daemons, tmp_path)
    jobs = recover_jobs(str(tmp_path / 'recover.json'), secret=CLUSTER_SECRET, timeout=60)
    assert sorted(job.id for job in jobs) == sorted('job-%d' % n for n in range(12))
    assert all(job.status == DispyJob.Finished for job in jobs)
    assert {job.id: job.result for job in jobs} == {'job-%d' % n: n * 10 for n in range(12)}
    assert not (tmp_path / 'recover.json').exists()  # collected: the cluster is closed
    daemons.scheduler.wait_log('cluster 1 .* closed')


def test_frozen_node_is_presumed_dead_and_given_no_duplicate_work(daemons):
    """SIGSTOP: no close, no reset. After 5 x pulse_interval the node is presumed dead and its
    reentrant job runs elsewhere; on SIGCONT the node rejoins, is told to drop the job it still
    holds, and the job's result reaches the client once."""
    daemons.start_scheduler()
    frozen = daemons.start_node('127.0.0.2', cpus=1)
    counted = FinalCounter()
    with SharedJobCluster(nap, reentrant=True, callback=counted,
                          **daemons.client_options()) as cluster:
        job = cluster.submit(4, 'once')
        wait_for(lambda: job.status == DispyJob.Running, 20, 'the job to run')
        daemons.start_node('127.0.0.3', cpus=1)
        os.kill(frozen.pid, signal.SIGSTOP)
        try:
            daemons.scheduler.wait_log(r'node 127\.0\.0\.2:\d+ lost: no pulse', timeout=20)
        finally:
            os.kill(frozen.pid, signal.SIGCONT)
        assert job() == 'once' and job.ip_addr == '127.0.0.3'
        daemons.scheduler.wait_log(r'node 127\.0\.0\.2:\d+ came back holding 1 jobs that '
                                   r'run elsewhere now or have ended', timeout=20)
        cluster.wait()
    assert counted.counts == {job.id: 1}


def test_a_frozen_node_that_returns_finishes_the_jobs_that_waited_for_it(daemons):
    """Issue 17, 1: one node, a reentrant cluster, jobs longer than the freeze. The node is
    presumed dead while frozen (its jobs requeued, with nowhere else to go); when it returns
    still running them it keeps them, and each job ends Finished with its result, reported
    once. They once ended Cancelled: the node was told to drop them, then sent them again,
    and the kill of its old copies was taken for their end."""
    daemons.start_scheduler()
    frozen = daemons.start_node('127.0.0.2', cpus=2)
    counted = FinalCounter()
    with SharedJobCluster(nap, reentrant=True, callback=counted,
                          **daemons.client_options()) as cluster:
        jobs = [cluster.submit(10, n) for n in range(2)]
        wait_for(lambda: all(job.status == DispyJob.Running for job in jobs), 20,
                 'both jobs to run')
        os.kill(frozen.pid, signal.SIGSTOP)
        try:
            daemons.scheduler.wait_log(r'node 127\.0\.0\.2:\d+ lost: no pulse .*2 jobs requeued',
                                       timeout=20)
        finally:
            os.kill(frozen.pid, signal.SIGCONT)
        assert [job() for job in jobs] == [0, 1]
        assert [job.status for job in jobs] == [DispyJob.Finished] * 2
        daemons.scheduler.wait_log(r'node 127\.0\.0\.2:\d+ came back still running 2 jobs')
        cluster.wait()
    assert counted.counts == {job.id: 1 for job in jobs}


def start_expect_failure(daemons, name):
    scheduler = daemons.start_scheduler(wait=False, name=name)
    assert scheduler.process.wait(30) == 2
    lines = scheduler.log().strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_unusable_state_database_stops_the_scheduler_at_start(daemons, tmp_path):
    state = os.path.join(daemons.directory, 'scheduler', 'state')
    os.makedirs(state)
    database = os.path.join(state, 'state.sqlite')
    with open(database, 'wb') as handle:
        handle.write(b'this is not a database' * 100)
    assert 'not a database' in start_expect_failure(daemons, 'corrupt')
    os.unlink(database)
    connection = sqlite3.connect(database)
    connection.execute('CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB)')
    connection.execute("INSERT INTO meta VALUES ('version', 99)")
    connection.commit()
    connection.close()
    assert 'state version 99' in start_expect_failure(daemons, 'wrong-version')
    os.unlink(database)
    daemons.start_scheduler(name='fresh').stop()  # a good database, then made read-only
    if subprocess.run(['chattr', '+i', database], capture_output=True).returncode != 0:
        pytest.skip('chattr +i is not available here to make the database read-only')
    try:
        assert '%s cannot be written' % database in start_expect_failure(daemons, 'read-only')
    finally:
        subprocess.run(['chattr', '-i', database])


def test_close_while_the_scheduler_restarts_is_sent_again_and_closes(daemons, caplog):
    """``close()`` called while the scheduler is down: the request goes once the link is up
    again, the scheduler closes the cluster, and ``close()`` returns without waiting out its
    timeout; the recovery file goes only then. It once was dropped, and the cluster stayed
    open until the zombie interval."""
    import threading
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2')
    cluster = SharedJobCluster(nap, **daemons.client_options())
    try:
        assert [cluster.submit(0, n)() for n in range(3)] == [0, 1, 2]
        recover_file = cluster._recover_file
        assert os.path.exists(recover_file)
        daemons.scheduler.kill()
        closing = threading.Thread(target=cluster.close)
        closing.start()
        restarted = daemons.start_scheduler(name='scheduler-restarted')
        closing.join(60)
        assert not closing.is_alive()
        assert 'did not confirm closing' not in caplog.text  # confirmed, not timed out
        restarted.wait_log(r'cluster \d+ \(nap\) closed')
        assert not os.path.exists(recover_file)
    finally:
        cluster.close(terminate=True)


def hold(seconds, data):
    import time
    time.sleep(seconds)
    return len(data)


def test_a_full_state_disk_stops_the_scheduler_with_status_1_and_its_cause(daemons, tmp_path):
    """The state directory on a 2 MB disk that fills: the scheduler stops with exit status 1
    (a service manager restarts it) and says why in one line, not as an internal error; it
    once exited with status 0 and "cannot rollback - no transaction is active"."""
    state = tmp_path / 'small-disk'
    state.mkdir()
    if subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=2m', 'tmpfs', str(state)],
                      capture_output=True).returncode != 0:
        pytest.skip('cannot mount a 2 MB tmpfs here (it needs root)')
    try:
        scheduler = daemons.start_scheduler('--state_dir', str(state))
        daemons.start_node('127.0.0.2', cpus=1)
        cluster = SharedJobCluster(hold, **daemons.client_options(reconnect_timeout=5))
        try:
            for _ in range(60):  # 6 MB of arguments to keep, for jobs that wait their turn
                cluster.submit(60, b'x' * 100000)
            wait_for(lambda: not scheduler.alive(), 60, 'the scheduler to stop')
        finally:
            cluster.close(terminate=True)
        assert scheduler.process.returncode == 1
        log = scheduler.log()
        assert re.search(r'cannot write the state database \S+: database or disk is full; '
                         r'stopping', log), log[-3000:]
        assert 'internal error' not in log and 'Traceback' not in log, log[-3000:]
    finally:
        subprocess.run(['umount', '-l', str(state)], capture_output=True)


def test_a_state_directory_made_immutable_stops_the_scheduler_with_its_cause(daemons):
    """``chattr -R +i`` on the state directory of a running scheduler once killed it with
    SIGBUS (a write to the mapped WAL index) and nothing in the log. Now it stops with status
    1 and the cause in one line; made writable again and restarted, it finishes every job."""
    state = os.path.join(daemons.directory, 'scheduler', 'state')
    scheduler = daemons.start_scheduler()
    daemons.start_node('127.0.0.2')
    counted = FinalCounter()
    cluster = SharedJobCluster(nap, callback=counted,
                               **daemons.client_options(reconnect_timeout=30))
    try:
        assert cluster.submit(0, 'first')() == 'first'
        if subprocess.run(['chattr', '-R', '+i', state], capture_output=True).returncode:
            pytest.skip('chattr +i is not available here')
        try:
            jobs = [cluster.submit(0.01, n) for n in range(200)]
            wait_for(lambda: not scheduler.alive(), 60, 'the scheduler to stop')
        finally:
            subprocess.run(['chattr', '-R', '-i', state])
        assert scheduler.process.returncode == 1
        log = scheduler.log()
        assert re.search(r'cannot write the state database \S+: .*; stopping', log), log[-3000:]
        assert 'Traceback' not in log, log[-3000:]
        daemons.start_scheduler(name='restarted')
        assert cluster.wait(120)
    finally:
        cluster.close(terminate=True)  # (nothing is left to terminate when it passes)
    assert [job.result for job in jobs] == list(range(200))
    assert all(job.status == DispyJob.Finished for job in jobs)
    assert set(counted.counts.values()) == {1}


def test_sigterm_of_the_scheduler_saves_state_and_a_restart_resumes(daemons):
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2')
    counted = FinalCounter()
    with SharedJobCluster(nap, callback=counted, **daemons.client_options()) as cluster:
        jobs = [cluster.submit(0.2, n) for n in range(30)]
        wait_for(lambda: sum(job.status == DispyJob.Finished for job in jobs) >= 3, 20,
                 'some jobs to finish')
        started = time.monotonic()
        daemons.scheduler.process.send_signal(signal.SIGTERM)
        assert daemons.scheduler.process.wait(10) == 0
        assert time.monotonic() - started < 5
        daemons.start_scheduler(name='scheduler-again')
        assert cluster.wait(timeout=60)
    assert [job.result for job in jobs] == list(range(30))
    assert counted.counts == {job.id: 1 for job in jobs}


def test_sigterm_of_a_node_hands_back_its_unstarted_jobs(daemons):
    """A node told to stop finishes the job it runs and hands back the ones it had not
    started; they run elsewhere and nothing is lost."""
    daemons.start_scheduler()
    leaving = daemons.start_node('127.0.0.2', cpus=1)
    counted = FinalCounter()
    with SharedJobCluster(nap, nodes=['127.0.0.*'], callback=counted,
                          **daemons.client_options()) as cluster:
        first = cluster.submit(2, 'first')
        wait_for(lambda: first.status == DispyJob.Running, 20, 'the first job to run')
        rest = [cluster.submit(0.1, n) for n in range(6)]
        time.sleep(0.3)  # one of them waits on the node (dispatch depth 2)
        daemons.start_node('127.0.0.3', cpus=1)
        leaving.process.send_signal(signal.SIGTERM)
        assert first() == 'first' and first.ip_addr == '127.0.0.2'
        assert cluster.wait(timeout=30)
        assert leaving.process.wait(20) == 0
    assert [job.result for job in rest] == list(range(6))
    assert all(job.ip_addr == '127.0.0.3' for job in rest)
    assert counted.counts == {job.id: 1 for job in [first] + rest}
    daemons.scheduler.wait_log('unstarted jobs handed back')


def kill_my_node(tag):
    """A job that kills the node daemon running it (its worker's host's parent)."""
    import os
    import signal
    host = os.getppid()
    with open('/proc/%d/stat' % host) as handle:
        daemon = int(handle.read().rsplit(')', 1)[1].split()[1])
    os.kill(daemon, signal.SIGKILL)
    time.sleep(30)
    return tag


def test_a_job_that_kills_its_nodes_is_abandoned_after_three(daemons):
    daemons.start_scheduler()
    for address in ('127.0.0.2', '127.0.0.3', '127.0.0.4'):
        daemons.start_node(address, cpus=1)
    with SharedJobCluster(kill_my_node, reentrant=True, nodes=['127.0.0.*'],
                          **daemons.client_options()) as cluster:
        job = cluster.submit('deadly')
        job()
    assert job.status == DispyJob.Abandoned
    assert 'lost 3 nodes' in job.exception


def test_gone_clients_cluster_frees_its_nodes_and_keeps_its_results(daemons, tmp_path):
    """After --zombie_interval with its client gone and nothing left to run, a cluster's
    nodes are freed, but its undelivered results stay for recover_jobs."""
    daemons.start_scheduler('--zombie_interval', '0.05')  # 3 seconds
    node = daemons.start_node('127.0.0.2')
    run_and_kill_a_client(daemons, tmp_path)
    daemons.scheduler.wait_log(r'freeing its nodes, keeping 12 results', timeout=60)
    node.wait_log('uninstalled computation 1')
    jobs = recover_jobs(str(tmp_path / 'recover.json'), secret=CLUSTER_SECRET, timeout=30)
    assert {job.id: job.result for job in jobs} == {'job-%d' % n: n * 10 for n in range(12)}


def test_a_scheduler_frozen_for_a_while_does_not_take_its_nodes_for_dead(daemons):
    """Found by the chaos soak: a scheduler stopped (SIGSTOP) for longer than 5 pulse
    intervals presumed every node dead the moment it went on, before reading the pulses
    waiting in its sockets, and ran their jobs again for nothing."""
    scheduler = daemons.start_scheduler()
    daemons.start_node('127.0.0.2')
    counted = FinalCounter()
    with SharedJobCluster(nap, callback=counted, **daemons.client_options()) as cluster:
        jobs = [cluster.submit(0.5, n) for n in range(8)]
        wait_for(lambda: any(job.status == DispyJob.Running for job in jobs), 30, 'a job to run')
        os.kill(scheduler.pid, signal.SIGSTOP)
        try:
            time.sleep(7)  # the fault itself: more than 5 missed pulses of 1 s
        finally:
            os.kill(scheduler.pid, signal.SIGCONT)
        assert cluster.wait(60)
    assert [job.result for job in jobs] == list(range(8))
    assert set(counted.counts.values()) == {1}
    log = scheduler.log()
    assert 'no pulse' not in log and 'requeued' not in log, log[-3000:]
    assert 'the scheduler was stalled for' in log
