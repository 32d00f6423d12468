"""Waiting for jobs through the real daemons: many threads waiting in every way a program can,
and Ctrl-C in ``job()`` and ``cluster.wait()``. Outcomes only: every result right and reported
once, and the interrupt raised; deadlines are bounds that only a hang reaches.
"""

import collections
import threading
import time

import pytest
from interrupts import Interrupter

from dispyscheduler import DispyJob, SharedJobCluster

DEADLINE = 60.0


def square(n):
    return n * n


def nap(seconds):
    import time
    time.sleep(seconds)
    return seconds


def test_threads_waiting_in_every_way_each_get_their_own_results(daemons):
    """Eight threads submit and wait, each its own way (``job()``, ``job(timeout=...)``,
    ``job.finish.wait()``, short timeouts over and over), while the main thread waits in
    ``cluster.wait()`` and callbacks run: every result is its own job's, each job is reported
    ended once."""
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2')
    daemons.start_node('127.0.0.3')
    ended = collections.Counter()

    def callback(job):
        if job.status == DispyJob.Finished:
            ended[job.id] += 1

    def by_call(job):
        return job()

    def by_call_with_timeout(job):
        return job(timeout=DEADLINE)

    def by_finish(job):
        return job.result if job.finish.wait() else None

    def by_short_timeouts(job):
        deadline = time.monotonic() + DEADLINE
        while not job.finish.wait(0.001) and time.monotonic() < deadline:
            pass
        return job()

    ways = [by_call, by_call_with_timeout, by_finish, by_short_timeouts]
    cluster = SharedJobCluster(square, callback=callback, **daemons.client_options())
    results = {}
    per_thread = 25
    try:
        def submit_and_wait(index):
            way = ways[index % len(ways)]
            numbers = range(index * per_thread, (index + 1) * per_thread)
            jobs = [cluster.submit(n) for n in numbers]
            results[index] = [way(job) for job in jobs]

        threads = [threading.Thread(target=submit_and_wait, args=(index,), daemon=True,
                                    name='waiter-%d' % index) for index in range(8)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + DEADLINE
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        assert not any(thread.is_alive() for thread in threads)
        assert cluster.wait(timeout=DEADLINE)
    finally:
        cluster.close()
    assert results == {index: [n * n for n in range(index * per_thread,
                                                     (index + 1) * per_thread)]
                       for index in range(8)}
    assert sorted(ended.values()) == [1] * (8 * per_thread)


def test_ctrl_c_in_job_and_in_cluster_wait_raises_keyboard_interrupt(daemons):
    """Ctrl-C while ``job()`` or ``cluster.wait()`` waits for a job that runs for a minute
    raises KeyboardInterrupt there (not when the job ends), and the cluster goes on working:
    a job submitted afterwards returns its result."""
    daemons.start_scheduler()
    daemons.start_node('127.0.0.2')
    cluster = SharedJobCluster(nap, **daemons.client_options())
    try:
        long_job = cluster.submit(DEADLINE)
        for wait in (long_job, lambda: long_job(timeout=DEADLINE), cluster.wait):
            interrupter = Interrupter(DEADLINE)
            try:
                with pytest.raises(KeyboardInterrupt):
                    wait()
            finally:
                interrupter.stop()
            assert not long_job.finish.is_set()
        cluster.cancel(long_job)
        assert long_job.finish.wait(DEADLINE)
        assert cluster.submit(0.01)(timeout=DEADLINE) == 0.01
    finally:
        cluster.close(terminate=True)
