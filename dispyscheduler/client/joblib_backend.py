"""joblib's ``'dispyscheduler'`` parallel backend: joblib's and scikit-learn's parallel work
(``Parallel``, ``GridSearchCV(n_jobs=-1)``, ``cross_val_score``, ...) run on the cluster's
nodes, with nothing changed in the code that calls them::

    import joblib
    from sklearn.model_selection import GridSearchCV
    from sklearn.svm import SVC

    with joblib.parallel_backend('dispyscheduler', scheduler_node='10.0.0.1',
                                 secret='...'):
        GridSearchCV(SVC(), {'C': [0.1, 1, 10]}, n_jobs=-1).fit(X, y)

Why: scikit-learn and many other libraries parallelise through joblib only, so a joblib
backend is how their work reaches a cluster (Dask and Ray offer theirs for the same reason).

The backend's keyword arguments are those of ``DispyExecutor``, and so of
``SharedJobCluster`` (``scheduler_node``, ``scheduler_port``, ``secret``, ``nodes``,
``depends``, ...), or of ``JobCluster`` with ``cluster_class=JobCluster``, with
``reentrant=True`` by default (a batch lost with its node runs again on another; with
``reentrant=False`` it fails with ``JobFailed``); besides them,
``wait_for_nodes_timeout`` (seconds ``n_jobs=-1`` waits for a first node, 60 by default;
None: for ever) and ``executor`` (a ``DispyExecutor`` of the program's own, used instead of a
new one and never closed here). joblib makes the backend once per ``parallel_backend`` (or
``parallel_config``) block, and it makes one cluster, at once (a wrong secret fails at the
``with`` line), which every ``Parallel`` call of the block shares. When joblib lets go of the
backend, as the block ends (or a moment later, once joblib's last callback has returned in
the backend's thread), the cluster is closed (what is left of its jobs cancelled: nobody
can collect them any more): new calls are refused at once and the closing goes on in a thread
of the executor's. CPython frees the backend at the end of the block unless something still
holds it: ``with parallel_backend(...) as (backend, n_jobs)`` keeps it in ``backend``, and an
exception that ``Parallel`` raised keeps it through joblib's frames in its traceback while
the exception is kept (``pytest.raises(...) as info``, say); it is then closed when that goes,
or at the next garbage collection. At exit every backend still open is closed, and waited
for, before the clusters' own exit handlers run. ``backend.close()`` closes it at once and
returns once it is closed; a backend is also a context manager:
``with DispyBackend(**options) as backend, joblib.parallel_config(backend=backend): ...``.

How it runs: joblib groups calls in batches (sized automatically, as for its other
backends), and each batch is one job of the executor; ``n_jobs=-1`` is the CPUs the cluster
has on its nodes (``n_jobs=-k``: k-1 fewer), and a batch's exception is raised by
``Parallel`` with its own type, the node's traceback as its cause. Calls nested in a batch
(an estimator's own ``n_jobs`` inside ``GridSearchCV``) run one after the other in the job, on
the CPU the node gave it. joblib (and whatever the calls use, scikit-learn say) must be
installed on the nodes; functions of the program's own modules travel by value, as for
``DispyExecutor``. ``require='sharedmem'`` work stays in this process, in threads, as joblib
does for every backend without shared memory.

joblib is optional: this module is imported only by a program that uses it (``register()``,
called once joblib is imported, makes the name ``'dispyscheduler'`` known to joblib).
"""

from __future__ import annotations

import atexit
import concurrent.futures
import functools
import logging
import queue
import threading
import time
import weakref
from typing import Any, Callable, Optional

import joblib
from joblib.parallel import AutoBatchingMixin, ParallelBackendBase, SequentialBackend

from .computation import carry_by_value
from .executor import DispyExecutor

logger = logging.getLogger(__name__)

BACKEND_NAME = 'dispyscheduler'

WAIT_FOR_NODES_TIMEOUT = 60.0
"""Seconds ``n_jobs=-1`` waits for the cluster's first node, by default."""


def register() -> None:
    """Make ``joblib.parallel_backend('dispyscheduler', ...)`` known to joblib."""
    joblib.register_parallel_backend(BACKEND_NAME, DispyBackend)


def run_batch(batch: Callable[[], list[Any]]) -> list[Any]:
    """On a node: one batch of joblib's calls (a ``BatchedCalls``), their values in order."""
    return batch()


class DispyBackend(AutoBatchingMixin, ParallelBackendBase):
    """joblib's backend on a ``DispyExecutor``; see the module's docstring."""

    default_n_jobs = -1  # all the cluster's CPUs unless the caller says otherwise
    supports_retrieve_callback = True  # the values reach joblib in ``callback`` (joblib 1.3+)
    supports_inner_max_num_threads = False
    # a batch taking less than this much is too small to be worth a job (joblib's own
    # backends aim at 0.2 to 2 seconds: a job's round trip here is well under a millisecond,
    # but a batch carries its arguments over the network to another host)
    MIN_IDEAL_BATCH_DURATION = 0.2
    MAX_IDEAL_BATCH_DURATION = 1.0

    def __init__(self, nesting_level: Optional[int] = None,
                 inner_max_num_threads: Optional[int] = None,
                 wait_for_nodes_timeout: Optional[float] = WAIT_FOR_NODES_TIMEOUT,
                 executor: Optional[DispyExecutor] = None, **cluster_options: Any) -> None:
        super().__init__(nesting_level=nesting_level,
                         inner_max_num_threads=inner_max_num_threads)
        if executor is not None and cluster_options:  # checked before any default is added
            raise TypeError('executor= is given: cluster options (%s) would have no effect'
                            % ', '.join(sorted(cluster_options)))
        self.wait_for_nodes_timeout = wait_for_nodes_timeout
        self.parallel: Any = None
        self._pending: set[concurrent.futures.Future] = set()  # this backend's, not ended
        self._pending_lock = threading.Lock()
        self._callbacks = CallbackThread()
        owned = executor is None
        # a batch lost with its node runs again on another (a Dask worker's tasks do the
        # same): joblib's calls are meant to have no effect but their values
        cluster_options.setdefault('reentrant', True)
        try:
            self.executor = DispyExecutor(**cluster_options) if executor is None else executor
        except BaseException:
            self._callbacks.stop()
            raise
        # closes the cluster when joblib lets go of the backend; it holds the executor and
        # the thread, never the backend. Wherever the garbage collector runs it, it only
        # starts the closing (in a thread of the executor's), so that it never holds up the
        # thread it runs in; at exit the cluster is closed before the program goes on
        # exiting (registered after the cluster's own exit handler, so run before it)
        self._finalizer = weakref.finalize(self, close_backend,
                                           self.executor if owned else None, self._callbacks,
                                           self._pending, self._pending_lock)
        self._finalizer.atexit = False
        atexit.register(close_now, self._finalizer)

    # what joblib calls

    def configure(self, n_jobs: Optional[int] = 1, parallel: Any = None,
                  **backend_kwargs: Any) -> int:
        """The start of a ``Parallel`` call: how many batches to keep going at once."""
        if not self._finalizer.alive:
            raise RuntimeError('the dispyscheduler backend is closed')
        self.parallel = parallel
        self.reset_batch_stats()  # another call, other calls: sized afresh
        return self.effective_n_jobs(n_jobs)

    def effective_n_jobs(self, n_jobs: Optional[int]) -> int:
        """``n_jobs`` if it is positive; else the CPUs of the cluster's nodes (``-1``: all,
        ``-2``: all but one, ...), once it has a node (``wait_for_nodes_timeout``)."""
        if n_jobs == 0:
            raise ValueError('n_jobs == 0 in Parallel has no meaning')
        if n_jobs is not None and n_jobs > 0:
            return n_jobs
        return max(self.cluster_cpus() + 1 + (-1 if n_jobs is None else n_jobs), 1)

    def cluster_cpus(self) -> int:
        """The CPUs the cluster has on its nodes; if it has none yet, once a first node has
        set the cluster up (waiting at most ``wait_for_nodes_timeout`` seconds). A new
        cluster hears of its nodes within moments; this looks every few milliseconds at
        first, then less often, and runs nothing on the nodes (a call would wait for a free
        CPU, which on a busy shared cluster can take long)."""
        deadline = None if self.wait_for_nodes_timeout is None else \
            time.monotonic() + self.wait_for_nodes_timeout
        pause = 0.005
        while True:
            cpus = sum(node.cpus for node in self.executor.cluster.status().nodes)
            if cpus:
                return cpus
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(
                    'the dispyscheduler cluster had no node after %s seconds: start '
                    "dispynodes for its scheduler, or wait longer with joblib.parallel_backend("
                    "'dispyscheduler', wait_for_nodes_timeout=..., ...)"
                    % (self.wait_for_nodes_timeout,))
            time.sleep(pause if remaining is None else min(pause, remaining))
            pause = min(pause * 2, 0.1)

    def submit(self, func: Callable[[], Any],
               callback: Optional[Callable[[Any], Any]] = None) -> concurrent.futures.Future:
        """Run a batch of calls as a job; ``callback(future)`` once it has ended (in a
        thread of the backend's own: joblib dispatches the next batch from there)."""
        try:
            carry_calls_by_value(func)
            future = self.executor.submit(run_batch, func)
        except Exception as exc:  # joblib would wait for ever for a batch it never hears of
            future = concurrent.futures.Future()
            future.set_exception(exc)
        with self._pending_lock:
            self._pending.add(future)
        future.add_done_callback(Relay(callback, self._callbacks, self._pending,
                                       self._pending_lock))
        return future

    def apply_async(self, func: Callable[[], Any],
                    callback: Optional[Callable[[Any], Any]] = None
                    ) -> concurrent.futures.Future:
        """joblib before 1.5 calls this rather than ``submit``."""
        return self.submit(func, callback)

    def retrieve_result_callback(self, out: concurrent.futures.Future) -> Any:
        """A batch's values, or the exception one of its calls raised."""
        return out.result()

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """A call raised (or joblib's timeout passed): cancel the batches not ended. The
        cluster stays, for the next ``Parallel`` call, whatever ``ensure_ready`` says."""
        with self._pending_lock:
            pending = list(self._pending)
        for future in pending:
            future.cancel()

    def terminate(self) -> None:
        """The end of a ``Parallel`` call: the cluster stays for the next one."""
        self.parallel = None  # no cycle through the Parallel object: the backend is freed
        # as soon as joblib lets go of it

    def get_nested_backend(self) -> tuple[Any, Optional[int]]:
        """Calls nested in a batch run one after the other, in the batch's job."""
        return SequentialBackend(nesting_level=(self.nesting_level or 0) + 1), None

    def __reduce__(self) -> tuple[Any, tuple]:
        # a copy sent elsewhere (a node) must not open a cluster of its own
        return SequentialBackend, ((self.nesting_level or 0) + 1,)

    # the program's own

    def close(self) -> None:
        """Close the cluster now (cancelling what is left of its jobs), unless the executor
        was the program's own (``executor=``); returns once it is closed. Later
        ``Parallel`` calls raise."""
        close_now(self._finalizer)

    def __enter__(self) -> DispyBackend:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return '<DispyBackend cluster %s>' % (self.executor.cluster.cid,)


class Relay:
    """A batch's future's done-callback: hands ``callback`` the future in the backend's
    callback thread. It lets go of ``callback`` (which holds joblib's ``Parallel``, and
    through it the backend) once called, so that a future kept by the cluster never keeps the
    backend alive."""

    __slots__ = ('callback', 'thread', 'pending', 'lock')

    def __init__(self, callback: Optional[Callable[[Any], Any]], thread: CallbackThread,
                 pending: set[concurrent.futures.Future], lock: threading.Lock) -> None:
        self.callback = callback
        self.thread = thread
        self.pending = pending
        self.lock = lock

    def __call__(self, future: concurrent.futures.Future) -> None:
        with self.lock:
            self.pending.discard(future)
        callback, self.callback = self.callback, None
        if callback is not None:
            self.thread.put(callback, future)


class CallbackThread:
    """Runs joblib's callbacks, one at a time, in a thread of their own: joblib dispatches
    its next batch from its callback, which must neither hold up the thread that reads the
    scheduler's link (the futures end there) nor wait for room there for its submission."""

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[Optional[tuple[Callable[[Any], Any], Any]]] = \
            queue.SimpleQueue()
        self.thread = threading.Thread(target=run_callbacks, args=(self.queue,), daemon=True,
                                       name='dispyscheduler-joblib-callbacks')
        self.thread.start()

    def put(self, callback: Callable[[Any], Any], future: Any) -> None:
        self.queue.put((callback, future))

    def stop(self) -> None:
        self.queue.put(None)


def run_callbacks(calls: queue.SimpleQueue[Optional[tuple[Callable[[Any], Any], Any]]]
                  ) -> None:
    """The callback thread (a function, not a method: it holds no backend)."""
    while True:
        call = calls.get()
        if call is None:
            return
        callback, future = call
        del call
        try:
            callback(future)
        except Exception:
            logger.exception("joblib's callback failed")
        del callback, future  # no reference to joblib's Parallel kept while waiting


def close_backend(executor: Optional[DispyExecutor], callbacks: CallbackThread,
                  pending: set[concurrent.futures.Future], lock: threading.Lock,
                  wait: bool = False) -> None:
    """The backend's finalizer: cancel its batches not ended, queued or running (nobody can
    collect them any more), close its cluster (if its own; before returning with ``wait``,
    else in a thread of the executor's) and its callback thread."""
    try:
        with lock:
            unfinished = list(pending)
        for future in unfinished:
            future.cancel()
        if executor is not None:
            executor.shutdown(wait=wait, cancel_futures=True)
    finally:
        callbacks.stop()


def close_now(finalizer: weakref.finalize) -> None:
    """Run the backend's finalizer, if it has not run, and wait for the cluster to close
    (``close()``, and at exit)."""
    detached = finalizer.detach()
    if detached is not None:
        _, function, args, _ = detached
        function(*args, wait=True)


_checked_modules: set[str] = set()


def carry_calls_by_value(batch: Any) -> None:
    """The functions of a batch's calls (and the classes of their arguments) that come from
    the program's own modules travel by value, as a function given to ``DispyExecutor`` does:
    those modules need not exist on the nodes."""
    for call in getattr(batch, 'items', ()):
        function, args, kwargs = call
        for _ in range(3):  # scikit-learn's ``delayed`` wraps the function, as partial does
            carry_module(function)
            inner = function.func if isinstance(function, functools.partial) else \
                getattr(function, 'function', None)
            if inner is None or not callable(inner):
                break
            function = inner
        for value in (*args, *kwargs.values()):
            carry_module(value)


def carry_module(value: Any) -> None:
    module = getattr(value, '__module__', None)
    if isinstance(module, str) and module not in _checked_modules:
        _checked_modules.add(module)
        carry_by_value(value)
