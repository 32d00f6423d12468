"""A plain user program, run as its own process by the tests: submits jobs, prints a summary.

Usage: client_program.py PORT SECRET COUNT OFFSET
"""

import collections
import json
import sys


def compute(n, offset):
    import os
    import time
    time.sleep(0.005)  # long enough that a node installing the computation late gets work
    return {'value': n * n + offset, 'pid': os.getpid()}


if __name__ == '__main__':
    from dispyscheduler import DispyJob, SharedJobCluster

    port, secret, count, offset = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    final = collections.Counter()

    def callback(job):
        if job.status in (DispyJob.Finished, DispyJob.Terminated, DispyJob.Cancelled,
                          DispyJob.Abandoned):
            final[job.id] += 1

    with SharedJobCluster(compute, scheduler_node='127.0.0.1', scheduler_port=int(port),
                          secret=secret, callback=callback) as cluster:
        jobs = [cluster.submit(i, offset) for i in range(count)]
        cluster.wait()
    print(json.dumps({
        'results': [job.result['value'] if job.result else None for job in jobs],
        'statuses': [job.status for job in jobs],
        'exceptions': [job.exception for job in jobs if job.exception],
        'ip_addrs': sorted({job.ip_addr for job in jobs if job.ip_addr}),
        'worker_pids': len({job.result['pid'] for job in jobs if job.result}),
        'final_callbacks': [final[job.id] for job in jobs],
    }))
