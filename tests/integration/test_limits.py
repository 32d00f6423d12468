"""What one user can make the scheduler hold is bounded (issue 17, 6): results a client does not
read wait on disk, not in memory; submissions beyond a cluster's limits wait in ``submit()``.
Real daemons on loopback; memory is read from /proc."""

import json
import os
import signal
import textwrap
import urllib.request

from daemons import CLUSTER_SECRET, free_ports, wait_for

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
    assert kept < 40 * MB, 'the scheduler kept %d MB after the cluster closed' % (kept // MB)
