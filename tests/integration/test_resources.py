"""Resources per job (issue 19) on the real daemons: nodes say what they have (``--cpus``,
``--memory``, ``--gpus`` or ``nvidia-smi``, ``--resource``), clusters and jobs say what they
need (``resources=``, ``dispy_job_resources=``); a job runs only where all it needs is free,
gets what it was given (its CPUs, its GPUs, a memory limit) and no more."""

import os
import stat
import time

import pytest

from daemons import wait_for

import dispyscheduler as dispy


def record(seconds):
    """A job that says where and when it ran and what it was given."""
    import os
    import time
    start = time.time()
    time.sleep(seconds)
    return {'node': dispy_node_ip_addr, 'start': start, 'end': time.time(),  # noqa: F821
            'given': dispy_job_resources,  # noqa: F821
            'affinity': sorted(os.sched_getaffinity(0)), 'pid': os.getpid(),
            'cuda': os.environ.get('CUDA_VISIBLE_DEVICES')}


def overlap(a, b):
    return a['start'] < b['end'] and b['start'] < a['end']


def results_of(jobs):
    values = []
    for job in jobs:
        value = job()
        assert job.status == dispy.DispyJob.Finished, (job.status, job.exception)
        values.append(value)
    return values


def test_a_four_cpu_job_waits_for_four_free_cpus_while_one_cpu_jobs_keep_flowing(daemons):
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2', cpus=4)
    daemons.start_node('127.0.0.3', cpus=2)
    with dispy.SharedJobCluster(record, **daemons.client_options()) as cluster:
        before = [cluster.submit(0.3) for _ in range(24)]
        submitted = time.time()
        big = cluster.submit(0.5, dispy_job_resources={'cpus': 4})
        after = [cluster.submit(0.3) for _ in range(24)]
        small = results_of(before + after)
        (wide,) = results_of([big])
    assert wide['node'] == '127.0.0.2'  # the only node with 4 CPUs
    assert wide['given']['cpus'] == 4 and len(wide['given']['cpu_ids']) == 4
    assert wide['affinity'] == sorted(set(wide['given']['cpu_ids']))
    # it held all four CPUs of its node: nothing else ran there meanwhile
    assert not [job for job in small if job['node'] == '127.0.0.2' and overlap(job, wide)]
    # one-CPU jobs went on running on the other node while it waited for its four
    assert [job for job in small if job['node'] == '127.0.0.3'
            and submitted < job['start'] < wide['start']]
    for job in small:  # each pinned to the one CPU it was given
        assert job['given']['cpus'] == 1
        assert job['affinity'] == job['given']['cpu_ids'] and len(job['affinity']) == 1


def fake_nvidia_smi(directory):
    path = os.path.join(directory, 'nvidia-smi')
    with open(path, 'w') as handle:
        handle.write('#!/bin/sh\n[ "$1" = "-L" ] || exit 1\n'
                     'echo "GPU 0: Fake GPU (UUID: GPU-00000000-0000-0000-0000-000000000000)"\n'
                     'echo "GPU 1: Fake GPU (UUID: GPU-11111111-1111-1111-1111-111111111111)"\n')
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
    return directory


def test_gpus_appear_as_cuda_visible_devices_and_are_never_shared(daemons, tmp_path,
                                                                   monkeypatch):
    """One node is given GPUs with --gpus, the other finds two with nvidia-smi (a fake one
    on its PATH); each GPU job sees its one GPU, never one a running job holds."""
    bin_dir = fake_nvidia_smi(str(tmp_path))
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2', '--gpus', '0,1', cpus=4)
    monkeypatch.setenv('PATH', bin_dir + os.pathsep + os.environ['PATH'])
    daemons.start_node('127.0.0.3', cpus=4)
    monkeypatch.undo()
    assert '2 GPUs' in daemons.scheduler.log()
    with dispy.SharedJobCluster(record, resources={'gpus': 1},
                                **daemons.client_options()) as cluster:
        gpu_jobs = results_of([cluster.submit(0.3) for _ in range(12)])
        (plain,) = results_of([cluster.submit(0.1, dispy_job_resources={'gpus': 0})])
    for job in gpu_jobs:
        assert job['cuda'] in ('0', '1') and job['given']['gpus'] == [job['cuda']]
    # each on a worker process of its own (CUDA reads its GPUs once per process)
    assert len({(job['node'], job['pid']) for job in gpu_jobs + [plain]}) == 13
    for i, job in enumerate(gpu_jobs):
        for other in gpu_jobs[i + 1:]:
            if job['node'] == other['node'] and job['cuda'] == other['cuda']:
                assert not overlap(job, other), (job, other)
    # four CPUs, but two GPUs a node: at most two GPU jobs ran at once on each
    assert {job['node'] for job in gpu_jobs} == {'127.0.0.2', '127.0.0.3'}
    assert plain['cuda'] == '' and plain['given']['gpus'] == []


def allocate(megabytes):
    block = bytearray(megabytes << 20)
    return len(block)


def test_a_job_over_its_memory_limit_ends_terminated_and_the_node_serves_the_next(daemons):
    daemons.start_scheduler(nodes=('127.0.0.2',))
    node = daemons.start_node('127.0.0.2', '--memory', '2G', cpus=1)
    node.wait_log('job memory limits: ')
    with dispy.SharedJobCluster(allocate, nodes=['127.0.0.2'], resources={'memory': '100M'},
                                **daemons.client_options()) as cluster:
        greedy = cluster.submit(400)
        greedy()
        assert greedy.status == dispy.DispyJob.Terminated
        assert 'exceeded its memory limit of 100 MiB' in greedy.exception
        modest = cluster.submit(20)
        assert modest() == 20 << 20 and modest.status == dispy.DispyJob.Finished
        roomy = cluster.submit(400, dispy_job_resources={'memory': '1G'})
        assert roomy() == 400 << 20
    assert node.alive()


def test_impossible_requests_are_refused_with_what_is_missing(daemons):
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2', '--resource', 'licence=2', cpus=4)
    daemons.start_node('127.0.0.3', cpus=2)
    with pytest.raises(ValueError, match=r'64 CPUs \(the largest node has 4\)'):
        dispy.SharedJobCluster(record, resources={'cpus': 64}, **daemons.client_options())
    with pytest.raises(ValueError, match='memory'):
        dispy.SharedJobCluster(record, resources={'memory': 'lots'},
                               **daemons.client_options())
    with dispy.SharedJobCluster(record, **daemons.client_options()) as cluster:
        gpu = cluster.submit(0, dispy_job_resources={'gpus': 1})
        token = cluster.submit(0, dispy_job_resources={'token': 1})
        three = cluster.submit(0, dispy_job_resources={'licence': 3})
        both = cluster.submit(0, dispy_job_resources={'cpus': 3, 'licence': 1})
        fine = cluster.submit(0, dispy_job_resources={'cpus': 4, 'licence': 2})
        for job, text in ((gpu, '1 GPU (no node has any)'),
                          (token, 'token=1 (no node offers token)'),
                          (three, 'licence=3 (the most a node offers is 2)')):
            job()
            assert job.status == dispy.DispyJob.Terminated
            assert 'no node this cluster may use could ever run the job' in job.exception
            assert text in job.exception
        assert both()['node'] == '127.0.0.2' and fine()['node'] == '127.0.0.2'
        assert fine()['given']['licence'] == 2
    assert daemons.scheduler.alive()


def test_a_job_waiting_for_a_node_that_left_is_warned_of_and_runs_when_it_returns(
        daemons, caplog):
    """The only node with a licence leaves: a job that needs one waits (it is not refused:
    that node may come back), its client is warned after a while, and it runs when the
    node returns."""
    daemons.start_scheduler()
    licensed = daemons.start_node('127.0.0.2', '--resource', 'licence=1', cpus=2)
    daemons.start_node('127.0.0.3', cpus=2)
    with dispy.SharedJobCluster(record, **daemons.client_options()) as cluster:
        assert cluster.submit(0, dispy_job_resources={'licence': 1})()['node'] == '127.0.0.2'
        licensed.stop()
        daemons.scheduler.wait_log(r'node 127\.0\.0\.2:\d+ (lost|left)', timeout=30)
        waiting = cluster.submit(0, dispy_job_resources={'licence': 1})
        daemons.scheduler.wait_log('have waited .* for a node with licence=1', timeout=60)
        wait_for(lambda: 'for a node with licence=1 (no node offers licence)' in caplog.text,
                 30, 'the warning in the client')
        assert waiting.status == dispy.DispyJob.Created
        daemons.start_node('127.0.0.2', '--resource', 'licence=1', cpus=2)
        assert waiting()['node'] == '127.0.0.2'
        assert waiting.status == dispy.DispyJob.Finished


def test_nonsense_requests_from_a_raw_client_are_refused_and_the_scheduler_serves_on(daemons):
    """A client that skips the library's checks: a cluster asking for -1 CPUs is refused
    with the reason; jobs asking for no CPU, an absurd amount or a bad name end Terminated
    with theirs; a good job of the same link runs."""
    from test_hostile_input import authenticated_client, new_cluster_message
    from dispyscheduler.wire.messages import ClusterOk, Error, JobEnd, Submit

    daemons.start_scheduler()
    daemons.start_node('127.0.0.2', cpus=2)
    link = authenticated_client(daemons)
    try:
        request = new_cluster_message()
        request.resources = [('cpus', -1)]
        link.send_now(request)
        answer = link.recv_now(time.monotonic() + 10)
        assert isinstance(answer, Error) and 'cpus cannot be negative' in answer.reason
    finally:
        link.sock.close()
    link = authenticated_client(daemons)
    try:
        link.send_now(new_cluster_message())
        link.expect(ClusterOk, time.monotonic() + 10)
        for uid, resources in enumerate([[('cpus', 0)], [('memory', 2 ** 62)],
                                         [('bad name!', 1)], [('cpus', 1), ('cpus', 2)],
                                         [('cpus', 2)]], 1):
            link.send_now(Submit(uid=uid, args=b'', files=[], timeout=None, priority=0,
                                 node=None, tag=None, resources=resources))
        ends = {}
        while not {1, 2, 3, 4} <= set(ends):
            message = link.recv_now(time.monotonic() + 30)
            if isinstance(message, JobEnd):
                ends[message.uid] = message
    finally:
        link.sock.close()
    assert 'at least 1 CPU' in ends[1].exception
    assert '4096 PiB of memory (the largest node has' in ends[2].exception
    assert 'is not a resource name' in ends[3].exception
    assert 'cpus given twice' in ends[4].exception
    assert all(end.status == dispy.DispyJob.Terminated for end in ends.values())
    assert daemons.scheduler.alive()


def test_a_job_for_one_node_that_cannot_meet_its_request_is_refused(daemons):
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2', cpus=4)
    daemons.start_node('127.0.0.3', cpus=2)
    with dispy.SharedJobCluster(record, **daemons.client_options()) as cluster:
        wide = cluster.submit_node('127.0.0.3', 0, dispy_job_resources={'cpus': 4})
        wide()
        assert wide.status == dispy.DispyJob.Terminated
        assert 'node 127.0.0.3 could never run the job: it needs 4 CPUs; the node has 2 CPUs' \
            in wide.exception
        fits = cluster.submit_node('127.0.0.2', 0, dispy_job_resources={'cpus': 4})
        assert fits()['node'] == '127.0.0.2' and fits()['given']['cpus'] == 4
