"""What a user's program holds: ``DispyJob`` for each job, ``DispyNode`` for each node its
cluster uses, and ``NodeAllocate`` to choose nodes and CPUs."""

from __future__ import annotations

import _thread
import collections
import fnmatch
import time
from typing import TYPE_CHECKING, Any, Callable, Generator, Iterable, Optional

from ..constants import (ABANDONED, CANCELLED, CREATED, FINISHED, NODE_CLOSED, NODE_INITIALIZED,
                         NODE_SETUP_FAILED, PROVISIONAL_RESULT, RUNNING, STATUS_NAMES,
                         TERMINATED)
from . import futures

if TYPE_CHECKING:
    from .futures import JobFuture

ClusterStatus = collections.namedtuple('ClusterStatus', ['nodes', 'jobs_pending'])
"""What ``SharedJobCluster.status()`` returns, as in dispy 4.x."""

Reader = Callable[['JobEnd', Optional[float]], bool]
"""``reader(job_end, timeout)``: waits for a job's end, reading the scheduler's link meanwhile
(``SchedulerConnection.wait_for``)."""


class DispyJob:
    """A submitted job. Its attributes fill in as the job runs; ``job()`` waits for the end
    and returns ``job.result``. ``job.future`` is the job as a ``concurrent.futures.Future``,
    and ``await job`` waits in a coroutine (``futures.py``)."""

    Created = CREATED
    Running = RUNNING
    ProvisionalResult = PROVISIONAL_RESULT
    Cancelled = CANCELLED
    Terminated = TERMINATED
    Abandoned = ABANDONED
    Finished = FINISHED

    def __init__(self, args: Optional[tuple], kwargs: Optional[dict],
                 reader: Optional[Reader] = None) -> None:
        self.id: Any = None
        self.args = args
        self.kwargs = kwargs
        self.result: Any = None
        self.stdout: Optional[str | bytes] = None  # bytes when the computation is a program
        self.stderr: Optional[str | bytes] = None
        self.exception: Optional[str] = None
        self.status = CREATED
        self.submit_time = time.time()
        self.start_time: Optional[float] = None
        self.end_time: Optional[float] = None
        self.ip_addr: Optional[str] = None
        self.finish = JobEnd(reader)
        self._uid: Optional[int] = None
        self._node: Optional[DispyNode] = None  # the DispyNode counting this job as running
        self._tx = 0  # bytes of its arguments and files, counted in its node's ``tx``
        self._values: list[str] = []  # its large arguments, sent on their own (``_share``)
        self._future: Optional[JobFuture] = None  # made on first use of ``future``
        self._cancel: Optional[Callable[[DispyJob], Any]] = None  # its cluster's ``cancel``

    def __call__(self, clear: bool = False, timeout: Optional[float] = None) -> Any:
        """Wait until the job ends and return its result (``clear`` drops it here); with
        ``timeout`` (seconds), return None if it has not ended by then."""
        if not self.finish.wait(timeout):
            return None
        result = self.result
        if clear:
            self.result = None
        return result

    @property
    def future(self) -> JobFuture:
        """The job as a ``concurrent.futures.Future``: ``result()`` is the job's result, or
        raises ``JobFailed`` if it did not finish; ``cancel()`` cancels the job."""
        return futures.future_of(self)

    def __await__(self) -> Generator[Any, None, Any]:
        """``await job``: its result, as ``job.future.result()``, without blocking the
        event loop."""
        return futures.await_job(self)

    def __repr__(self) -> str:
        return '<DispyJob %s %s>' % (self.id, STATUS_NAMES.get(self.status, self.status))


class JobEnd:
    """``job.finish``: set once when the job ends, waited on by any number of threads, as a
    ``threading.Event`` (whose interface it has, but for ``clear``). One is made for every job,
    so it is a single lock, held until the end, rather than an Event's condition and locks.

    ``reader(job_end, timeout)``, when given, waits in its place: it reads the scheduler's
    link while it waits, if no other thread does (``seat.py``). Whichever thread handles the
    message that ends the job sets it. A wait, with a timeout or without, is a poll or a
    lock's acquire, which a signal interrupts: Ctrl-C in ``job()`` or ``cluster.wait()``
    raises ``KeyboardInterrupt`` at once."""

    __slots__ = ('_lock', '_set', '_reader')

    def __init__(self, reader: Optional[Reader] = None) -> None:
        self._lock = _thread.allocate_lock()
        self._lock.acquire()
        self._set = False
        self._reader = reader

    def is_set(self) -> bool:
        return self._set

    isSet = is_set

    def set(self) -> None:
        if not self._set:
            self._set = True
            self._lock.release()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """True once set; False if ``timeout`` (seconds) passed first."""
        if self._set:
            return True
        if self._reader is not None:
            return self._reader(self, timeout)
        return self.wait_set(timeout)

    def wait_set(self, timeout: Optional[float] = None) -> bool:
        """Wait for another thread to ``set`` it."""
        if self._lock.acquire(True, -1 if timeout is None else max(0.0, timeout)):
            self._lock.release()  # the next waiter goes through in turn
            return True
        return self._set


class DispyNodeAvailInfo:
    """What a node has free (dispy 4.15): CPU idle as a percentage, memory and disk in bytes,
    swap free as a percentage. Nodes report it at each pulse (``DispyNode.AvailInfo`` events
    of ``cluster_status``, and ``NodeAllocate.allocate``'s ``avail_info``)."""

    def __init__(self, cpu: float, memory: int, disk: int, swap: float) -> None:
        self.cpu = cpu
        self.memory = memory
        self.disk = disk
        self.swap = swap


class DispyNode:
    """A node as one cluster sees it: its jobs there, and how much time they took."""

    Initialized = NODE_INITIALIZED
    Closed = NODE_CLOSED
    AvailInfo = 17
    SetupFailed = NODE_SETUP_FAILED
    """(Not in dispy.) The node could not set the computation up: ``setup_failure`` says why."""

    def __init__(self, ip_addr: str, name: str, cpus: int) -> None:
        self.ip_addr = ip_addr
        self.name = name
        self.cpus = cpus
        self.avail_cpus = cpus
        self.busy = 0
        self.jobs_done = 0
        self.cpu_time = 0.0
        self.tx = 0
        self.rx = 0
        self.update_time = time.time()
        self.avail_info: Optional[DispyNodeAvailInfo] = None
        self.platform = ''  # the node's ``platform.platform()``
        self.setup_failure: Optional[str] = None  # why it could not set the computation up
        self.closed = False

    def __repr__(self) -> str:
        return '<DispyNode %s (%s) %d CPUs>' % (self.ip_addr, self.name, self.cpus)


class NodeAllocate:
    """Which nodes a cluster uses, and how much of each (dispy 4.x).

    ``host`` is a name, address or pattern (``'192.168.1.*'``); ``cpus`` limits the CPUs used
    on matching nodes (0: all; negative: all but that many); ``depends`` are files and modules
    sent only to those nodes; ``setup_args`` are passed to ``setup`` there. Subclass and
    override ``allocate`` to decide per node: it returns the CPUs to use, 0 to skip the node.
    """

    def __init__(self, host: str, port: Optional[int] = None, cpus: int = 0,
                 depends: Iterable[Any] = (), setup_args: Iterable[Any] = ()) -> None:
        self.ip_addr = host
        self.port = port
        self.cpus = cpus
        self.depends = list(depends)
        self.setup_args = tuple(setup_args)

    @property
    def offered(self) -> bool:
        """Whether matching nodes wait for ``allocate`` before the computation is set up
        there (a subclass, or CPUs, files or setup arguments of its own)."""
        return (type(self).allocate is not NodeAllocate.allocate or bool(self.cpus)
                or bool(self.depends) or bool(self.setup_args))

    def matches(self, ip_addr: str, name: str) -> bool:
        return (fnmatch.fnmatchcase(ip_addr, self.ip_addr)
                or fnmatch.fnmatchcase(name, self.ip_addr))

    def allocate(self, cluster: Any, ip_addr: str, name: str, cpus: int,
                 avail_info: Any = None, platform: str = '') -> int:
        if self.cpus > 0:
            return min(self.cpus, cpus)
        if self.cpus < 0:
            return max(0, cpus + self.cpus)
        return cpus
