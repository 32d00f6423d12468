"""``SharedJobCluster``: a user's program's handle on the shared scheduler.

Plain threads and blocking sockets; importing this never monkey-patches the user's process.
One long-lived link to the scheduler (``connection.py``, which reconnects and resumes the
cluster when it breaks) carries submissions out and statuses and results in: a reader thread,
or a thread waiting for a job's end (``seat.py``), applies what arrives to the jobs, a writer
thread sends what ``submit`` could not send at once, and callbacks run one at a time, in order,
on a thread of their own. A submission is kept until the scheduler says it is saved, and sent again
after a reconnect; results are acknowledged as they arrive, and a result that arrives twice is
dropped.

The cluster's credential is written to a recovery file, so that ``recover_jobs`` in another
process can collect the results of a program that was killed.
"""

from __future__ import annotations

import atexit
import copy
import glob
import hashlib
import itertools
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
import weakref
from typing import Any, Callable, Iterable, Literal, Mapping, Sequence, TextIO, Union

from ..constants import (ABANDONED, ACK_BATCH, ACK_DELAY, CLIENT_CLUSTER_TIMEOUT,
                         CLIENT_RECONNECT_TIMEOUT, CREATED,
                         FINAL_STATUSES, FRAME_MARGIN, INLINE_ARGUMENTS_LIMIT, MAX_FRAME_SIZE,
                         NODE_CLOSED, NODE_INITIALIZED, NODE_SETUP_FAILED, PROVISIONAL_RESULT,
                         IMMUTABLE_DATA, RUNNING, SCHEDULER_CLIENT_PORT, SMALL_TYPES,
                         SPOOL_LIMIT,
                         STORED_VALUE_THRESHOLD,
                         TERMINATED, VALUE_LINGER)
from ..resources import CPUS, ONE_CPU, Need
from ..wire import messages as m
from ..wire.files import (FileRefused, IncomingFiles, IncomingPayloads, Spool, check_size,
                          discard, read_chunks)
from ..wire.link import Link
from ..wire.protocol import ProtocolError
from ..wire.serialize import VALUE_FILE, StoredValue, load_file, obviously_large
from . import futures
from .callbacks import CallbackRunner
from .window import SubmitWindow
from .connection import Refused, SchedulerConnection
from .computation import (FileEntry, collect_depends, file_entry, pack_computation, spool_value,
                          pack_value, unpack_result)
from .job import ClusterStatus, DispyJob, DispyNode, DispyNodeAvailInfo, NodeAllocate

logger = logging.getLogger('dispyscheduler')

NodeEntry = Union[str, Sequence[Any], NodeAllocate, DispyNode]
"""An entry of ``nodes``: a host name, address or pattern, a ``(host, port)`` pair, a
``NodeAllocate`` or a ``DispyNode``."""

JobCallback = Callable[[DispyJob], Any]
"""``callback(job)``: called with a copy of a job at each change of its status."""

ClusterCallback = Callable[[int, Union[DispyNode, None], Union[DispyJob, None]], Any]
"""``cluster_status(status, node, job)``: called at each change of a job's or a node's
status, with copies of them (``None`` for the one that did not change)."""

IGNORED_OPTIONS = ('dest_path', 'pulse_interval', 'ping_interval', 'poll_interval',
                   'fault_recover', 'client_port', 'dispy_port', 'host',
                   'ext_host', 'exclusive', 'ipv4_udp_multicast', 'node_port')
"""dispy constructor options with no meaning here (the scheduler decides intervals, and
results come back on the client's own connection); accepted so that programs run unchanged."""


class SharedJobCluster:
    _private_scheduler: dict[str, Any] | None = None
    """A JobCluster's scheduler's configuration, for ``recover_jobs`` to start it again."""

    """Run ``computation`` (a function, or the path of a program) on the nodes of a shared
    ``dispyscheduler``.

    Arguments are those of dispy's ``SharedJobCluster``. ``scheduler_node`` (alias
    ``scheduler_host``) defaults to this host; ``secret`` is the scheduler's
    ``--cluster_secret``; ``certfile``/``keyfile`` (or ``cafile``, which also verifies the
    scheduler's certificate) turn on TLS. ``callback`` (alias ``job_status``) is called with a
    copy of the job at each status change; ``cluster_status(status, node, job)`` also for
    nodes set up or closed. ``job_timeout`` (seconds) limits each job's run time unless its
    ``submit`` says otherwise.
    """

    def __init__(self, computation: Callable[..., Any] | str,
                 nodes: Sequence[NodeEntry] | None = None, depends: Iterable[Any] = (),
                 callback: JobCallback | None = None, ip_addr: str | None = None,
                 ext_ip_addr: str | None = None, port: int = 0,
                 scheduler_node: str | None = None, scheduler_port: int = SCHEDULER_CLIENT_PORT,
                 loglevel: int = logging.WARNING, setup: Callable[..., Any] | None = None,
                 cleanup: bool | Callable[..., Any] = True, reentrant: bool = False,
                 secret: str = '', keyfile: str | None = None, certfile: str | None = None,
                 cafile: str | None = None, scheduler_host: str | None = None,
                 job_status: JobCallback | None = None,
                 cluster_status: ClusterCallback | None = None,
                 job_timeout: float | None = None,
                 recover_file: str | Literal[False] | None = None,
                 reconnect_timeout: float = CLIENT_RECONNECT_TIMEOUT,
                 resources: Mapping[str, Any] | None = None,
                 **dispy_options: Any) -> None:
        logger.setLevel(loglevel)
        need = Need.from_user(resources)  # a ResourceError (ValueError) before anything
        for name in dispy_options:
            if name not in IGNORED_OPTIONS:
                raise TypeError('SharedJobCluster() got an unexpected keyword argument %r'
                                % (name,))
            logger.info('option %s has no effect with dispyscheduler', name)
        del ext_ip_addr  # results return on the client's own connection: nothing to announce
        if isinstance(nodes, str):  # dispy takes one pattern as well as a list of them
            nodes = [nodes]
        packed = pack_computation(computation, depends, setup, cleanup)
        allocators = node_allocations(nodes or ['*'])
        name = os.path.basename(computation) if isinstance(computation, str) else \
            getattr(computation, '__name__', str(computation))
        host = scheduler_node or scheduler_host
        connection = SchedulerConnection(
            [host] if host else ['127.0.0.1', socket.gethostname()], scheduler_port, ip_addr,
            port, secret, (certfile, keyfile, cafile), reconnect_timeout)
        self._prepare(name, connection, job_status or callback, cluster_status, job_timeout)
        self._need = need
        self._allocators = allocators
        self._program = isinstance(computation, str)
        link = connection.connect()
        try:
            body = self._create(link, packed.code, packed.files, reentrant, cleanup)
        except BaseException:
            link.sock.close()
            raise
        self._attached(link, body)
        if recover_file is not False:
            self._write_recover_file(recover_file, connection.host, scheduler_port)
        atexit.register(_leave_at_exit, weakref.ref(self))

    def _prepare(self, name: str, connection: SchedulerConnection,
                 job_status: JobCallback | None, cluster_status: ClusterCallback | None,
                 job_timeout: float | None) -> None:
        """What every cluster object holds, new or recovered."""
        self.name = name
        self.cid: int | None = None
        self._connection = connection
        self._job_status = job_status
        self._cluster_status = cluster_status
        self._job_timeout = job_timeout
        self._need = ONE_CPU  # what its jobs need unless submitted with their own
        self._allocators = list[NodeAllocate]()  # ``nodes``, then ``allocate_node``'s
        # (path, size, mtime) -> reference of a file uploaded for some nodes only
        self._uploaded: dict[tuple[str, int, int], str] = {}
        # reference -> data shared by jobs (``_share``): their large arguments, an
        # executor's functions
        self._shared: dict[str, Shared] = {}
        self._idle: dict[str, float] = {}  # values no unfinished job uses -> since when
        # id of an immutable argument (bytes, str) shared as a value -> (it, its reference):
        # given to job after job, it is pickled once
        self._pickled: dict[int, tuple[Any, str]] = {}
        self._sharing = threading.Lock()
        self._controls: dict[int, list[Any]] = {}  # rid -> [Event, NodeControl, answer]
        self._rids = itertools.count(1)
        self._jobs: dict[int, DispyJob] = {}  # uid -> DispyJob not yet final
        self._jobs_submitted = self._jobs_done = 0  # for status pages (DispyHTTPServer)
        self._program = False  # the computation is a program: its output is bytes, as dispy's
        # uid -> submission the scheduler has not said it saved
        self._unsaved: dict[int, m.Submit] = {}
        self._nodes: dict[str, DispyNode] = {}  # ip_addr -> DispyNode
        self._uids = itertools.count(1)
        # uid -> IncomingFiles of files its job sends back
        self._incoming: dict[int, IncomingFiles] = {}
        self._payloads = IncomingPayloads()  # large results arriving, by uid
        self._payload_directory: str | None = None  # made for the first
        self._acks: list[int] = []  # uids of results received and not acknowledged yet
        self._acks_lock = threading.Lock()
        self._ack_timer: threading.Timer | None = None
        self._closing = False
        self._close_request: m.Close | None = None  # sent, and sent again on resuming
        self._closed = threading.Event()
        self._lost: str | None = None
        self._recovering = False  # accept results of jobs this process did not submit
        self._recovered: dict[int, DispyJob] = {}  # uid -> DispyJob of those, finished or not
        self._pending_known = threading.Event()
        self._recover_file: str | None = None
        self._start_time = time.time()
        self._callbacks = CallbackRunner() if job_status or cluster_status else None
        # jobs not ended, within the scheduler's limits (``submit()`` waits for room)
        self._window = SubmitWindow(connection.wait_for)
        self._handlers: dict[type, Callable[[Any], None]] = {
            m.JobEnd: self._on_job_end, m.Submitted: self._on_submitted,
            m.JobsPending: self._on_jobs_pending, m.JobStatus: self._on_job_status,
            m.ProvisionalResult: self._on_provisional_result, m.FilePart: self._receive_file,
            m.NodeStatus: self._on_node_status, m.NodeOffer: self._on_node_offer,
            m.ClusterWarning: self._on_cluster_warning, m.Closed: self._on_closed,
            m.NodeControlDone: self._on_node_control_done, m.PayloadPart: self._on_payload_part,
        }

    def _attached(self, link: Link, accepted: m.ClusterOk) -> None:
        """The scheduler accepted the cluster (``accepted``: its ``ClusterOk``): start the
        threads."""
        self.cid = accepted.cid
        self._credential = accepted.credential
        self._max_file_size = accepted.max_file_size
        self._window.limits(accepted.max_jobs, accepted.max_job_bytes)
        self._connection.start(link, self._on_message, self._resume, self._resumed,
                               self._give_up)
        if self._callbacks is not None:
            self._callbacks.start()

    def _resume(self, link: Link) -> m.ClusterOk:
        """Attach a new link to this cluster (after a reconnect, or to recover it); the
        scheduler's ``ClusterOk``."""
        assert self.cid is not None  # known by now: from ``_attached``, or the recovery file
        link.send_now(m.ClusterResume(cid=self.cid, credential=self._credential))
        try:
            accepted = link.expect(m.ClusterOk, time.monotonic() + CLIENT_CLUSTER_TIMEOUT)
        except ProtocolError as exc:
            raise Refused(str(exc)) from None
        self._window.limits(accepted.max_jobs, accepted.max_job_bytes)  # restarted, changed?
        return accepted

    @classmethod
    def _recover(cls, record: dict[str, Any], path: str, secret: str,
                 tls_files: tuple[str | None, str | None, str | None],
                 loglevel: int) -> SharedJobCluster:
        """A cluster object attached to the cluster described by a recovery file."""
        logger.setLevel(loglevel)
        cluster = cls.__new__(cls)
        connection = SchedulerConnection([record['scheduler']], record['port'], None, 0,
                                         secret, tls_files, CLIENT_RECONNECT_TIMEOUT)
        cluster._prepare(record['name'], connection, None, None, None)
        cluster.cid = record['cid']
        cluster._credential = bytes.fromhex(record['credential'])
        cluster._recovering = True
        cluster._recover_file = os.path.abspath(path)
        link = connection.connect()
        try:
            accepted = cluster._resume(link)
        except BaseException:
            link.sock.close()
            raise
        cluster._attached(link, accepted)
        return cluster

    def _resumed(self) -> None:
        """Send again what the scheduler may not have saved before the link broke, and the
        request to close if it was made meanwhile."""
        self._uploaded.clear()  # an upload cut short is sent again when a node wants it
        with self._sharing:  # before the submissions that need them
            for ref in list(self._shared):
                self._send_shared(ref)
        for submission in list(self._unsaved.values()):
            self._connection.send(submission)
        for _, request, _ in list(self._controls.values()):
            self._connection.send(request)
        if self._close_request is not None:
            self._connection.send(self._close_request)

    def _give_up(self, reason: str) -> None:
        self._lost = reason
        logger.error('cluster %s: %s; %d unfinished jobs abandoned', self.cid, reason,
                     len(self._jobs))
        for uid in list(self._jobs):
            self._end(uid, ABANDONED, None, reason)
        self._closed.set()
        self._window.wake()  # a submit() waiting for room raises

    def _write_recover_file(self, path: str | None, host: str | None, port: int) -> None:
        """Where and how to find this cluster again (``recover_jobs``); only the owner may
        read it, for it holds the cluster's credential."""
        assert self.cid is not None  # from ``_attached``
        path = path or '_dispyscheduler_%s_%d.json' % (time.strftime('%Y%m%d%H%M%S'), self.cid)
        record: dict[str, Any] = {'scheduler': host, 'port': port, 'cid': self.cid,
                                  'credential': self._credential.hex(), 'name': self.name}
        if self._private_scheduler is not None:  # a JobCluster's: how to start it again
            record['private_scheduler'] = self._private_scheduler
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, 'w') as handle:
            json.dump(record, handle)
        self._recover_file = os.path.abspath(path)

    def _create(self, link: Link, code: bytes, files: list[FileEntry], reentrant: bool,
                cleanup: bool | Callable[..., Any]) -> m.ClusterOk:
        """Send the computation and its files; the scheduler's ``ClusterOk``."""
        link.send_now(m.ClusterNew(
            name=self.name, code=code,
            nodes=[(entry.ip_addr, entry.port or 0) for entry in self._allocators],
            reentrant=bool(reentrant), cleanup=bool(cleanup),
            files=[(name, os.path.getsize(path), mode) for name, path, mode in files],
            allocate=any(entry.offered for entry in self._allocators),
            resources=self._need.to_wire()))
        try:
            for name, path, _ in files:
                for offset, data, last in read_chunks(path):
                    link.send_now(m.ClusterFile(name=name, offset=offset, data=data,
                                                last=last))
        except (ConnectionError, OSError):
            pass  # the scheduler refused the files; its reason is read below
        try:
            return link.expect(m.ClusterOk, time.monotonic() + CLIENT_CLUSTER_TIMEOUT)
        except ProtocolError as exc:
            raise ValueError('the scheduler refused the computation: %s' % (exc,)) from None

    # jobs

    def submit(self, *args: Any, **kwargs: Any) -> DispyJob:
        """Queue ``computation(*args, **kwargs)`` to run on a node; returns its DispyJob.

        Keywords for the scheduler: ``dispy_job_depends`` (files for this job),
        ``dispy_job_timeout`` (seconds; the job is killed after that),
        ``dispy_job_priority`` (higher runs first within this cluster),
        ``dispy_job_resources`` (what it needs, as the cluster's ``resources``: keys given
        replace the cluster's, e.g. ``{'cpus': 4}``; it runs only where all is free)."""
        return self._submit(None, None, args, kwargs)

    def submit_node(self, node: DispyNode | str, *args: Any, **kwargs: Any) -> DispyJob:
        """As ``submit``, to run only on ``node`` (a DispyNode, address or name)."""
        return self._submit(None, node, args, kwargs)

    def submit_job_id(self, job_id: Any, *args: Any, **kwargs: Any) -> DispyJob:
        """As ``submit``, with ``job.id`` set to ``job_id``."""
        return self._submit(job_id, None, args, kwargs)

    def submit_job_id_node(self, job_id: Any, node: DispyNode | str, *args: Any,
                           **kwargs: Any) -> DispyJob:
        return self._submit(job_id, node, args, kwargs)

    def _submit(self, job_id: Any, node: DispyNode | str | None, args: tuple,
                kwargs: dict[str, Any], refs: Sequence[str] = ()) -> DispyJob:
        self._check_open()
        files, namespace = self._job_depends(kwargs.pop('dispy_job_depends', ()))
        timeout = kwargs.pop('dispy_job_timeout', self._job_timeout)
        priority = int(kwargs.pop('dispy_job_priority', 0))
        if not m.INT_RANGE[0] <= priority <= m.INT_RANGE[1]:
            raise ValueError('dispy_job_priority must be between %d and %d, not %d'
                             % (m.INT_RANGE[0], m.INT_RANGE[1], priority))
        need = Need.from_user(kwargs.pop('dispy_job_resources', None), self._need)
        # [] means the cluster's; one CPU where the cluster's jobs need more is said so
        resources = [] if need == self._need else need.to_wire() or [(CPUS, 1)]
        uid = next(self._uids)
        values: list[str] = []
        payload = b''
        if not any(obviously_large(arg, INLINE_ARGUMENTS_LIMIT)
                   for arg in itertools.chain(args, kwargs.values())):
            payload = pack_value((args, kwargs, namespace) if namespace else (args, kwargs),
                                 'job arguments')
        if not payload or len(payload) > INLINE_ARGUMENTS_LIMIT:  # large arguments travel
            payload = b''  # on their own
            payload, values = self._store_arguments(uid, args, kwargs, namespace)
        try:
            if isinstance(node, DispyNode):
                node = node.ip_addr
            tag = None if job_id is None else pack_value(job_id, 'job id')
            size = len(payload) + sum(len(data) for _, data, _ in files)
            if size > MAX_FRAME_SIZE - FRAME_MARGIN:  # the scheduler would drop the link
                raise ValueError('the job has %d bytes of arguments and files; one message '
                                 'may carry at most %d' % (size, MAX_FRAME_SIZE - FRAME_MARGIN))
            self._window.enter(uid, size, self._check_open)
        except BaseException:
            self._release_values(uid, values)
            raise
        job = DispyJob(args, kwargs, self._connection.wait_for)
        job._uid = uid
        job._values = values
        job._cancel = self.cancel
        job._tx = size
        job.id = uid if job_id is None else job_id
        submission = m.Submit(uid=uid, args=payload, files=files, priority=priority,
                              timeout=None if timeout is None else float(timeout), node=node,
                              tag=tag, refs=list(refs) + values, resources=resources)
        self._jobs[uid] = job
        self._jobs_submitted += 1
        self._unsaved[uid] = submission
        # if the link is down, sent on reconnecting; acknowledgements waiting go along
        self._connection.send(submission, *self._take_acks())
        if self._lost is not None:  # given up meanwhile: this job would wait for ever
            self._unsaved.pop(uid, None)
            self._jobs.pop(uid, None)
            self._release_values(uid, values)
            self._window.leave(uid)
            raise ConnectionError(self._lost)
        return job

    def _check_open(self) -> None:
        """Raise if the cluster can take no job any more."""
        if self._closing:
            raise RuntimeError('cluster is closed')
        if self._lost is not None:
            raise ConnectionError(self._lost)

    def _job_depends(self, depends: Iterable[Any] | None) -> tuple[list[m.FileData],
                                                                   dict[str, Any]]:
        """A job's ``dispy_job_depends``: files (and modules' files) to send with it, and
        functions and classes (an object: its class) to make globals of the job."""
        entries, namespace, _ = collect_depends(depends)
        files = []
        for name, path, mode in entries:
            with open(path, 'rb') as handle:
                data = handle.read()
            try:
                check_size(path, len(data), self._max_file_size)
            except FileRefused as exc:
                raise ValueError(str(exc)) from None
            files.append((name, data, mode))
        return files, namespace

    def node_jobs(self, node: DispyNode | str, from_node: bool = False) -> list[DispyJob]:
        """This cluster's jobs running on ``node`` (a DispyNode, its address or its name),
        as dispy's ``node_jobs``; ``from_node`` is accepted (the client knows them)."""
        del from_node
        if isinstance(node, DispyNode):
            node = node.ip_addr
        addresses = {ip for ip, known in self._nodes.items() if node in (ip, known.name)}
        return [job for job in list(self._jobs.values())
                if job.status == RUNNING and job.ip_addr in addresses]

    def cancel(self, job: DispyJob) -> int:
        """Cancel a queued or running job; returns 0, or -1 if it had already ended."""
        if job.status in FINAL_STATUSES or job._uid not in self._jobs:
            return -1
        self._connection.send(m.Cancel(uid=job._uid))
        return 0

    def wait(self, timeout: float | None = None, progress: bool | None = None) -> bool:
        """Wait until every submitted job has ended and its callbacks have run; False if
        ``timeout`` (seconds) passed first. ``progress`` shows a progress bar on stderr (by
        default, when stderr is a terminal)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        jobs = list(self._jobs.values())
        if progress is None:
            progress = sys.stderr.isatty()
        bar = ProgressBar(len(jobs), sys.stderr) if progress and jobs else None
        for job in jobs:
            while not job.finish.is_set():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    if bar is not None:
                        bar.finish(sum(1 for job in jobs if job.finish.is_set()))
                    return False
                step = remaining if bar is None else min(bar.refresh, remaining or bar.refresh)
                if not job.finish.wait(step) and bar is not None:
                    bar.show(sum(1 for job in jobs if job.finish.is_set()))
        if bar is not None:
            bar.finish(len(jobs))
        return self._callbacks is None or self._callbacks.join(deadline)

    def __call__(self) -> bool:
        """dispy 3.x spelling of ``wait()``."""
        return self.wait()

    def close(self, timeout: float | None = None, terminate: bool = False) -> None:
        """Wait for the jobs (unless ``terminate``), then release the cluster's nodes."""
        if self._closing:
            return
        if not terminate:
            self.wait(timeout)
        self._closing = True
        self._window.wake()  # a submit() waiting for room in another thread raises
        self._close_request = m.Close(terminate=bool(terminate))
        if self._lost is None:
            # while the link is down (the scheduler restarts), it goes once it is up again
            self._connection.send(*self._take_acks(), self._close_request)
            self._connection.wake_reader()
            if not self._closed.wait(CLIENT_CLUSTER_TIMEOUT):
                logger.warning('scheduler did not confirm closing cluster %s', self.cid)
        closed = self._closed.is_set() and self._lost is None
        self._connection.close()
        self._drop_payloads()
        if self._callbacks is not None:
            self._callbacks.stop()
        if self._recover_file and closed:  # else ``recover_jobs`` may still want it
            try:
                os.unlink(self._recover_file)
            except OSError:
                pass

    shutdown = close

    def _leave_at_exit(self) -> None:
        """The program ends without ``close()``. A cluster with no job left is closed, as by
        ``close()``. One with jobs still pending is left to them, and the program says on
        stderr how to collect their results (``recover_jobs``); without a recovery file
        nobody could, so they are cancelled instead."""
        if self._closing:
            return
        pending = len(self._jobs)
        if not pending or self._lost is not None:
            self.close()
            return
        what = 'cluster %r (id %s): %d job%s had not ended' % (
            self.name, self.cid, pending, '' if pending == 1 else 's')
        if self._recover_file is None:
            sys.stderr.write('dispyscheduler: the program ends without closing %s; with no '
                             'recovery file (recover_file=False) their results could not be '
                             'collected, so they are cancelled\n' % (what,))
            self.close(terminate=True)
            return
        sys.stderr.write(
            'dispyscheduler: the program ends without closing %s; they go on, and their '
            'results wait for you. Collect them with\n    dispyscheduler.recover_jobs(%r%s)\n'
            '(terminate_pending=True there cancels those still running; '
            'close(terminate=True) before exiting would have cancelled them)\n'
            % (what, self._recover_file, ', secret=...' if self._connection.secret else ''))
        self._leave()

    def _leave(self) -> None:
        """Let go of the cluster without closing it: the scheduler keeps it and its
        results for ``recover_jobs``."""
        self._closing = True
        self._window.wake()
        self._connection.close()
        self._drop_payloads()
        if self._callbacks is not None:
            self._callbacks.stop()

    def _drop_payloads(self) -> None:
        """The link is closed: large results still arriving go with their directory."""
        if self._payload_directory is not None:
            self._payloads.abandon()
            shutil.rmtree(self._payload_directory, ignore_errors=True)

    def __enter__(self) -> SharedJobCluster:
        return self

    def __exit__(self, *exc_info: Any) -> Literal[False]:
        self.close(terminate=exc_info[0] is not None)
        return False

    # nodes

    def status(self) -> ClusterStatus:
        """``ClusterStatus(nodes, jobs_pending)``: the nodes running this cluster's jobs."""
        # list() copies the values at once, under the GIL: the reader thread may add a node
        nodes = [copy.copy(node) for node in list(self._nodes.values()) if not node.closed]
        return ClusterStatus(nodes, len(self._jobs))

    def print_status(self, wall_time: float | None = None) -> None:
        """Print a table of the nodes: CPUs, jobs done, time per job (as dispy does)."""
        print(self.status_table(wall_time))

    stats = print_status

    def status_table(self, wall_time: float | None = None) -> str:
        lines = ['%31s | %5s | %7s | %10s | %13s' % ('Node', 'CPUs', 'Jobs', 'Sec/Job',
                                                     'Node Time Sec'),
                 '-' * 78]
        total_time = 0.0
        for node in sorted(self._nodes.values(), key=lambda node: node.ip_addr):
            per_job = node.cpu_time / node.jobs_done if node.jobs_done else 0.0
            label = '%s (%s)' % (node.ip_addr, node.name) if node.name else node.ip_addr
            lines.append(' %-30.30s | %5d | %7d | %10.3f | %13.3f'
                         % (label, node.cpus, node.jobs_done, per_job, node.cpu_time))
            total_time += node.cpu_time
        wall_time = wall_time or time.time() - self._start_time
        lines.append('')
        lines.append('Total job time: %.3f sec, wall time: %.3f sec, speedup: %.3f'
                     % (total_time, wall_time, total_time / wall_time if wall_time else 0.0))
        return '\n'.join(lines)

    def _on_node_offer(self, offer: m.NodeOffer) -> None:
        """The scheduler asks how many CPUs of a node to use (NodeAllocate). ``allocate`` may
        set the entry's ``depends`` and ``setup_args`` for this node: its files are sent now,
        for this node only."""
        cpus, setup_args, refs = 0, None, []
        for allocator in self._allocators:
            if allocator.matches(offer.ip_addr, offer.name):
                try:
                    cpus = int(allocator.allocate(self, offer.ip_addr, offer.name, offer.cpus,
                                                  avail_info(offer.avail), offer.platform) or 0)
                    if cpus > 0 and allocator.setup_args:
                        setup_args = pack_value(tuple(allocator.setup_args), 'setup_args')
                    if cpus > 0:
                        files, _, _ = collect_depends(allocator.depends)
                        refs = [self._upload(name, path, mode) for name, path, mode in files]
                except Exception:
                    logger.exception('NodeAllocate.allocate failed for node %s; not used',
                                     offer.ip_addr)
                    cpus = 0
                break
        self._connection.send(m.NodeAllocation(key=offer.key, cpus=max(0, cpus),
                                               setup_args=setup_args, files=refs))

    def _share(self, data: Spool, name_format: str, user: int | None = None) -> str:
        """Send ``data`` to the scheduler once (by content), to be written as
        ``name_format % reference`` into the computation's directory on each node that runs
        a job submitted with its reference (``_submit``'s ``refs``), once per node; its
        reference. With ``user`` (a job's uid) it is one of the job's values: forgotten,
        here, at the scheduler and on the nodes, once no unfinished job uses it
        (``_release_values``); without, kept while the cluster is (an executor's
        functions)."""
        ref = data.reference()
        with self._sharing:
            shared = self._shared.get(ref)
            if shared is None:
                shared = self._shared[ref] = Shared(name_format % ref, data, user is not None)
                self._send_shared(ref)
            elif shared.data is not data:  # the same content, pickled again
                data.close()
            if user is not None:
                shared.users.add(user)
                shared.unsaved.add(user)
                self._idle.pop(ref, None)
        return ref

    def _send_shared(self, ref: str) -> None:
        """A chunk at a time, each once the one before it has left: what is queued for the
        scheduler stays small, however large the value."""
        shared = self._shared[ref]
        data = shared.data
        if data is None:  # the scheduler saved it with the jobs that need it
            return
        for offset, chunk, last in data.chunks():
            self._connection.send_bulk(m.Upload(
                ref=ref, name=shared.name, size=data.size, mode=0o600, offset=offset,
                data=b'', last=last, value=shared.value), chunk)

    def _store_arguments(self, uid: int, args: tuple, kwargs: dict[str, Any],
                         namespace: dict[str, Any]) -> tuple[bytes, list[str]]:
        """Arguments too large to travel inline: each large one is sent on its own
        (``_share``: once, however many jobs it is given to) and stands in the job's
        arguments as a ``StoredValue``. Every argument is pickled before anything is sent
        (one that cannot be sends nothing). Returns the arguments to send inline, and the
        values' references."""
        spools: dict[int, Spool] = {}  # id of an argument -> its pickle, if stored apart
        refs: list[str] = []
        stored: dict[int, StoredValue] = {}
        room = self._spool_room()
        try:
            for value in itertools.chain(args, kwargs.values()):
                key = id(value)
                if type(value) in SMALL_TYPES or key in spools or key in stored:
                    continue
                ref = self._pickled_before(value, uid)
                if ref is not None:
                    refs.append(ref)
                    stored[key] = StoredValue(ref)
                else:
                    spools[key] = spool = spool_value(value, 'job argument', room)
                    room = max(0, room - spool.in_memory)
        except BaseException:
            for spool in spools.values():
                spool.close()
            self._release_values(uid, refs)
            raise
        for key, spool in spools.items():
            if spool.size < STORED_VALUE_THRESHOLD:
                spool.close()
                continue
            ref = self._share(spool, VALUE_FILE, uid)
            if ref not in refs:
                refs.append(ref)
            stored[key] = StoredValue(ref)
        with self._sharing:
            for value in itertools.chain(args, kwargs.values()):
                if type(value) in IMMUTABLE_DATA and id(value) in stored:
                    ref = stored[id(value)].ref
                    self._pickled[id(value)] = (value, ref)
                    self._shared[ref].origins.add(id(value))
        args = tuple(stored.get(id(arg), arg) for arg in args)
        kwargs = {name: stored.get(id(arg), arg) for name, arg in kwargs.items()}
        try:
            payload = pack_value((args, kwargs, namespace) if namespace else (args, kwargs),
                                 'job arguments')
        except BaseException:
            self._release_values(uid, refs)
            raise
        return payload, refs

    def _spool_room(self) -> int:
        """Bytes of memory the next large arguments' pickles may take: ``SPOOL_LIMIT`` in
        all for those the scheduler has not saved yet (the rest wait in temporary files),
        however many jobs are on their way."""
        with self._sharing:
            held = sum(shared.data.in_memory for shared in self._shared.values()
                       if shared.data is not None)
        return max(0, SPOOL_LIMIT - held)

    def _pickled_before(self, value: Any, uid: int) -> str | None:
        """The reference of ``value`` if it is immutable data shared as a value still kept
        (given to an earlier job), now used by job ``uid`` too; else None."""
        if type(value) not in IMMUTABLE_DATA:
            return None
        with self._sharing:
            known = self._pickled.get(id(value))
            if known is None or known[0] is not value or known[1] not in self._shared:
                return None
            ref = known[1]
            shared = self._shared[ref]
            shared.users.add(uid)
            shared.unsaved.add(uid)
            self._idle.pop(ref, None)
        return ref

    def _release_values(self, uid: int, refs: Iterable[str]) -> None:
        """Job ``uid`` needs its values no more (it ended, or never went). Those no other
        unfinished job uses are forgotten, here, at the scheduler and on the nodes, once
        they have stayed unused for ``VALUE_LINGER`` seconds: a program that gives the
        same data to job after job, each submitted as the one before ends, sends it
        once."""
        now = time.monotonic()
        with self._sharing:
            for ref in refs:
                shared = self._shared.get(ref)
                if shared is None or not shared.value:
                    continue
                shared.users.discard(uid)
                shared.unsaved.discard(uid)
                if not shared.users:
                    self._idle[ref] = now
            forgotten = [ref for ref, since in self._idle.items() if now - since >= VALUE_LINGER
                         and not self._shared[ref].users]
            for ref in forgotten:
                del self._idle[ref]
                shared = self._shared.pop(ref)
                shared.drop()
                for origin in shared.origins:
                    self._pickled.pop(origin, None)
            if forgotten:  # in order: a value stored again after this is sent after it
                self._connection.send(m.ForgetValues(refs=forgotten))

    def _values_saved(self, uid: int, refs: Iterable[str]) -> None:
        """The scheduler saved job ``uid``, and with it its values: a value that no
        unsaved job needs is not kept here (nor sent again after a reconnect)."""
        with self._sharing:
            for ref in refs:
                shared = self._shared.get(ref)
                if shared is not None and shared.value:
                    shared.unsaved.discard(uid)
                    if not shared.unsaved:
                        shared.drop()

    def _upload(self, name: str, path: str, mode: int) -> str:
        """Send a file for some nodes only (once, while it does not change); its
        reference."""
        info = os.stat(path)
        key = (os.path.abspath(path), info.st_size, info.st_mtime_ns)
        ref = self._uploaded.get(key)
        if ref is None:
            check_size(name, info.st_size, self._max_file_size)
            ref = self._uploaded[key] = hashlib.sha256(repr(key).encode()).hexdigest()[:32]
            for offset, data, last in read_chunks(path):
                self._connection.send(m.Upload(ref=ref, name=name, size=info.st_size,
                                               mode=mode, offset=offset, data=data,
                                               last=last))
        return ref

    # nodes, as dispy's cluster methods use them

    def allocate_node(self, node: NodeEntry | list[NodeEntry]) -> int:
        """Use also the nodes ``node`` names (a name, address or pattern, a NodeAllocate,
        a DispyNode, or a list of them); a node ``deallocate_node`` set aside takes jobs
        again. Returns 0, or -1 if the scheduler refused (the reason is logged)."""
        entries = node_allocations(node if isinstance(node, list) else [node])
        self._allocators[:0] = entries  # the newest decide first
        status = 0
        for entry in entries:
            action = 'allocate_offered' if entry.offered else 'allocate'
            status = min(status, self._control(action, entry.ip_addr, port=entry.port or 0))
        return status

    def deallocate_node(self, node: DispyNode | str) -> int:
        """Send no more of this cluster's jobs to ``node`` (its jobs there go on) until
        ``allocate_node``; 0, or -1 if it is not one of the cluster's nodes."""
        return self._control('deallocate', node)

    def close_node(self, node: DispyNode | str, terminate_pending: bool = False) -> int:
        """Stop using ``node``: jobs submitted for it alone end Cancelled, those it runs
        finish (or are cancelled, with ``terminate_pending``), then ``cleanup`` runs there and
        ``cluster_status`` hears ``DispyNode.Closed``. ``allocate_node`` takes it back."""
        return self._control('close', node, terminate=terminate_pending)

    def resetup_node(self, node: DispyNode | str, terminate_pending: bool = False) -> int:
        """As ``close_node``, then set the computation up there again: ``NodeAllocate``
        decides anew (its ``depends`` and ``setup_args`` may change), ``setup`` runs again."""
        return self._control('resetup', node, terminate=terminate_pending)

    def set_node_cpus(self, node: DispyNode | str, cpus: int) -> int:
        """How many of ``node``'s CPUs this cluster's jobs use from now on (negative: all
        but that many), at most what its allocation gave; other clusters' shares are theirs.
        Returns the CPUs now used, or -1."""
        value = self._control('set_cpus', node, cpus=int(cpus))
        known = self._nodes.get(node.ip_addr if isinstance(node, DispyNode) else node)
        if value >= 0 and known is not None:
            known.cpus = value
        return value

    def send_file(self, path: str, node: DispyNode | str, relay: bool = False) -> int:
        """Send a file to the computation's directory on ``node``, where jobs submitted after
        this returns find it (``relay`` is accepted: files always pass through the
        scheduler). Returns 0, or -1."""
        del relay
        name, source, mode = file_entry(path)
        return self._control('send_file', node, ref=self._upload(name, source, mode))

    def discover_nodes(self, nodes: NodeEntry | list[NodeEntry]) -> int:
        """Have the scheduler look for ``nodes`` (names or addresses; ``'*'`` broadcasts)
        now, rather than at its next ping. Nodes found join the scheduler and, if this
        cluster's ``nodes`` match them, set the cluster up."""
        status = 0
        for entry in node_allocations(nodes if isinstance(nodes, list) else [nodes]):
            status = min(status, self._control('discover', entry.ip_addr,
                                               port=entry.port or 0))
        return status

    def _control(self, action: str, node: DispyNode | str, port: int = 0, cpus: int = 0,
                 terminate: bool = False, ref: str = '') -> int:
        """Ask the scheduler to ``action`` a node for this cluster; its answer (dispy's
        return value), -1 when refused (why is logged) or unanswered."""
        self._check_open()
        name = node.ip_addr if isinstance(node, (DispyNode, NodeAllocate)) else str(node)
        request = m.NodeControl(rid=next(self._rids), action=action, node=name, port=port,
                                cpus=cpus, terminate=bool(terminate), ref=ref)
        answered = threading.Event()
        waiting = self._controls[request.rid] = [answered, request, None]
        try:
            self._connection.send(request)  # after a reconnect, ``_resumed`` sends it again
            self._connection.wake_reader()
            if not answered.wait(CLIENT_CLUSTER_TIMEOUT):
                logger.warning('%s of node %s: no answer from the scheduler', action, name)
                return -1
        finally:
            del self._controls[request.rid]
        answer = waiting[2]
        if answer.value < 0:
            logger.warning('%s of node %s: %s', action, name, answer.reason)
        return answer.value

    def _on_node_control_done(self, done: m.NodeControlDone) -> None:
        waiting = self._controls.get(done.rid)
        if waiting is not None:
            waiting[2] = done
            waiting[0].set()

    # what the scheduler sends

    def _on_message(self, message: m.Message) -> None:
        handler = self._handlers.get(type(message))
        if handler is None:
            raise ProtocolError('unexpected %r from the scheduler' % (message.kind,))
        handler(message)

    def _on_job_end(self, end: m.JobEnd) -> None:
        self._unsaved.pop(end.uid, None)
        if self._recovering and end.uid not in self._jobs:
            self._adopt(end.uid, end.tag)
        if end.stored and end.uid not in self._jobs:  # delivered again: its file goes
            discard(self._payloads.take(end.uid, end.stored)[0])
        self._end(end.uid, end.status, end, end.exception)
        self._acknowledge(end.uid)

    def _on_payload_part(self, part: m.PayloadPart) -> None:
        """A chunk of a large result, kept in memory up to ``SPOOL_LIMIT`` bytes and in a
        file of this cluster's beyond (the message that names it, which follows, unpickles it
        from there)."""
        directory = None
        if part.size > SPOOL_LIMIT:
            if self._payload_directory is None:
                self._payload_directory = tempfile.mkdtemp(prefix='dispyscheduler-results-')
            directory = self._payload_directory
        self._payloads.part(directory, '%d-%s' % (part.id, part.name), part)

    def _stored_result(self, uid: int, name: str) -> tuple[Any, int, str | None]:
        """A large result that streamed before the message naming it: ``(result, its size,
        None)``, or ``(None, 0, why not)``."""
        payload, reason = self._payloads.take(uid, name)
        if payload is None:
            return None, 0, 'result did not arrive: %s' % (reason,)
        try:
            if isinstance(payload, bytearray):
                return unpack_result(payload), len(payload), None
            return load_file(payload), os.path.getsize(payload), None
        except Exception as exc:
            return None, 0, 'result could not be unpickled here: %r' % (exc,)
        finally:
            discard(payload)

    def _on_submitted(self, submitted: m.Submitted) -> None:
        for uid in submitted.uids:
            self._unsaved.pop(uid, None)
            job = self._jobs.get(uid)
            if job is not None and job._values:
                self._values_saved(uid, job._values)

    def _on_jobs_pending(self, pending: m.JobsPending) -> None:
        if self._recovering:
            for uid, tag in pending.jobs:
                self._adopt(uid, tag)
            self._pending_known.set()

    def _on_job_status(self, status: m.JobStatus) -> None:
        job = self._jobs.get(status.uid)
        if job is not None and status.status == RUNNING:
            self._running(job, status.ip_addr, status.start_time)

    def _on_provisional_result(self, provisional: m.ProvisionalResult) -> None:
        job = self._jobs.get(provisional.uid)
        if provisional.stored:
            result, _, failure = self._stored_result(provisional.uid, provisional.stored)
            if failure is not None:
                logger.error('provisional result of job %s: %s', provisional.uid, failure)
                return
        if job is None:
            return
        try:
            job.result = result if provisional.stored else unpack_result(provisional.result)
        except Exception:
            logger.exception('provisional result of job %s cannot be unpickled', job.id)
            return
        if job.status == CREATED:
            self._running(job, provisional.ip_addr, None)
        job.status = PROVISIONAL_RESULT
        self._notify(job)

    def _on_cluster_warning(self, warning: m.ClusterWarning) -> None:
        logger.warning('cluster %s: %s', self.cid, warning.reason)

    def _on_closed(self, closed: m.Closed) -> None:
        self._closed.set()

    def _on_node_status(self, status: m.NodeStatus) -> None:
        node = self._nodes.get(status.ip_addr)
        if status.status == NODE_SETUP_FAILED:  # not one of this cluster's nodes: not kept
            failed = DispyNode(status.ip_addr, status.name, status.cpus)
            failed.platform, failed.setup_failure = status.platform, status.reason
            if self._callbacks is not None and self._cluster_status is not None:
                self._callbacks.put(self._cluster_status, status.status, failed, None)
            return
        if status.status == NODE_INITIALIZED:
            if node is None:
                node = self._nodes[status.ip_addr] = DispyNode(status.ip_addr, status.name,
                                                               status.cpus)
            node.platform = status.platform
            node.closed = False
        elif node is None:
            return
        if status.avail is not None:
            node.avail_info = avail_info(status.avail)
        elif status.status == NODE_CLOSED:
            node.closed = True
        node.update_time = time.time()
        if self._callbacks is not None and self._cluster_status is not None:
            self._callbacks.put(self._cluster_status, status.status, copy.copy(node), None)

    def _receive_file(self, part: m.FilePart) -> None:
        """A file a job sends back (``dispy_send_file``), into the working directory."""
        incoming = self._incoming.get(part.uid)
        if incoming is None:
            incoming = self._incoming[part.uid] = IncomingFiles(os.getcwd())
        try:
            incoming.chunk(part.name, part.offset, part.data, part.last)
        except (FileRefused, OSError) as exc:
            logger.warning('file %r from job %s not saved: %s', part.name, part.uid, exc)
            incoming.abort()
        if not incoming.open:
            del self._incoming[part.uid]

    def _acknowledge(self, uid: int) -> None:
        """A result received: its acknowledgement goes with the next submission, after
        ``ACK_DELAY`` at the latest, at once when many are waiting."""
        with self._acks_lock:
            self._acks.append(uid)
            if len(self._acks) < ACK_BATCH:
                if self._ack_timer is None:
                    self._ack_timer = threading.Timer(ACK_DELAY, self._flush_acks)
                    self._ack_timer.daemon = True
                    self._ack_timer.start()
                return
        self._flush_acks()

    def _take_acks(self) -> tuple[m.ResultAck, ...]:
        """The acknowledgement waiting, as a message to send along, if any."""
        with self._acks_lock:
            if not self._acks:
                return ()
            acks, self._acks = self._acks, []
        return (m.ResultAck(ids=acks),)

    def _flush_acks(self) -> None:
        with self._acks_lock:
            self._ack_timer = None
        for message in self._take_acks():
            self._connection.send(message)

    def _running(self, job: DispyJob, ip_addr: str | None, start_time: float | None) -> None:
        job.status = RUNNING
        job.ip_addr = ip_addr
        job.start_time = start_time
        job._node = self._nodes.get(ip_addr) if ip_addr is not None else None
        if job._node is not None:
            job._node.busy += 1
            job._node.avail_cpus = max(0, job._node.cpus - job._node.busy)
        self._notify(job)

    def _end(self, uid: int, status: int, end: m.JobEnd | None, exception: str | None) -> None:
        """Job ``uid`` ended, as ``end`` (its ``JobEnd``; None if this client ended it)
        says."""
        job = self._jobs.pop(uid, None)
        if job is None:
            return  # a result delivered again
        self._jobs_done += 1
        self._window.leave(uid)
        if job._values:
            self._release_values(uid, job._values)
        if end is not None and end.start_time is not None and job.status == CREATED:
            # a job that took a millisecond is reported once, at its end: it ran, though
            self._running(job, end.ip_addr, end.start_time)
        if end is not None:
            job.stdout, job.stderr = end.stdout, end.stderr
            if self._program:
                job.stdout, job.stderr = end.stdout.encode(), end.stderr.encode()
            job.start_time, job.end_time = end.start_time, end.end_time
            job.ip_addr = end.ip_addr
            job.result = None
            received = len(end.result or b'')
            if end.result is not None:
                try:
                    job.result = unpack_result(end.result)
                except Exception as exc:
                    status = TERMINATED
                    exception = 'result could not be unpickled here: %r' % (exc,)
            elif end.stored:
                job.result, received, failure = self._stored_result(uid, end.stored)
                if failure is not None:
                    status, exception = TERMINATED, failure
        else:
            job.end_time = time.time()
        job.exception = exception
        job.status = status
        node = job._node
        if node is not None:
            node.busy -= 1
            node.avail_cpus = max(0, node.cpus - node.busy)
            node.jobs_done += 1
            node.tx += job._tx
            if end is not None:
                node.rx += received + len(end.stdout) + len(end.stderr)
            if job.start_time and job.end_time:
                node.cpu_time += job.end_time - job.start_time
            job._node = None
        self._notify(job)
        job.finish.set()
        futures.job_ended(job)

    def _adopt(self, uid: int, tag: bytes | None) -> None:
        """A job of this cluster submitted by the process being recovered."""
        if uid not in self._recovered:
            job = self._jobs[uid] = self._recovered[uid] = DispyJob(
                None, None, self._connection.wait_for)
            job._uid = uid
            job._cancel = self.cancel
            job.id = unpack_result(tag) if tag is not None else uid

    def _notify(self, job: DispyJob) -> None:
        """A job's status changed: ``cluster_status`` hears of every change, ``job_status``
        (``callback``) only of provisional results and ends, as in dispy 4.15 (programs take
        any other status there for a failure)."""
        if self._callbacks is None:
            return
        snapshot = copy.copy(job)
        if self._job_status is not None and (job.status == PROVISIONAL_RESULT
                                             or job.status in FINAL_STATUSES):
            self._callbacks.put(self._job_status, snapshot)
        if self._cluster_status is not None:
            node = copy.copy(self._nodes.get(job.ip_addr)) if job.ip_addr else None
            self._callbacks.put(self._cluster_status, job.status, node, snapshot)


class Shared:
    """Data that jobs name in their ``refs`` (``_share``): the bytes, kept until the
    scheduler has saved them, to send again after a reconnect; for a job's value, the jobs
    that use it (``users``), and those of them the scheduler has not saved yet."""

    __slots__ = ('name', 'data', 'value', 'users', 'unsaved', 'origins')

    def __init__(self, name: str, data: Spool, value: bool) -> None:
        self.name = name
        self.data: Spool | None = data
        self.value = value
        self.users: set[int] = set()
        self.unsaved: set[int] = set()
        self.origins: set[int] = set()  # ids of the arguments it was pickled from, if kept

    def drop(self) -> None:
        """The scheduler has it: not kept here any more."""
        if self.data is not None:
            self.data.close()
            self.data = None


def _leave_at_exit(reference: weakref.ReferenceType[SharedJobCluster]) -> None:
    cluster = reference()
    if cluster is not None:
        cluster._leave_at_exit()


class ProgressBar:
    """``[#####.....]  120/1000 jobs  350.2 jobs/s``, redrawn in place."""

    refresh = 0.25
    width = 30

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total = total
        self.stream = stream
        self.started = time.monotonic()

    def show(self, done: int, end: str = '') -> None:
        filled = self.width * done // self.total
        elapsed = time.monotonic() - self.started
        self.stream.write('\r[%s%s] %*d/%d jobs  %.1f jobs/s%s' % (
            '#' * filled, '.' * (self.width - filled), len(str(self.total)), done, self.total,
            done / elapsed if elapsed > 0 else 0.0, end))
        self.stream.flush()

    def finish(self, done: int) -> None:
        self.show(done, '\n')


def node_allocations(nodes: Iterable[Any]) -> list[NodeAllocate]:
    """dispy's ``nodes`` entries as NodeAllocate objects: a name, address or pattern, a
    ``(host, port, cpus, depends, setup_args)`` tuple or list (any prefix of it), a dict with
    those keys, a DispyNode, or a NodeAllocate."""
    allocators = []
    for entry in nodes:
        if isinstance(entry, NodeAllocate):
            allocators.append(entry)
        elif isinstance(entry, DispyNode):
            allocators.append(NodeAllocate(entry.ip_addr))
        elif isinstance(entry, str):
            allocators.append(NodeAllocate(entry))
        elif isinstance(entry, dict) and set(entry) <= NODE_ENTRY_KEYS:
            allocators.append(NodeAllocate(**dict(entry, host=entry.get('host', '*'))))
        elif (isinstance(entry, (tuple, list)) and entry and isinstance(entry[0], str)
              and len(entry) <= len(NODE_ENTRY_KEYS)):
            allocators.append(NodeAllocate(*entry))
        else:
            raise TypeError('nodes entries are host names, addresses or patterns, '
                            '(host, port, cpus, depends, setup_args) tuples, dicts with those '
                            'keys, DispyNode or NodeAllocate objects; got %r' % (entry,))
    return allocators


def avail_info(avail: m.AvailInfo | None) -> DispyNodeAvailInfo | None:
    return None if avail is None else DispyNodeAvailInfo(*avail)


NODE_ENTRY_KEYS = {'host', 'port', 'cpus', 'depends', 'setup_args'}


def recover_jobs(recover_file: str | None = None, timeout: float | None = None,
                 terminate_pending: bool = False, secret: str = '', keyfile: str | None = None,
                 certfile: str | None = None, cafile: str | None = None,
                 loglevel: int = logging.WARNING) -> list[DispyJob]:
    """Collect the jobs of a cluster whose program went away (was killed, lost power).

    ``recover_file`` is the file ``SharedJobCluster`` wrote (by default the newest
    ``_dispyscheduler_*.json`` here); ``secret`` and the TLS files are the cluster's. Waits up
    to ``timeout`` seconds (None: as long as it takes) for the jobs still running, then
    returns every job whose result had not been collected, with ``id``, ``status``,
    ``result``, ``exception``, output and times; with ``terminate_pending`` the jobs still
    pending at the timeout are cancelled. Once everything is collected the cluster is closed;
    otherwise it stays, and ``recover_jobs`` may be called again.
    """
    if recover_file is None:
        found = sorted(glob.glob('_dispyscheduler_*.json'), key=os.path.getmtime)
        if not found:
            raise FileNotFoundError('no _dispyscheduler_*.json recovery file in %s'
                                    % (os.getcwd(),))
        recover_file = found[-1]
    with open(recover_file) as handle:
        record = json.load(handle)
    if record.get('private_scheduler'):  # a JobCluster's: its scheduler starts again
        from .jobcluster import forget_private_scheduler, restart_private_scheduler
        private, started, secret = restart_private_scheduler(record)
        try:
            return _recover_jobs(started, recover_file, timeout, terminate_pending, secret,
                                 (certfile, keyfile, cafile), loglevel)
        finally:
            forget_private_scheduler(private, record, recover_file)
    return _recover_jobs(record, recover_file, timeout, terminate_pending, secret,
                         (certfile, keyfile, cafile), loglevel)


def _recover_jobs(record: dict[str, Any], recover_file: str, timeout: float | None,
                  terminate_pending: bool, secret: str,
                  tls_files: tuple[str | None, str | None, str | None],
                  loglevel: int) -> list[DispyJob]:
    cluster = SharedJobCluster._recover(record, recover_file, secret, tls_files, loglevel)
    cluster._pending_known.wait(CLIENT_CLUSTER_TIMEOUT)
    finished = cluster.wait(timeout)
    if not finished and terminate_pending:
        for job in list(cluster._jobs.values()):
            cluster.cancel(job)
        finished = cluster.wait(CLIENT_CLUSTER_TIMEOUT)
    if finished:
        cluster.close()
    else:
        cluster._leave()
    return [cluster._recovered[uid] for uid in sorted(cluster._recovered)]
