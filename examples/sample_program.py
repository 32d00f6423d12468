"""A dispy-style user program: the only dispyscheduler-specific line is the import.

Run it against a running scheduler:  python examples/sample_program.py [SCHEDULER [SECRET]]
"""

import sys


def compute(n):
    # runs on a node, in a worker process
    import socket
    import time
    time.sleep(0.01)
    return n * n, socket.gethostname()


if __name__ == '__main__':
    from dispyscheduler import SharedJobCluster  # was: from dispy import SharedJobCluster

    scheduler = sys.argv[1] if len(sys.argv) > 1 else '127.0.0.1'
    secret = sys.argv[2] if len(sys.argv) > 2 else ''
    cluster = SharedJobCluster(compute, scheduler_node=scheduler, secret=secret)
    jobs = []
    for n in range(20):
        job = cluster.submit(n)
        job.id = n
        jobs.append(job)
    for job in jobs:
        square, host = job()
        print('job %2d: %3d computed on %s (%s) in %.1f ms'
              % (job.id, square, job.ip_addr, host, 1000 * (job.end_time - job.start_time)))
    cluster.close()
