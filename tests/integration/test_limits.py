"""What one user can make the scheduler hold is bounded (issue 17, 6): results a client does not
read wait on disk, not in memory; submissions beyond a cluster's limits wait in ``submit()``.
Real daemons on loopback; memory is read from /proc."""

import json
import os
import signal
import textwrap
import threading
import time
import urllib.request

import pytest
from test_hostile_input import authenticated_client, new_cluster_message

from daemons import CLUSTER_SECRET, free_ports, wait_for

from dispyscheduler import DispyJob, SharedJobCluster
from dispyscheduler.wire.messages import ClusterOk, JobEnd, Submit

MB = 1024 * 1024


def rss(pid):
    """Resident memory of a process, in bytes."""
    with open('/proc/%d/status' % pid) as handle:
        for line in handle:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) * 1024
    raise AssertionError('no VmRSS for %d' % pid)


def cluster_status(port):
    with urllib.request.urlopen('http://127.0.0.1:%d/status' % port, timeout=10) as reply:
        return json.loads(reply.read())['clusters']


CLIENT = textwrap.dedent('''
    import sys
    from dispyscheduler import SharedJobCluster

    def megabyte(n):
        return bytes([n % 256]) * 1000000

    port, secret, count = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    cluster = SharedJobCluster(megabyte, scheduler_node='127.0.0.1', scheduler_port=port,
                               secret=secret)
    jobs = [cluster.submit(n) for n in range(count)]
    print('submitted', flush=True)
    wrong = [job.id for job in jobs if job() != megabyte(job.id - 1)]
    print('results', len(jobs), 'wrong', wrong, flush=True)
    cluster.close()
''')


def test_results_a_frozen_client_does_not_read_wait_on_disk(daemons, tmp_path):
    """A client that stops reading while 400 results of 1 MB finish once took the scheduler
    to a gigabyte, kept after the client left. Now the results beyond RESULT_WINDOW (32 MiB)
    wait in the state database, results wait on their nodes while more than
    MAX_UNSAVED_BYTES (32 MiB) wait to be saved, and the client gets every one when it reads
    again."""
    (http_port,) = free_ports(1)
    scheduler = daemons.start_scheduler('--httpd', '127.0.0.1:%d' % http_port)
    daemons.start_node('127.0.0.2')
    daemons.start_node('127.0.0.3')
    before = rss(scheduler.pid)
    client = daemons.spawn('client', ['-c', CLIENT, str(daemons.scheduler_port),
                                      CLUSTER_SECRET, '400'])
    client.wait_log('submitted', timeout=60)
    os.kill(client.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: [cluster['done'] for cluster in cluster_status(http_port)] == [400],
                 120, 'the 400 jobs to end')
        held = rss(scheduler.pid) - before
        undelivered = cluster_status(http_port)[0]['undelivered']
    finally:
        os.kill(client.pid, signal.SIGCONT)
    print('scheduler memory: %d MB more with %d results undelivered' % (held // MB, undelivered))
    assert undelivered > 200, 'the client read most results before it froze: no test'
    assert held < 160 * MB, 'the scheduler holds %d MB for %d undelivered results' % (
        held // MB, undelivered)
    client.wait_log(r'results 400 wrong \[\]', timeout=120)
    assert client.process.wait(60) == 0
    wait_for(lambda: cluster_status(http_port) == [], 30, 'the cluster to close')
    kept = rss(scheduler.pid) - before
    print('scheduler memory after: %d MB more' % (kept // MB))
    # (malloc may keep up to runtime.memory.TRIM_THRESHOLD free at the top of its heap)
    assert kept < 64 * MB, 'the scheduler kept %d MB after the cluster closed' % (kept // MB)


def nap_and_echo(n, data=b''):
    import time
    time.sleep(0.01)
    return n, len(data)


def test_submit_waits_for_room_within_the_clusters_limits(daemons):
    """200,000 jobs of 1 KB once took the scheduler from 44 to 375 MB, kept after the cluster
    closed. The scheduler now holds at most --max_cluster_jobs jobs and --max_cluster_bytes of
    their arguments per cluster, and submit() waits for room, so a program that submits in a
    loop, from threads or from its callback runs every job; a job larger than the byte limit
    is refused by submit() at once."""
    daemons.start_scheduler('--max_cluster_jobs', '20', '--max_cluster_bytes', '1m')
    daemons.start_node('127.0.0.2')
    daemons.start_node('127.0.0.3')
    resubmitted = []

    def resubmit(job):  # dispy programs submit follow-up jobs from their callback
        if job.status == DispyJob.Finished and job.id < 30:
            resubmitted.append(cluster.submit_job_id(job.id + 1000, job.id + 1000))

    with SharedJobCluster(nap_and_echo, callback=resubmit,
                          **daemons.client_options()) as cluster:
        jobs = [cluster.submit_job_id(n, n) for n in range(150)]
        payload = b'x' * 300000  # three fit in 1 MB
        threads = [threading.Thread(target=lambda first=first: jobs.extend(
            cluster.submit_job_id(n, n, payload) for n in range(first, first + 10)))
            for first in (200, 300)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        # arguments held in memory: pieces too small to travel on their own (a large one
        # goes to the scheduler's disk, issue 18, and does not count)
        with pytest.raises(ValueError, match='more than the scheduler.s limit of 1048576'):
            cluster.submit(1, *[bytes([n]) * 60000 for n in range(19)])
        assert cluster.wait(120)
        wait_for(lambda: len(resubmitted) == 30, 60, 'the jobs the callback submits')
        assert cluster.wait(120)
    for job in jobs + resubmitted:
        assert job.status == DispyJob.Finished, (job.id, job.status, job.exception)
        assert job.result == (job.id, 300000 if 200 <= job.id < 400 else 0)
    assert len(jobs) == 170


def test_a_client_that_ignores_the_limits_has_its_extra_jobs_refused(daemons):
    daemons.start_scheduler('--max_cluster_jobs', '5')
    link = authenticated_client(daemons)
    try:
        link.send_now(new_cluster_message())
        accepted = link.expect(ClusterOk, time.monotonic() + 10)
        assert accepted.max_jobs == 5
        for uid in range(1, 8):  # no node: every job stays queued
            link.send_now(Submit(uid=uid, args=b'', files=[], timeout=None, priority=0,
                                 node=None, tag=None))
        refused = []
        while len(refused) < 2:
            message = link.recv_now(time.monotonic() + 10)
            if isinstance(message, JobEnd):
                refused.append(message)
    finally:
        link.sock.close()
    assert [end.uid for end in refused] == [6, 7]
    assert all(end.status == DispyJob.Cancelled and 'its limit (--max_cluster_jobs)'
               in end.exception for end in refused)
    assert daemons.scheduler.alive()


def long_nap(n):
    import time
    time.sleep(60)
    return n


def test_a_submit_waiting_for_room_raises_when_the_scheduler_is_gone_for_good(daemons):
    """submit() waiting for room (the cluster at --max_cluster_jobs) does not wait for ever
    when the scheduler goes away: it raises ConnectionError once the client gives up, as
    submit() does then."""
    daemons.start_scheduler('--max_cluster_jobs', '2')
    daemons.start_node('127.0.0.2')
    cluster = SharedJobCluster(long_nap, reconnect_timeout=2, **daemons.client_options())
    outcomes = []

    def third():
        try:
            cluster.submit(3)
            outcomes.append('submitted')
        except ConnectionError as exc:
            outcomes.append(exc)

    try:
        held = [cluster.submit(n) for n in range(2)]
        wait_for(lambda: all(job.status == DispyJob.Running for job in held), 30,
                 'both jobs to run')
        thread = threading.Thread(target=third)
        thread.start()
        daemons.scheduler.stop()
        thread.join(60)
        assert not thread.is_alive()
        assert len(outcomes) == 1 and isinstance(outcomes[0], ConnectionError), outcomes
        assert all(job.status == DispyJob.Abandoned for job in held)
    finally:
        cluster.close(terminate=True)
