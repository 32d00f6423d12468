"""Users stay apart: a client reaches only its own cluster's jobs, each cluster's jobs run in
processes and a directory of their own, and no file name from a peer writes outside the
directory it belongs in (``..``, absolute paths, symbolic links)."""

import logging
import os
import socket
import time

from daemons import CLUSTER_SECRET, wait_for

from dispyscheduler import DispyJob, SharedJobCluster
from dispyscheduler.wire.auth import handshake
from dispyscheduler.wire.link import Link
from dispyscheduler.wire.messages import Cancel, ClusterResume, ResultAck, Submit


def nap(seconds, tag):
    import time
    time.sleep(seconds)
    return tag


def where_am_i(n):
    import os
    return os.getpid(), os.getcwd()


def test_a_client_cannot_reach_another_clients_jobs(daemons):
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2')
    alice = SharedJobCluster(nap, **daemons.client_options())
    mallory = SharedJobCluster(nap, **daemons.client_options())
    try:
        jobs = [alice.submit(1, n) for n in range(3)]
        wait_for(lambda: any(job.status == DispyJob.Running for job in jobs), 20, 'a job')
        for uid in range(1, 10):  # the ids alice's jobs have, and more
            mallory._connection.send(Cancel(uid=uid))
            mallory._connection.send(ResultAck(ids=[uid]))
        assert alice.wait(timeout=30)
        assert [job.result for job in jobs] == [0, 1, 2]
        assert all(job.status == DispyJob.Finished for job in jobs)
        # resuming alice's cluster needs its credential, which only alice was given
        sock = socket.create_connection(('127.0.0.1', daemons.scheduler_port), timeout=10)
        link = Link(sock, 'mallory')
        try:
            handshake(link, CLUSTER_SECRET, 'client', 'scheduler', True, time.monotonic() + 10)
            link.send_now(ClusterResume(cid=alice.cid, credential=os.urandom(16)))
            answer = link.recv_now(time.monotonic() + 10)
        finally:
            sock.close()
        assert answer.kind == 'error' and 'with that credential' in answer.reason
    finally:
        alice.close()
        mallory.close()


def test_each_cluster_runs_in_its_own_processes_and_directory(daemons):
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2')
    with SharedJobCluster(where_am_i, **daemons.client_options()) as one, \
            SharedJobCluster(where_am_i, **daemons.client_options()) as two:
        first = [one.submit(n) for n in range(10)]
        second = [two.submit(n) for n in range(10)]
        assert one.wait(timeout=30) and two.wait(timeout=30)
    pids = [{job.result[0] for job in jobs} for jobs in (first, second)]
    directories = [{job.result[1] for job in jobs} for jobs in (first, second)]
    assert not pids[0] & pids[1]
    assert len(directories[0]) == len(directories[1]) == 1
    assert directories[0] != directories[1]


def plant_links(outside):
    """A job that plants symbolic links in its own directory, pointing outside it."""
    import os
    os.symlink(os.path.join(outside, 'target.txt'), 'evil')
    os.symlink(outside, 'sub')
    return os.getcwd()


def read_file(name):
    with open(name) as handle:
        return handle.read()


def test_symbolic_links_cannot_redirect_job_files(daemons, tmp_path):
    outside = tmp_path / 'outside'
    outside.mkdir()
    (outside / 'target.txt').write_text('untouched')
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2')
    payload = tmp_path / 'evil'
    payload.write_text('overwritten')
    with SharedJobCluster(plant_links, **daemons.client_options()) as cluster:
        assert cluster.submit(str(outside))() is not None
        through_file = cluster.submit(str(outside), dispy_job_depends=[str(payload)])
        through_file()
        # a client that names files itself: a path through the planted directory link
        job = DispyJob((), {})
        job._uid = job.id = 10 ** 6
        cluster._jobs[job._uid] = job
        cluster._connection.send(Submit(uid=job._uid, args=b'', timeout=None, priority=0,
                                        node=None, tag=None,
                                        files=[('sub/new.txt', b'data', 0o600)]))
        job()
    assert through_file.status == DispyJob.Terminated
    assert 'evil' in through_file.exception
    assert job.status == DispyJob.Terminated and 'symbolic link' in job.exception
    assert (outside / 'target.txt').read_text() == 'untouched'
    assert sorted(os.listdir(outside)) == ['target.txt']


def send_escaping_file(name):
    with open(name, 'w') as handle:
        handle.write('escaped')
    return dispy_send_file(name)  # noqa: F821 (a dispynode global)


def test_files_a_job_sends_back_stay_in_the_clients_directory(daemons, tmp_path, caplog):
    client_dir = tmp_path / 'client'
    client_dir.mkdir()
    os.chdir(client_dir)
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2')
    with caplog.at_level(logging.WARNING, logger='dispyscheduler'):
        with SharedJobCluster(send_escaping_file, **daemons.client_options()) as cluster:
            job = cluster.submit('../escaped.txt')
            job()
            wait_for(lambda: 'not saved' in caplog.text, 10, 'the refusal')
    assert job.status == DispyJob.Finished
    assert not (tmp_path / 'escaped.txt').exists()
    assert os.listdir(client_dir) == [] or all(not name.startswith('escaped')
                                               for name in os.listdir(client_dir))
