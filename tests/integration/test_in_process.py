"""A scheduler and a node started from a program with their typed configurations (no command
line, free ports chosen by the scheduler), serving a client as the daemons do."""

import json
import os

from daemons import CLUSTER_SECRET, NODE_SECRET, REPO, wait_for

from dispyscheduler import DispyJob, SharedJobCluster

PROGRAM = os.path.join(REPO, 'tests', 'integration', 'in_process_daemons.py')


def cube(n):
    return n ** 3


def test_daemons_started_from_a_typed_configuration_serve_a_cluster(daemons):
    directory = daemons.directory
    scheduler = daemons.spawn('scheduler', [PROGRAM, 'scheduler', os.path.join(
        directory, 'scheduler'), str(daemons.node_port), NODE_SECRET, CLUSTER_SECRET])
    daemons.scheduler = scheduler
    wait_for(lambda: scheduler.log().startswith('{'), 30, 'the ports the scheduler got')
    ports = json.loads(scheduler.log().splitlines()[0])
    assert ports['port'] > 0 and ports['scheduler_port'] > 0
    scheduler.wait_log('serving nodes on port %d and clients on port %d'
                       % (ports['port'], ports['scheduler_port']))
    daemons.spawn('node', [PROGRAM, 'node', os.path.join(directory, 'node'),
                           str(daemons.node_port), str(ports['port']), NODE_SECRET])
    scheduler.wait_log(r'node 127\.0\.0\.2:\d+ .* joined with 2 CPUs')
    with SharedJobCluster(cube, scheduler_node='127.0.0.1',
                          scheduler_port=ports['scheduler_port'],
                          secret=CLUSTER_SECRET) as cluster:
        jobs = [cluster.submit(n) for n in range(20)]
        assert [job() for job in jobs] == [n ** 3 for n in range(20)]
        assert all(job.status == DispyJob.Finished and job.ip_addr == '127.0.0.2'
                   for job in jobs)
