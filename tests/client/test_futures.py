"""Jobs as concurrent.futures and asyncio see them, and the executor's calls on a node: the
pure parts, with jobs ended by another thread as the client's reader thread ends them (the
integration tests run them against the real daemons)."""

import asyncio
import concurrent.futures
import os
import threading

import cloudpickle
import pytest

from dispyscheduler.client import executor, futures
from dispyscheduler.client.job import DispyJob
from dispyscheduler.constants import CANCELLED, FINISHED, TERMINATED


def new_job(job_id):
    job = DispyJob((job_id,), {})
    job.id = job_id
    job._cancel = cancelled.append
    return job


cancelled = []


def end(job, status=FINISHED, result=None, exception=None):
    """As ``SharedJobCluster._end`` does, last of all."""
    job.result, job.status, job.exception = result, status, exception
    job.finish.set()
    futures.job_ended(job)


def end_later(jobs, **outcome):
    """End ``jobs`` from another thread, in order, once each test has started waiting."""
    start = threading.Event()

    def run():
        start.wait()
        for job in jobs:
            end(job, result=job.id * 10, **outcome)
    thread = threading.Thread(target=run)
    thread.start()
    return start, thread


def test_a_finished_jobs_future_gives_its_result_whenever_it_is_made():
    before, after = new_job(1), new_job(2)
    early = before.future
    end(before, result='one')
    end(after, result='two')
    assert early.result(0) == 'one'
    assert after.future.result(0) == 'two'  # made after the end: settled at once
    assert after.future is after.future


def test_a_job_that_did_not_finish_raises_jobfailed_with_its_reason():
    job = new_job(7)
    end(job, TERMINATED, exception='Traceback ...\nValueError: bad input\n')
    with pytest.raises(futures.JobFailed) as info:
        job.future.result(0)
    assert info.value.job is job
    assert 'job 7 ended Terminated' in str(info.value) and 'bad input' in str(info.value)


def test_cancel_cancels_the_job_and_wakes_waiters_until_it_has_ended():
    del cancelled[:]
    job, other = new_job(1), new_job(2)
    waiter = concurrent.futures.wait([job.future, other.future], timeout=0)
    assert waiter.done == set()
    assert job.future.cancel() and job.future.cancelled() and cancelled == [job]
    done, _ = concurrent.futures.wait([job.future, other.future],
                                      return_when=concurrent.futures.FIRST_COMPLETED)
    assert done == {job.future}
    end(job, CANCELLED)  # the scheduler's word comes later: the future stays cancelled
    assert job.future.cancelled()
    end(other, result=2)
    assert not other.future.cancel() and cancelled == [job]


def test_as_completed_and_callbacks_see_each_job_once():
    jobs = [new_job(i) for i in range(200)]
    calls = []
    for job in jobs:
        job.future.add_done_callback(calls.append)
    start, thread = end_later(jobs)
    start.set()
    results = sorted(future.result() for future in
                     concurrent.futures.as_completed([job.future for job in jobs], timeout=60))
    thread.join()
    assert results == [i * 10 for i in range(200)]
    assert sorted(calls, key=id) == sorted((job.future for job in jobs), key=id)


def test_await_and_async_iteration_leave_the_event_loop_free():
    jobs = [new_job(i) for i in range(200)]
    start, thread = end_later(jobs)

    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        ticking = asyncio.ensure_future(ticker())
        start.set()
        gathered = await asyncio.gather(*jobs[:100])
        seen = [job async for job in futures.as_completed_async(jobs, timeout=60)]
        ticking.cancel()
        return gathered, seen, ticks

    gathered, seen, ticks = asyncio.run(main())
    thread.join()
    assert gathered == [i * 10 for i in range(100)]
    assert sorted(job.id for job in seen) == list(range(200))
    assert ticks > 0


def test_async_iteration_says_how_many_had_not_ended_at_its_timeout():
    jobs = [new_job(i) for i in range(3)]
    end(jobs[0])

    async def main():
        return [job async for job in futures.as_completed_async(jobs, timeout=0.01)]

    with pytest.raises(TimeoutError, match='2 of 3 jobs had not ended'):
        asyncio.run(main())


def raises(x):
    raise KeyError(x)


def test_calls_on_a_node_return_values_and_exceptions_with_their_tracebacks(tmp_path,
                                                                            monkeypatch):
    function = cloudpickle.dumps(lambda x, y=1: x / y)
    outcomes = executor.run_calls(None, function, [((1,), {'y': 2}), ((1,), {'y': 0})])
    assert outcomes[0] == (True, 0.5)
    ok, (exc, text) = outcomes[1]
    assert not ok and isinstance(exc, ZeroDivisionError) and 'ZeroDivisionError' in text
    with pytest.raises(ZeroDivisionError) as info:
        executor.raise_outcome(outcomes[1])
    assert 'in <lambda>' in str(info.value.__cause__)

    # a shared function: read from the computation's directory once per process
    monkeypatch.chdir(tmp_path)
    (tmp_path / (executor.FUNCTION_FILE % 'ab')).write_bytes(cloudpickle.dumps(raises))
    assert executor.run_calls('ab', None, [((3,), {})])[0][1][0].args == (3,)
    os.unlink(tmp_path / (executor.FUNCTION_FILE % 'ab'))
    assert executor.run_calls('ab', None, [((4,), {})])[0][1][0].args == (4,)


def test_an_exception_that_cannot_travel_is_named_instead():
    class Local(Exception):
        def __reduce__(self):
            raise TypeError('no')

    def fails():
        raise Local('inner')

    ok, (exc, _) = executor.run_calls(None, cloudpickle.dumps(fails), [((), {})])[0]
    assert not ok and isinstance(exc, RuntimeError) and 'Local: inner' in str(exc)
