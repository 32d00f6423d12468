"""``JobCluster`` (issue 16, first part): a dispy program that is its own scheduler, changed
from dispy only in its import; ``local=`` starts a node on this host for it, with nothing
started beforehand. The programs run as subprocesses, as users run them."""

import os
import signal
import subprocess
import sys
import tempfile
import textwrap

from daemons import NODE_SECRET, REPO, processes, wait_for

import dispyscheduler as dispy

PROGRAM_HEADER = 'import os, sys, time\nimport dispyscheduler as dispy\n'


def run_program(tmp_path, body, *args, timeout=120):
    path = tmp_path / 'program.py'
    path.write_text(PROGRAM_HEADER + textwrap.dedent(body))
    return subprocess.run([sys.executable, str(path), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=str(tmp_path),
                          env=dict(os.environ, PYTHONPATH=REPO))


def child_daemons(parent):
    """PIDs of the JobCluster schedulers and local nodes (``runtime.child``) of process
    ``parent``."""
    return [pid for pid, _, ppid, _, command in processes()
            if ppid == parent and b'dispyscheduler.runtime.child' in command]


def waiting_nodes(daemons, *ips):
    """Nodes told no scheduler: each serves the first that pings it."""
    nodes = {ip: daemons.start_node(ip, scheduler=None, wait=False) for ip in ips}
    for node in nodes.values():
        node.wait_log('serving with')
    return nodes


def temporary_directories(where=None):
    """The JobCluster schedulers' working directories in ``where`` (the temporary
    directory by default)."""
    return {name for name in os.listdir(where or tempfile.gettempdir())
            if name.startswith('dispyscheduler-jobcluster-')}


def alive(pids):
    return [pid for pid, _, _, _, _ in processes() if pid in pids]


def test_local_runs_a_program_with_nothing_started_beforehand(tmp_path):
    result = run_program(tmp_path, '''
        def compute(n):
            return n * n, dispy_node_ip_addr

        if __name__ == '__main__':
            cluster = dispy.JobCluster(compute, local=2)
            print(' '.join(str(child.process.pid) for child in cluster._stopper.children))  # checks
            jobs = [cluster.submit(n) for n in range(20)]
            print(sorted(job()[0] for job in jobs))
            print(set(job.result[1] for job in jobs), set(job.status for job in jobs))
            cluster.print_status()
            cluster.close()
            print('closed')
        ''')
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    children = [int(pid) for pid in lines[0].split()]
    assert len(children) == 2  # its scheduler and its node
    assert lines[1] == str(sorted(n * n for n in range(20)))
    assert lines[2] == "{'127.0.0.1'} {%d}" % 11  # DispyJob.Finished
    assert '127.0.0.1' in result.stdout and lines[-1] == 'closed'
    assert not alive(children)


def test_setup_provisional_results_cancel_and_depends_in_a_jobcluster(tmp_path):
    (tmp_path / 'data.txt').write_text('payload')
    result = run_program(tmp_path, '''
        def setup(path):
            global data
            data = open(path).read()
            return 0

        def compute(n):
            import time
            dispy_provisional_result(('half', n))
            if n < 0:
                time.sleep(60)
            return data, n

        def job_status(job):
            if job.status == dispy.DispyJob.ProvisionalResult:
                progress.append(job.result)

        if __name__ == '__main__':
            progress = []
            cluster = dispy.JobCluster(compute, depends=['data.txt'], setup=setup,
                                       job_status=job_status, local=1,
                                       nodes=[dispy.NodeAllocate('127.0.0.1',
                                                                 setup_args=('data.txt',))])
            slow = cluster.submit(-1)
            while slow.status != dispy.DispyJob.ProvisionalResult:
                time.sleep(0.05)
            cluster.cancel(slow)
            print(slow(), slow.status == dispy.DispyJob.Cancelled)
            print([cluster.submit(n)() for n in range(3)])
            cluster.wait()
            print(sorted(progress))
            cluster.close()
        ''')
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == 'None True'
    assert lines[1] == "[('payload', 0), ('payload', 1), ('payload', 2)]"
    assert lines[2] == str(sorted([('half', -1), ('half', 0), ('half', 1), ('half', 2)]))


def test_network_nodes_are_found_by_ping_and_freed_when_the_program_is_killed(daemons,
                                                                              tmp_path):
    """dispynode hosts waiting for a scheduler (none given) join the JobCluster that pings
    them; the program killed with kill -9 leaves no scheduler behind and its nodes take the
    next scheduler's pings."""
    nodes = list(waiting_nodes(daemons, '127.0.0.2', '127.0.0.3').values())
    program = tmp_path / 'program.py'
    program.write_text(PROGRAM_HEADER + textwrap.dedent('''
        def compute(n):
            return dispy_node_ip_addr

        if __name__ == '__main__':
            port = int(sys.argv[1])
            cluster = dispy.JobCluster(compute, nodes=[('127.0.0.2', port), ('127.0.0.3', port)],
                                       host='127.0.0.1', secret=sys.argv[2], ping_interval=1)
            addresses = set()
            while addresses != {'127.0.0.2', '127.0.0.3'}:
                addresses.update(job() for job in [cluster.submit(n) for n in range(20)])
            print('both nodes', flush=True)
            time.sleep(600)
        '''))
    own_tmp = tmp_path / 'tmp'  # its own: another test run's JobClusters are not its
    own_tmp.mkdir()
    running = subprocess.Popen([sys.executable, str(program), str(daemons.node_port),
                                NODE_SECRET], stdout=subprocess.PIPE, text=True,
                               cwd=str(tmp_path), env=dict(os.environ, PYTHONPATH=REPO,
                                                           TMPDIR=str(own_tmp)))
    try:
        assert running.stdout.readline().strip() == 'both nodes'
        assert len(temporary_directories(own_tmp)) == 1
        children = child_daemons(running.pid)
        assert len(children) == 1  # its scheduler
        running.send_signal(signal.SIGKILL)
        running.wait()
        wait_for(lambda: not alive(children), 30, 'the JobCluster scheduler to stop')
        assert not temporary_directories(own_tmp)  # its temporary directory went with it
        for node in nodes:
            node.wait_log('link to scheduler .* closed', timeout=30)
        result = run_program(tmp_path, '''
            def compute(n):
                return dispy_node_ip_addr

            if __name__ == '__main__':
                port = int(sys.argv[1])
                cluster = dispy.JobCluster(compute, nodes=[('127.0.0.2', port)],
                                           host='127.0.0.1', secret=sys.argv[2], ping_interval=1)
                print(cluster.submit(1)())
                cluster.close()
            ''', str(daemons.node_port), NODE_SECRET)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == '127.0.0.2'
    finally:
        if running.poll() is None:
            running.kill()
            running.wait()
        running.stdout.close()
    assert all(node.alive() for node in nodes)


def test_a_node_serving_another_scheduler_is_not_taken_and_is_named(daemons, tmp_path):
    daemons.start_scheduler(nodes=('127.0.0.3',))
    daemons.start_node('127.0.0.3')  # serves the shared scheduler
    waiting_nodes(daemons, '127.0.0.2')
    result = run_program(tmp_path, '''
        def compute(n):
            return dispy_node_ip_addr

        if __name__ == '__main__':
            port = int(sys.argv[1])
            cluster = dispy.JobCluster(compute, nodes=[('127.0.0.2', port), ('127.0.0.3', port)],
                                       host='127.0.0.1', secret=sys.argv[2], ping_interval=1)
            print(set(job() for job in [cluster.submit(n) for n in range(10)]))
            cluster.close()
        ''', str(daemons.node_port), NODE_SECRET)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "{'127.0.0.2'}"
    assert 'node 127.0.0.3:%d serves another scheduler (127.0.0.1:%d)' % (
        daemons.node_port, daemons.port) in result.stderr
    with dispy.SharedJobCluster(len, **daemons.client_options()) as cluster:
        assert cluster.submit('abc')() == 3  # the shared scheduler keeps its node


def test_recover_jobs_collects_the_results_of_a_killed_jobcluster_program(daemons, tmp_path):
    """dispy's recovery: the program is killed with jobs running; its scheduler stops with it
    (its state kept beside the recovery file), and ``recover_jobs`` starts it again and
    collects every result, from the nodes that kept running the jobs."""
    waiting_nodes(daemons, '127.0.0.2', '127.0.0.3')
    program = tmp_path / 'program.py'
    program.write_text(PROGRAM_HEADER + textwrap.dedent('''
        def compute(n, directory):
            import time
            open(os.path.join(directory, 'started-%d' % n), 'w').close()
            while not os.path.exists(os.path.join(directory, 'release')):
                time.sleep(0.05)
            return n * 10

        if __name__ == '__main__':
            port = int(sys.argv[1])
            cluster = dispy.JobCluster(compute, nodes=[('127.0.0.2', port), ('127.0.0.3', port)],
                                       host='127.0.0.1', secret=sys.argv[2], ping_interval=1,
                                       recover_file='recover.json')
            jobs = [cluster.submit(n, os.getcwd()) for n in range(4)]
            print('submitted', flush=True)
            time.sleep(600)
        '''))
    running = subprocess.Popen([sys.executable, str(program), str(daemons.node_port),
                                NODE_SECRET], stdout=subprocess.PIPE, text=True,
                               cwd=str(tmp_path), env=dict(os.environ, PYTHONPATH=REPO))
    try:
        assert running.stdout.readline().strip() == 'submitted'
        wait_for(lambda: all(os.path.exists(tmp_path / ('started-%d' % n)) for n in range(4)),
                 60, 'every job running')
        children = child_daemons(running.pid)
        running.send_signal(signal.SIGKILL)
        running.wait()
        wait_for(lambda: not alive(children), 30, 'the JobCluster scheduler to stop')
        assert (tmp_path / 'recover.json').exists() and (tmp_path / 'recover.state').is_dir()
        (tmp_path / 'release').touch()
        result = run_program(tmp_path, '''
            if __name__ == '__main__':
                jobs = dispy.recover_jobs('recover.json', timeout=60)
                print(sorted((job.status, job.result) for job in jobs))
            ''')
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == str([(11, n * 10) for n in range(4)])
        assert not (tmp_path / 'recover.json').exists()
        assert not (tmp_path / 'recover.state').exists()
    finally:
        if running.poll() is None:
            running.kill()
            running.wait()
        running.stdout.close()


def test_program_computation_and_a_node_killed_under_a_reentrant_cluster(daemons, tmp_path):
    nodes = waiting_nodes(daemons, '127.0.0.2', '127.0.0.3')
    (tmp_path / 'greet.sh').write_text('#!/bin/sh\necho "hello $1"\n')
    (tmp_path / 'greet.sh').chmod(0o755)
    program = tmp_path / 'program.py'
    program.write_text(PROGRAM_HEADER + textwrap.dedent('''
        def compute(n, where):
            import time
            open(os.path.join(where, 'started-%d-%s' % (n, dispy_node_ip_addr)), 'w').close()
            while not os.path.exists(os.path.join(where, 'release')):
                time.sleep(0.05)
            return n

        if __name__ == '__main__':
            port, secret = int(sys.argv[1]), sys.argv[2]
            nodes = [('127.0.0.2', port), ('127.0.0.3', port)]
            greet = dispy.JobCluster('greet.sh', nodes=nodes, host='127.0.0.1', secret=secret,
                                     ping_interval=1)
            job = greet.submit('world')
            job()
            print(job.result, job.stdout)
            greet.close()
            cluster = dispy.JobCluster(compute, nodes=nodes, host='127.0.0.1', secret=secret,
                                       ping_interval=1, pulse_interval=1, reentrant=True)
            jobs = [cluster.submit(n, os.getcwd()) for n in range(8)]
            print('submitted', flush=True)
            print(sorted(job() for job in jobs), set(job.status for job in jobs))
            print(sorted(set(job.ip_addr for job in jobs)))
            cluster.close()
        '''))
    running = subprocess.Popen([sys.executable, str(program), str(daemons.node_port),
                                NODE_SECRET], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, cwd=str(tmp_path),
                               env=dict(os.environ, PYTHONPATH=REPO))
    try:
        assert running.stdout.readline().strip() == "0 b'hello world\\n'"
        assert running.stdout.readline().strip() == 'submitted'
        wait_for(lambda: any(name.endswith('127.0.0.3') for name in os.listdir(tmp_path)
                             if name.startswith('started-')), 60, 'a job on 127.0.0.3')
        nodes['127.0.0.3'].kill()  # kill -9 of the node with its jobs
        (tmp_path / 'release').touch()
        out, err = running.communicate(timeout=120)
        assert running.returncode == 0, err
        lines = out.splitlines()
        assert lines[0] == '%s {11}' % list(range(8))  # every job Finished
        assert lines[1] == "['127.0.0.2']"  # those lost with 127.0.0.3 ran again
    finally:
        if running.poll() is None:
            running.kill()
            running.communicate()
