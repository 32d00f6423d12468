"""Jobs as Python's own waiting habits see them: ``concurrent.futures`` and ``asyncio``.

A ``DispyJob`` keeps dispy's attributes (``job.result``, ``job.exception`` are values, not
methods), so it cannot itself be a ``concurrent.futures.Future``; ``job.future`` is one, made
on first use and completed by whichever thread ends the job. ``concurrent.futures.wait`` and
``as_completed`` take these futures; ``await job`` and ``as_completed_async`` wrap them for an
event loop (a wake-up through the loop's own pipe per job, no thread per job).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
import time
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Iterable, Optional

from ..constants import FINISHED, STATUS_NAMES

if TYPE_CHECKING:
    from .job import DispyJob

Unwrap = Callable[['DispyJob'], Any]
"""How a job's end becomes a future's outcome: returns the result or raises."""

_CREATING = threading.Lock()  # makes each job's future once, whichever thread asks first
_CANCELLING = threading.RLock()  # (reentrant: a callback of a cancelled future may cancel)


class JobFailed(Exception):
    """A job ended other than ``Finished``: cancelled, terminated (its computation raised,
    or its process died) or abandoned. ``job`` is the DispyJob; the message holds its status
    and ``job.exception``."""

    def __init__(self, job: DispyJob) -> None:
        status = STATUS_NAMES.get(job.status, job.status)
        super().__init__('job %s ended %s: %s' % (job.id, status,
                                                  (job.exception or '').strip() or 'no reason'))
        self.job = job


def job_outcome(job: DispyJob) -> Any:
    """A plain job's: its result if it finished, else ``JobFailed``."""
    if job.status == FINISHED:
        return job.result
    raise JobFailed(job)


class JobFuture(concurrent.futures.Future):
    """``job.future``: completed when the job ends. ``cancel()`` cancels the job itself,
    queued or running; it returns False once the job has ended.

    Callbacks (``add_done_callback``) run in a thread of their own (``Settler``), not in the
    thread that read the job's end: a callback may submit more jobs, and wait for room to
    do so, which the reading thread must be free to make. A future without callbacks is
    settled at once where the job ended. Once settled, it lets go of its job (the job keeps
    its future): a future and its outcome are freed with the job, with no cycle to wait for
    the garbage collector."""

    def __init__(self, job: DispyJob, cancel_job: Optional[Callable[[DispyJob], Any]],
                 unwrap: Unwrap = job_outcome) -> None:
        super().__init__()
        self._job: Optional[DispyJob] = job
        self._cancel_job = cancel_job
        self._unwrap = unwrap
        self._has_callbacks = False

    def add_done_callback(self, fn: Callable[[Any], object]) -> None:
        self._has_callbacks = True
        super().add_done_callback(fn)

    @property
    def job_status(self) -> Optional[int]:
        """The job's status while the future is not settled (None after)."""
        job = self._job
        return None if job is None else job.status

    def settle(self) -> None:
        """The job has ended: set the outcome (once; a cancelled future stays cancelled)."""
        if self._has_callbacks and threading.current_thread() is not Settler.thread:
            Settler.put(self)
            return
        job = self._job
        if job is None or self.done():
            self._job = None
            return
        try:
            value = self._unwrap(job)
        except BaseException as exc:
            outcome, failed = exc, True
        else:
            outcome, failed = value, False
        self._job = None
        try:
            if failed:
                self.set_exception(outcome)
            else:
                self.set_result(outcome)
        except concurrent.futures.InvalidStateError:
            pass  # cancelled, or settled by the other thread, meanwhile
        del outcome

    def cancel(self) -> bool:
        """The future is cancelled first, then the job: the job's end (Cancelled, from
        another thread) may come before this returns. A job that finished before the
        scheduler heard of the cancel keeps its result in ``job.result``."""
        job = self._job
        with _CANCELLING:  # two threads cancelling at once: one cancels, both return True
            if job is None or job.finish.is_set() or self.done():
                return self.cancelled()
            super().cancel()
            # what an executor's worker does to a cancelled future: waiters in wait() and
            # as_completed() hear of it now
            self.set_running_or_notify_cancel()
        if self._cancel_job is not None:
            self._cancel_job(job)
        return True


class Settler:
    """The thread that settles futures with callbacks, one at a time, in order."""

    thread: Optional[threading.Thread] = None
    queue: queue.SimpleQueue[JobFuture] = queue.SimpleQueue()
    lock = threading.Lock()

    @classmethod
    def put(cls, future: JobFuture) -> None:
        if cls.thread is None:
            with cls.lock:
                if cls.thread is None:
                    cls.thread = threading.Thread(target=cls.run, daemon=True,
                                                  name='dispyscheduler-futures')
                    cls.thread.start()
        cls.queue.put(future)

    @classmethod
    def run(cls) -> None:
        while True:
            future = cls.queue.get()
            try:
                future.settle()
            except Exception:  # concurrent.futures logs a failing callback itself
                pass
            del future


def future_of(job: DispyJob, unwrap: Unwrap = job_outcome) -> JobFuture:
    """``job.future``, made now if it was not yet (settled at once if the job has ended),
    its outcome given by ``unwrap`` (an executor asks first, for its calls' outcomes)."""
    future = job._future
    if future is None:
        with _CREATING:
            future = job._future
            if future is None:
                future = job._future = JobFuture(job, job._cancel, unwrap)
        if job.finish.is_set():
            future.settle()
    return future


def job_ended(job: DispyJob) -> None:
    """Called once the job's end is set: its future, if one was made, completes."""
    future = job._future
    if future is not None:
        future.settle()


def await_job(job: DispyJob) -> Any:
    """``job.__await__``: the job's result in a coroutine, as ``job.future.result()``."""
    return asyncio.wrap_future(future_of(job)).__await__()


async def as_completed_async(jobs: Iterable[DispyJob],
                             timeout: Optional[float] = None) -> AsyncIterator[DispyJob]:
    """``async for job in as_completed_async(jobs)``: each job once, as it ends. With
    ``timeout`` (seconds from the first step), ``TimeoutError`` if some have not ended by
    then."""
    loop = asyncio.get_running_loop()
    ended: asyncio.Queue[DispyJob] = asyncio.Queue()
    jobs = list(dict.fromkeys(jobs))  # each once, even if given twice
    deadline = None if timeout is None else time.monotonic() + timeout

    def on_end(job: DispyJob) -> Callable[[Any], Any]:
        return lambda _: loop.call_soon_threadsafe(ended.put_nowait, job)

    for job in jobs:
        future_of(job).add_done_callback(on_end(job))
    for done in range(len(jobs)):
        if deadline is None:
            yield await ended.get()
        else:
            try:
                yield await asyncio.wait_for(ended.get(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                raise TimeoutError('%d of %d jobs had not ended after %s seconds'
                                   % (len(jobs) - done, len(jobs), timeout)) from None
