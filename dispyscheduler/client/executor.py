"""``DispyExecutor``: the cluster as a ``concurrent.futures.Executor``.

Its cluster's computation is ``run_calls`` below, which calls any function. Each distinct
function is pickled once (cloudpickle) and shared by its jobs: the scheduler sends it to each
node once, into the computation's directory (``Submit.refs``), and each worker process loads
it once. A job carries one call (``submit``) or a chunk of calls (``map(chunksize=)``), each of
which returns its value or the exception it raised, so ``future.result()`` raises the
function's own exception, with the node's traceback as its cause.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import os
import threading
import time
import traceback
import weakref
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Optional

import cloudpickle

from ..constants import CREATED
from ..wire.files import Spool
from . import futures
from .computation import carry_by_value

if TYPE_CHECKING:
    from .cluster import SharedJobCluster
    from .job import DispyJob

Call = tuple[tuple, dict]
"""``(args, kwargs)`` of one call."""

Outcome = tuple[bool, Any]
"""One call's end: ``(True, value)``, or ``(False, (exception, traceback text))``."""

MAX_SHARED_FUNCTIONS = 256
"""Distinct functions an executor shares through the nodes' directories; more (a lambda made
afresh for every call) travel with their jobs instead, within the scheduler's limit on a
cluster's uploads."""

FUNCTION_FILE = '_dispyscheduler_function_%s.pickle'
"""The name of a shared function's file in the computation's directory on a node."""

_loaded: dict[str, Callable[..., Any]] = {}
"""In a worker process: the shared functions it has loaded, by reference."""


def run_calls(ref: Optional[str], function: Optional[bytes], calls: list[Call]) -> list[Outcome]:
    """The executor cluster's computation, on a node: ``function`` (or the shared function
    ``ref``) called for each of ``calls``."""
    if function is not None:
        target = node_globals(cloudpickle.loads(function))
    else:
        assert ref is not None
        target = _loaded.get(ref)
        if target is None:
            # the computation's directory (``dispy_job_path``, set where it was loaded), even if
            # a call moved elsewhere
            home = globals().get('dispy_job_path') or os.getcwd()
            with open(os.path.join(home, FUNCTION_FILE % ref), 'rb') as handle:
                target = _loaded[ref] = node_globals(cloudpickle.load(handle))
    outcomes: list[Outcome] = []
    for args, kwargs in calls:
        try:
            outcomes.append((True, target(*args, **kwargs)))
        except Exception as exc:
            outcomes.append((False, (portable(exc), traceback.format_exc())))
    return outcomes


NODE_GLOBALS = ('dispy_provisional_result', 'dispy_send_file', 'dispy_node_name',
                'dispy_node_ip_addr', 'dispy_job_path')
"""What the node gives a computation (``runner.give_globals``), which the executor's functions
see too, as if each were the computation."""


def node_globals(function: Any) -> Any:
    namespace = getattr(function, '__globals__', None)
    if namespace is not None:
        mine = globals()
        for name in NODE_GLOBALS:
            if name in mine:
                namespace.setdefault(name, mine[name])
    return function


def portable(exc: BaseException) -> BaseException:
    """``exc`` if it can travel back, else a RuntimeError that names it."""
    try:
        cloudpickle.dumps(exc)
    except Exception:
        return RuntimeError('%s: %s (the exception could not be pickled)'
                            % (type(exc).__name__, exc))
    return exc


class RemoteTraceback(Exception):
    """The cause of an exception a call raised on a node: its traceback there."""

    def __str__(self) -> str:
        return '\n' + str(self.args[0])


def raise_outcome(outcome: Outcome) -> Any:
    ok, value = outcome
    if ok:
        return value
    exc, text = value
    exc.__cause__ = RemoteTraceback(text)
    raise exc


def one_call(job: DispyJob) -> Any:
    """A ``submit`` job's outcome: the call's value, or the exception it raised."""
    return raise_outcome(futures.job_outcome(job)[0])


def chunk_of_calls(job: DispyJob) -> list[Outcome]:
    return list(futures.job_outcome(job))


class DispyExecutor(concurrent.futures.Executor):
    """Run functions on the cluster's nodes: ``submit(fn, *args, **kwargs)`` returns a
    ``concurrent.futures.Future``, ``map(fn, *iterables, chunksize=)`` yields results in
    order. Keyword arguments are those of ``cluster_class`` (``SharedJobCluster`` by
    default: ``scheduler_node``, ``secret``, ``nodes``, ``depends``, ...; or ``JobCluster``,
    a scheduler of its own). Functions of any kind travel (closures, lambdas, functions of
    ``__main__``); what they use from installed packages must be installed on the nodes.
    ``shutdown()`` (or leaving a ``with`` block) closes the cluster."""

    def __init__(self, cluster_class: Optional[type[SharedJobCluster]] = None,
                 **cluster_options: Any) -> None:
        if cluster_class is None:
            from .cluster import SharedJobCluster
            cluster_class = SharedJobCluster
        self.cluster = cluster_class(run_calls, **cluster_options)
        self._functions: dict[int, tuple[Callable[..., Any], Optional[str], Optional[bytes]]] = {}
        # its futures, until they are freed: ``shutdown(cancel_futures=True)`` cancels those
        # not started (weak: no callback per call, which would cost each call a thread hop)
        self._outstanding: weakref.WeakSet[futures.JobFuture] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._shutdown = False

    def submit(self, fn: Callable[..., Any], /, *args: Any,
               **kwargs: Any) -> concurrent.futures.Future:
        return self._submit_calls(fn, [(args, kwargs)], one_call)

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any],
            timeout: Optional[float] = None, chunksize: int = 1) -> Iterator[Any]:
        """As ``Executor.map``; ``chunksize`` calls go in each job. A call that raised raises
        here when its turn comes, after the values of those before it."""
        if chunksize < 1:
            raise ValueError('chunksize must be >= 1')
        deadline = None if timeout is None else time.monotonic() + timeout
        calls = zip(*iterables)
        chunks = []
        while True:
            chunk: list[Call] = [(args, {}) for args in itertools.islice(calls, chunksize)]
            if not chunk:
                break
            chunks.append(self._submit_calls(fn, chunk, chunk_of_calls))
        return self._results_in_order(chunks, deadline)

    @staticmethod
    def _results_in_order(chunks: list[concurrent.futures.Future],
                          deadline: Optional[float]) -> Iterator[Any]:
        try:
            chunks.reverse()
            while chunks:
                future = chunks[-1]
                outcomes = future.result(None if deadline is None else
                                         max(0.0, deadline - time.monotonic()))
                chunks.pop()
                for outcome in outcomes:
                    yield raise_outcome(outcome)
        finally:
            for future in chunks:  # the caller stopped early, or a call raised
                future.cancel()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Take no more calls; ``cancel_futures`` cancels those that have not started; the
        cluster closes once the rest have ended (before this returns with ``wait``, else in
        a thread of its own, which the interpreter waits for at exit, as for any
        executor)."""
        with self._lock:
            if self._shutdown:
                return
            self._shutdown = True
            outstanding = list(self._outstanding)
        if cancel_futures:
            for future in outstanding:
                if future.job_status == CREATED:  # not started, as far as this client knows
                    future.cancel()
        if wait:
            self.cluster.close()
        else:
            threading.Thread(target=self.cluster.close,
                             name='DispyExecutor.shutdown').start()

    def _submit_calls(self, fn: Callable[..., Any], calls: list[Call],
                      unwrap: futures.Unwrap) -> concurrent.futures.Future:
        if not callable(fn):
            raise TypeError('%r is not callable' % (fn,))
        with self._lock:
            if self._shutdown:
                raise RuntimeError('cannot schedule new calls after shutdown')
        ref, inline = self._function(fn)
        job = self.cluster._submit(None, None, (ref, inline, calls), {},
                                   refs=() if ref is None else (ref,))
        future = futures.future_of(job, unwrap)  # the first to ask: a new job
        with self._lock:
            self._outstanding.add(future)
        return future

    def _function(self, fn: Callable[..., Any]) -> tuple[Optional[str], Optional[bytes]]:
        """How ``fn`` travels: the reference of its shared copy, or its pickle (past
        ``MAX_SHARED_FUNCTIONS``)."""
        known = self._functions.get(id(fn))
        if known is not None and known[0] is fn:
            return known[1], known[2]
        carry_by_value(fn)
        try:
            data = cloudpickle.dumps(fn)
        except Exception as exc:
            raise TypeError('function %r cannot be pickled: %s' % (fn, exc)) from exc
        with self._lock:
            if len(self._functions) >= MAX_SHARED_FUNCTIONS:
                return None, data
        ref = self.cluster._share(Spool.of(data), FUNCTION_FILE)
        with self._lock:
            self._functions[id(fn)] = (fn, ref, None)  # fn kept: its id is not reused
        return ref, None
