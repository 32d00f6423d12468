"""The daemon's side of a computation installed on a node: its setup process, its worker
processes, and the jobs they run.

The setup process (``python -m dispyscheduler.node.runner``) loads the computation and runs
``setup``; worker processes are forked from it, one per CPU, and each connects back on the
node's local socket. A greenlet per worker process takes the computation's queued jobs one at
a time, holding one of the node's CPU slots while the job runs, so at most ``--cpus`` jobs run
on the node whatever the number of computations. Cancelling a running job kills its worker
process; a worker process that dies is replaced by a new fork of the setup process, so the
computation keeps its full set of worker processes.

A computation is given all it needs from the node: plain settings (``NodeSettings``), the
node's CPU slots, and a ``Daemon`` to tell what becomes of its jobs. It reads nothing else of
the daemon, and the daemon uses only its public methods.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Deque, Dict, Iterator, Optional, Protocol, Tuple, cast

import gevent
import gevent.event
from gevent.hub import Waiter

from ..resources import CPUS, ONE_CPU, Need, memory_exceeded
from ..wire import messages as m
from ..constants import (CANCEL_GRACE, CANCELLED, STARTED_REPORT_DELAY, TERMINATED,
                         WORKER_START_TIMEOUT)
from ..wire.files import (FileRefused, IncomingFiles, refusal_reason, safe_relative_path,
                          write_file)
from ..runtime.duties import remove_later
from ..runtime.hublink import HubLink
from ..wire.protocol import ProtocolError
from . import runner
from .grants import CGROUP, RLIMIT, Grant, Grants, MemoryLimits, pin

logger = logging.getLogger(__name__)

WORKER_EXIT_WAIT = 1.0
"""Seconds to wait for the setup process's account of how a dead worker process ended, for
the job's error."""

SETUP_EXIT_WAIT = 10.0
"""Seconds a setup process has to run ``cleanup`` and exit before it is killed."""


class ComputationError(Exception):
    """The computation could not be installed (load or setup failed); the text says why."""


class JobTimedOut(Exception):
    """A job ran past its time limit."""


@dataclass(frozen=True)
class NodeSettings:
    """What a computation needs to know of its node; fixed for the daemon's lifetime."""

    name: str
    """The node's name, which jobs see as ``dispy_node_name``."""

    local_address: str
    """The abstract Unix socket on which a computation's processes connect back."""

    local_token: bytes = field(repr=False)
    """The secret those processes present, so that no other local program passes for one
    (kept out of the repr, so that it never reaches a log)."""

    max_file_size: int
    """Largest file, in bytes, a computation or a job may receive or send; 0: no limit."""

    cpus: int
    """How many worker processes a computation gets when it does not ask for a number."""


class ResourcePool:
    """What the node has for jobs, handed to each as it starts (``held``): a job waits until
    all it needs is free, whatever computation it belongs to, so at most ``--cpus`` CPUs'
    worth of jobs run at once, and no GPU or licence is held by two.

    First come, first served: a job that needs four CPUs and waits for them is not passed by
    one-CPU jobs that came after it, each of which would fit sooner (the scheduler sends a
    larger job only where its CPUs are free, but one-CPU jobs sent ahead may still be
    waiting there for theirs)."""

    def __init__(self, grants: Grants, memory_limits: MemoryLimits) -> None:
        self.grants = grants
        self.memory_limits = memory_limits
        # [need, event set once granted, the grant] of each job waiting, in order
        self._waiting: Deque[list[Any]] = collections.deque()

    @property
    def busy(self) -> int:
        """CPUs held by running jobs."""
        return self.grants.cpus - self.grants.free()[CPUS]

    @contextlib.contextmanager
    def held(self, need: Need) -> Iterator[Grant]:
        """What ``need`` asks for, waited for in turn, held until the block ends."""
        grant = None if self._waiting else self.grants.take(need)
        if grant is None:
            turn: list[Any] = [need, gevent.event.Event(), None]
            self._waiting.append(turn)
            try:
                turn[1].wait()
            except BaseException:  # killed while waiting: a grant given meanwhile goes on
                if turn[2] is not None:
                    self.grants.give_back(turn[2])
                else:
                    self._waiting.remove(turn)
                self._hand_out()
                raise
            grant = turn[2]
        try:
            yield grant
        finally:
            self.grants.give_back(grant)
            self._hand_out()

    def _hand_out(self) -> None:
        """Grant what is free to the jobs waiting, first first, until one does not fit."""
        while self._waiting:
            turn = self._waiting[0]
            grant = self.grants.take(turn[0])
            if grant is None:
                return
            self._waiting.popleft()
            turn[2] = grant
            turn[1].set()


class NodeJob:
    """A job the node holds, queued or running; ``worker`` is the pid of the worker process
    that took it, None until one does."""

    __slots__ = ('jid', 'cid', 'request', 'cancelled', 'worker', 'need')

    def __init__(self, request: m.Job, need: Need = ONE_CPU) -> None:
        self.jid = request.jid
        self.cid = request.cid
        self.request = request  # arguments, time limit, files
        self.need = need  # what it holds of the node's ``ResourcePool`` while it runs
        self.cancelled = False
        self.worker: Optional[int] = None


@dataclass
class Confinement:
    """What a running job was given, and whether it went over its memory."""

    grant: Grant
    exceeded: bool = False


class Daemon(Protocol):
    """What a computation tells the node daemon (``NodeDaemon`` is one): this much and no
    more, so that a computation depends on nothing else of the daemon."""

    def job_started(self, job: NodeJob, start_time: float) -> None:
        """``job`` has been running on a worker process since ``start_time`` (``time.time``)."""

    def job_finished(self, job: NodeJob, done: m.JobDone) -> None:
        """``job`` ended, with a result or a failure."""

    def relay(self, message: m.Message) -> None:
        """Pass on what a running job sent: a ``provisional`` result, a ``job_file`` chunk."""

    def wait_until_sent(self) -> None:
        """Return once what was relayed has left the node: back-pressure for files a job
        sends, so they pass through a chunk or two at a time."""

    def computation_failed(self, computation: Computation, reason: str) -> None:
        """The computation cannot go on (its setup process died): its jobs end with
        ``reason``, and the daemon closes it."""


class Computation:
    """One computation on this node, from its files' arrival until it is closed.

    The daemon calls ``receive_file`` and ``start``, passes on the connections of its
    processes (``serve_setup_process``, ``serve_worker``), gives it jobs (``put_job``,
    ``cancel``) and finally ``close``s it."""

    def __init__(self, request: m.Compute, directory: str, settings: NodeSettings,
                 resources: ResourcePool, daemon: Daemon) -> None:
        self.cid = request.cid
        self.name = request.name
        self.directory = directory
        self.loaded = False  # ``setup`` ran: the computation takes jobs
        self._settings = settings
        self._resources = resources
        self._daemon = daemon
        self._code = request.code
        self._cpus = request.cpus or settings.cpus
        self._cpu_limit = self._cpus  # jobs run at once (``set_node_cpus`` may lower it)
        self._busy = 0  # jobs running on its worker processes
        self._cpu_freed = gevent.event.Event()
        self._setup_args = request.setup_args
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self._incoming = IncomingFiles(directory, settings.max_file_size, request.files)
        self._expected_files = {name: mode for name, _, mode in request.files}
        self._files_ready = gevent.event.Event()
        if not self._expected_files:
            self._files_ready.set()
        self._file_error: Optional[str] = None
        self._sent = IncomingFiles(directory)  # a file the client sends later, arriving
        # values (``SentFile.value``) that could not be written -> why: their jobs end with it
        self.lost_values: dict[str, str] = {}
        # jobs that came while no worker process was idle
        self._queue: Deque[NodeJob] = collections.deque()
        # pid -> the job it runs, or None, for every connected worker process
        self._workers: Dict[int, Optional[NodeJob]] = {}
        # pid -> (greenlet, Waiter) of an idle worker process; the last is the one idle for
        # the shortest time
        self._idle_workers: Dict[int, Tuple[gevent.Greenlet, Waiter]] = {}
        # pid -> job handed to a worker process's greenlet that has not woken yet
        self._handed: Dict[int, Optional[NodeJob]] = {}
        # pid -> AsyncResult with how the worker process ended
        self._worker_exits: Dict[int, gevent.event.AsyncResult[str]] = {}
        self._setup_link: gevent.event.AsyncResult[HubLink] = gevent.event.AsyncResult()
        self._load_done = gevent.event.Event()
        self._setup_process: Optional[subprocess.Popen[bytes]] = None
        self._closing = False

    def __repr__(self) -> str:
        return '<Computation %s %s>' % (self.cid, self.name)

    def receive_file(self, chunk: m.ComputeFile) -> None:
        """A chunk of one of the computation's files (``depends``, a program)."""
        if chunk.name not in self._expected_files or self._files_ready.is_set():
            return
        try:
            if self._incoming.chunk(chunk.name, chunk.offset, chunk.data, chunk.last,
                                    self._expected_files[chunk.name]):
                if len(self._incoming.done) == len(self._expected_files):
                    self._files_ready.set()
        except (FileRefused, OSError) as exc:
            self._file_error = str(exc)
            self._incoming.abort()
            self._files_ready.set()

    def receive_sent_file(self, chunk: m.SentFile) -> None:
        """A chunk of a file the client sent later (``send_file``): into the computation's
        directory, where its next jobs find it. A refused file is logged (the client was
        answered when the scheduler passed it on)."""
        if chunk.offset == 0:
            self.lost_values.pop(chunk.name, None)  # written again: jobs may use it again
            self._sent.abort()
            self._sent = IncomingFiles(self.directory,
                                       0 if chunk.value else self._settings.max_file_size,
                                       [(chunk.name, chunk.size, chunk.mode)])
        try:
            self._sent.chunk(chunk.name, chunk.offset, chunk.data, chunk.last, chunk.mode)
        except (FileRefused, OSError) as exc:
            logger.warning('%r: file %r sent by the client not written: %s', self, chunk.name,
                           exc)
            self._sent.abort()
            if chunk.value:  # its jobs end with the first reason (``lost_values``), not the
                self.lost_values.setdefault(chunk.name, refusal_reason(exc))  # next chunks'

    def forget_files(self, names: list[str]) -> None:
        """Values sent for jobs that are all done: deleted."""
        for name in names:
            try:
                remove_later(os.path.join(self.directory, safe_relative_path(name)))
            except FileRefused:
                pass

    def start(self, node_ip_addr: str) -> None:
        """Receive the files, start the setup process, load the computation, run setup, fork
        worker processes.

        Raises ``ComputationError`` with the reason (a setup traceback, say)."""
        if not self._files_ready.wait(WORKER_START_TIMEOUT):
            raise ComputationError('files did not arrive within %d seconds'
                                   % WORKER_START_TIMEOUT)
        if self._file_error:
            raise ComputationError(self._file_error)
        env = dict(os.environ)
        env[runner.ENV_SOCKET] = self._settings.local_address
        env[runner.ENV_TOKEN] = self._settings.local_token.hex()
        env[runner.ENV_CID] = str(self.cid)
        env['PYTHONPATH'] = os.pathsep.join(filter(None, [_package_root(),
                                                          env.get('PYTHONPATH')]))
        try:
            self._setup_process = subprocess.Popen(
                [sys.executable, '-m', 'dispyscheduler.node.runner'], cwd=self.directory,
                env=env, stdin=subprocess.DEVNULL)
        except OSError as exc:  # its directory is gone: uninstalled while its files came
            raise ComputationError('cannot start the computation: %s' % (exc,)) from None
        try:
            with gevent.Timeout(WORKER_START_TIMEOUT, ComputationError(
                    'computation did not load within %d seconds' % WORKER_START_TIMEOUT)):
                link = self._setup_link.get()
                assert link is not None  # what ``serve_setup_process`` set
                link.send_now(m.Load(code=self._code, node_name=self._settings.name,
                                     node_ip_addr=node_ip_addr,
                                     max_file_size=self._settings.max_file_size,
                                     setup_args=self._setup_args))
                answer = link.recv_now()
            if type(answer) is m.LoadFailed:
                raise ComputationError(answer.reason)
            if type(answer) is not m.Loaded:
                raise ComputationError('setup process sent %r' % (answer.kind,))
            self.loaded = True
        except OSError:  # includes the setup process closing its connection
            raise ComputationError('setup process exited while loading the computation '
                                   '(status %s)' % (self._setup_process.wait(),)) from None
        finally:
            self._load_done.set()
        gevent.spawn(link.run_writer)
        link.send(m.Fork(count=self._cpus))

    def serve_setup_process(self, link: HubLink) -> None:
        """Serve the setup process's connection for its lifetime: hand it to ``start``, then
        read its reports of worker processes that ended."""
        self._setup_link.set(link)
        self._load_done.wait()
        if not self.loaded:
            return

        def on_message(message: m.Message) -> None:
            if type(message) is m.WorkerExit:
                self._exit_of(message.pid).set(message.how)
                idle = self._idle_workers.pop(message.pid, None)
                if idle is not None:  # it died waiting for a job: it must not take one
                    idle[0].kill(block=False)
                gevent.spawn_later(2 * WORKER_EXIT_WAIT, self._worker_exits.pop, message.pid,
                                   None)
                if not self._closing:
                    link.send(m.Fork(count=1))
        link.run_reader(on_message)
        if not self._closing:
            assert self._setup_process is not None  # ``start`` started it before loading
            logger.error('setup process of %r exited (status %s)', self,
                         self._setup_process.wait())
            self._daemon.computation_failed(self, "the computation's setup process exited")

    def put_job(self, job: NodeJob) -> None:
        """Hand a job to the worker process idle the shortest time (so jobs that come one at
        a time keep going to the same, warm, process), or queue it until one is free."""
        if self._idle_workers:
            self._wake_idle_worker(job)
        else:
            self._queue.append(job)

    def _wake_idle_worker(self, job: Optional[NodeJob]) -> None:
        """Wake the greenlet of the worker process idle the shortest time with ``job`` (None:
        to end)."""
        pid, (_, waiter) = self._idle_workers.popitem()
        self._handed[pid] = job  # if its greenlet is killed before it wakes, the job goes back
        gevent.get_hub().loop.run_callback(waiter.switch, job)

    def _next_job(self, pid: int) -> Optional[NodeJob]:
        """The next job for worker process ``pid``, waiting for one; None once the node closes
        the computation."""
        if self._queue:
            return self._queue.popleft()
        if self._closing:
            return None
        waiter: Waiter[Optional[NodeJob]] = Waiter()
        # a worker process's greenlet is its connection's: a gevent Greenlet
        self._idle_workers[pid] = (cast(gevent.Greenlet, gevent.getcurrent()), waiter)
        try:
            job = waiter.get()
        finally:
            self._idle_workers.pop(pid, None)
        del self._handed[pid]
        return job

    def set_cpus(self, cpus: int) -> None:
        """Run at most ``cpus`` of its jobs at once from now on (``set_node_cpus``)."""
        self._cpu_limit = max(0, cpus)
        self._cpu_freed.set()

    @contextlib.contextmanager
    def _own_cpu(self) -> Iterator[None]:
        """One of the CPUs this computation may use, waited for."""
        while self._busy >= self._cpu_limit and not self._closing:
            self._cpu_freed.clear()
            self._cpu_freed.wait()
        self._busy += 1
        try:
            yield
        finally:
            self._busy -= 1
            self._cpu_freed.set()

    def serve_worker(self, link: HubLink, pid: int) -> None:
        """Run this computation's jobs on one worker process, until it or the node stops.

        A worker process that dies while idle (killed from outside, say) is reported by the
        setup process, and its greenlet is killed there (``serve_setup_process``) before it
        takes a job; a job handed to it or taken but not yet sent goes back to the queue.

        A job with GPUs runs on a worker process that has run no other job, and that process
        runs no other job after it (it ends; the setup process forks a new one): CUDA reads
        ``CUDA_VISIBLE_DEVICES`` once per process, when a job first uses it, so a process
        that saw other GPUs, or none, cannot be given these."""
        self._workers[pid] = None
        job = None
        ran = False  # a job was sent to this worker process
        # a job still running after a moment is reported started; one that ends sooner is
        # reported once, at its end
        report = gevent.get_hub().loop.timer(STARTED_REPORT_DELAY)
        try:
            while True:
                job = self._next_job(pid)
                if job is None or self._closing:
                    return
                if job.need.gpus and ran:  # a fresh worker process takes it
                    if self._idle_workers:
                        self._wake_idle_worker(job)
                    else:
                        self._queue.appendleft(job)
                    job = None
                    return
                with self._own_cpu(), self._resources.held(job.need) as grant:
                    if job.cancelled or self._closing:
                        job = None
                        continue
                    self._workers[pid] = job
                    job.worker = pid
                    ran = True
                    confinement = Confinement(grant)
                    try:
                        with self._confined(job, pid, confinement):
                            reply = self._run_on_worker(job, link, report)
                    except FileRefused as exc:
                        reply = m.JobDone.failure(job.jid, TERMINATED, str(exc))
                    except (JobTimedOut, ProtocolError) as exc:
                        self._workers[pid] = None  # from here on, cancel must not kill ``pid``
                        self._kill_worker(pid)
                        self._daemon.job_finished(job, m.JobDone.failure(
                            job.jid, TERMINATED, 'job exceeded its time limit of %g seconds and '
                            'was killed' % job.request.timeout  # type: ignore[str-format]
                            if isinstance(exc, JobTimedOut)  # so it had a time limit
                            else 'worker process %d sent a bad frame (%s) and was killed'
                            % (pid, exc)))
                        return
                    except OSError:  # the worker died: its end, with how, is the job's end
                        self._workers[pid] = None
                        self._daemon.job_finished(job, self._worker_died_reply(
                            job, pid, grant.memory if confinement.exceeded else 0))
                        return
                    self._workers[pid] = None
                    if job.cancelled and reply.status == TERMINATED:  # it did not catch the
                        reply = m.JobDone.failure(job.jid, CANCELLED,  # cancel's interrupt
                                                  'job was cancelled')
                    self._daemon.job_finished(job, reply)
                    if job.cancelled or job.need.gpus:  # it takes no other job (its process
                        return  # was interrupted, killed, or saw GPUs): the setup process
                    job = None  # starts a new one
        except gevent.GreenletExit:
            job = job or self._handed.pop(pid, None)
            if job is not None and job.worker is None:
                self.put_job(job)  # taken, never sent: another worker process runs it
            raise
        finally:
            report.close()
            self._idle_workers.pop(pid, None)
            self._workers.pop(pid, None)
            link.close()
            link.sock.close()

    def _run_on_worker(self, job: NodeJob, link: HubLink, report: Any) -> m.JobDone:
        """Send the job, pass its provisional results and files on, return its final reply;
        ``report`` (a timer) reports it started if it runs for long."""
        written = []
        try:
            for name, data, mode in job.request.files:
                written.append(write_file(self.directory, name, data, mode,
                                          self._settings.max_file_size))
            timeout = job.request.timeout
            with gevent.Timeout(timeout, JobTimedOut) if timeout else nullcontext():
                link.send_now(job.request)
                started = time.time()
                report.start(self._daemon.job_started, job, started)
                try:
                    while True:
                        message = link.recv_now()
                        if type(message) is m.JobDone:
                            return message
                        kind = type(message)
                        if kind is not m.Provisional and kind is not m.JobFile:
                            raise ProtocolError('worker sent %r' % (message.kind,))
                        if report.active:  # it said something: it has started
                            report.stop()
                            self._daemon.job_started(job, started)
                        self._daemon.relay(message)
                        if kind is m.JobFile:
                            self._daemon.wait_until_sent()
                finally:
                    report.stop()
        finally:
            for path in written:
                try:
                    os.unlink(path)
                except OSError:
                    pass

    @contextlib.contextmanager
    def _confined(self, job: NodeJob, pid: int, confinement: Confinement) -> Iterator[None]:
        """The job runs with what it was given (``confinement.grant``): its worker process
        pinned to its CPUs, told its GPUs and memory limit (the worker sets them up), in a
        cgroup of its own where the node limits memory that way; once it is over,
        ``confinement.exceeded`` says whether the kernel killed it for its memory."""
        grant, request = confinement.grant, job.request
        request.cpu_ids = list(grant.cpu_ids)
        request.gpu_ids = list(grant.gpu_ids)
        request.memory_limit = grant.memory
        limits = self._resources.memory_limits
        request.memory_by = limits.method if grant.memory else ''
        pin(pid, grant.cpu_ids)
        in_group = bool(grant.memory) and limits.method == CGROUP
        if in_group:
            try:
                limits.enter(pid, job.jid, grant.memory)
            except OSError as exc:  # the worker limits its address space instead
                logger.warning('job %d not put in a cgroup (%s): limited by RLIMIT_AS',
                               job.jid, exc)
                in_group = False
                request.memory_by = RLIMIT
        try:
            yield
        finally:
            if in_group:
                confinement.exceeded = limits.leave(pid, job.jid)

    def _kill_worker(self, pid: int) -> None:
        """End a worker process and all it started (it leads its own process group)."""
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def _worker_died_reply(self, job: NodeJob, pid: int, memory_limit: int = 0) -> m.JobDone:
        """The end of a job whose worker process died: cancelled, killed by the kernel for
        going over its ``memory_limit`` (its cgroup's), or as the setup process saw it die."""
        if job.cancelled:
            return m.JobDone.failure(job.jid, CANCELLED, 'job was cancelled')
        if memory_limit:
            return m.JobDone.failure(job.jid, TERMINATED, memory_exceeded(memory_limit)
                                     + ' (its worker process %d was killed)' % pid)
        try:
            reason = self._exit_of(pid).get(timeout=WORKER_EXIT_WAIT)
        except gevent.Timeout:
            reason = 'died'
        return m.JobDone.failure(job.jid, TERMINATED, 'worker process %d running the job %s'
                                 % (pid, reason))

    def _exit_of(self, pid: int) -> gevent.event.AsyncResult[str]:
        """The setup process's account of how worker process ``pid`` ended, once it has
        given it."""
        return self._worker_exits.setdefault(pid, gevent.event.AsyncResult())

    def cancel(self, job: NodeJob) -> None:
        """Interrupt the job as Ctrl-C would (SIGINT to its worker process's group), as dispy
        does: a job that catches KeyboardInterrupt may return a value, and ends Finished with
        it; one that has not ended ``CANCEL_GRACE`` seconds later is killed. Either way its
        greenlet reports it (Cancelled unless it returned)."""
        job.cancelled = True
        pid = job.worker
        if pid is not None and self._workers.get(pid) is job:
            try:
                os.killpg(pid, signal.SIGINT)
            except ProcessLookupError:
                return
            gevent.spawn_later(CANCEL_GRACE, self._kill_if_still_running, pid, job)

    def _kill_if_still_running(self, pid: int, job: NodeJob) -> None:
        if self._workers.get(pid) is job:
            self._kill_worker(pid)

    def close(self, cleanup: bool) -> None:
        """Stop the computation: ``cleanup`` runs the user's cleanup and removes the files.
        Worker processes go down with their setup process; any that lost it are killed
        here."""
        self._closing = True
        self._cpu_freed.set()
        link = self._setup_link.value if self._setup_link.successful() else None
        if link is not None:
            link.send(m.Exit(cleanup=bool(cleanup)))
        if not self.loaded:
            if not self._setup_link.ready():  # ``start`` waits for it: it never comes now
                self._setup_link.set_exception(ComputationError('uninstalled while it loaded'))
            self._kill_setup_process()
        elif self._setup_process is not None:
            try:
                self._setup_process.wait(timeout=SETUP_EXIT_WAIT)
            except subprocess.TimeoutExpired:
                logger.warning('%r: cleanup did not finish in %d seconds; killed', self,
                               SETUP_EXIT_WAIT)
            finally:
                self._kill_setup_process()
        if self._setup_process is None or self._setup_process.returncode != 0:
            for pid in list(self._workers):  # left by a setup process that did not exit cleanly
                self._kill_worker(pid)
        self._queue.clear()
        while self._idle_workers:  # their greenlets wake, see ``_closing`` and end
            self._wake_idle_worker(None)
        if cleanup:
            shutil.rmtree(self.directory, ignore_errors=True)

    def _kill_setup_process(self) -> None:
        if self._setup_process is not None and self._setup_process.poll() is None:
            self._setup_process.kill()
            self._setup_process.wait()


def _package_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
