"""The daemon's side of a computation installed on a node: its setup process, its worker
processes, and the jobs they run.

The setup process (``python -m dispyscheduler.node.runner``) loads the computation and runs
``setup``; worker processes are forked from it, one per CPU, and each connects back on the
node's local socket. A greenlet per worker process takes the computation's queued jobs one at
a time, holding one of the node's CPU slots while the job runs, so at most ``--cpus`` jobs run
on the node whatever the number of computations. Cancelling a running job kills its worker
process; a worker process that dies is replaced by a new fork of the setup process, so the
computation keeps its full set of worker processes.
"""

import collections
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import nullcontext

import gevent
import gevent.event
from gevent.hub import Waiter

from ..constants import CANCELLED, STARTED_REPORT_DELAY, TERMINATED, WORKER_START_TIMEOUT
from ..files import FileRefused, IncomingFiles, write_file
from ..protocol import ProtocolError
from . import runner

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


class NodeJob:
    __slots__ = ('jid', 'cid', 'body', 'cancelled', 'worker')

    def __init__(self, body):
        self.jid = body['jid']
        self.cid = body['cid']
        self.body = body  # the ``job`` message: arguments, time limit, files
        self.cancelled = False
        self.worker = None


class Computation:
    def __init__(self, node, request, directory):
        self.node = node
        self.cid = request['cid']
        self.name = request['name']
        self.code = request['code']
        self.cpus = request['cpus'] or node.cpus
        self.setup_args = request['setup_args']
        self.directory = directory
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self.incoming = IncomingFiles(directory, node.options.max_file_size)
        self.expected_files = {entry[0]: entry[2] for entry in request['files']}
        self.files_ready = gevent.event.Event()
        if not self.expected_files:
            self.files_ready.set()
        self.file_error = None
        self.queue = collections.deque()  # jobs that came while no worker was idle
        self.workers = {}  # pid -> NodeJob or None, for every connected worker
        self.idle_workers = {}  # pid -> (greenlet, Waiter) of an idle worker; the last
        # is the one idle for the shortest time
        self.handed = {}  # pid -> job handed to a worker's greenlet that has not woken yet
        self.worker_exits = {}  # pid -> AsyncResult with how the worker ended
        self.setup_link = gevent.event.AsyncResult()
        self.load_done = gevent.event.Event()
        self.loaded = False
        self.setup_process = None
        self.closing = False

    def __repr__(self):
        return '<Computation %s %s>' % (self.cid, self.name)

    def receive_file(self, body):
        """A chunk of one of the computation's files (``depends``, a program)."""
        if body['name'] not in self.expected_files or self.files_ready.is_set():
            return
        try:
            if self.incoming.chunk(body['name'], body['offset'], body['data'], body['last'],
                                   self.expected_files[body['name']]):
                if len(self.incoming.done) == len(self.expected_files):
                    self.files_ready.set()
        except (FileRefused, OSError) as exc:
            self.file_error = str(exc)
            self.incoming.abort()
            self.files_ready.set()

    def start(self, node_ip_addr):
        """Receive the files, start the setup process, load the computation, run setup, fork
        worker processes.

        Raises ``ComputationError`` with the reason (a setup traceback, say)."""
        if not self.files_ready.wait(WORKER_START_TIMEOUT):
            raise ComputationError('files did not arrive within %d seconds'
                                   % WORKER_START_TIMEOUT)
        if self.file_error:
            raise ComputationError(self.file_error)
        env = dict(os.environ)
        env[runner.ENV_SOCKET] = self.node.local_address
        env[runner.ENV_TOKEN] = self.node.local_token.hex()
        env[runner.ENV_CID] = str(self.cid)
        env['PYTHONPATH'] = os.pathsep.join(filter(None, [_package_root(),
                                                          env.get('PYTHONPATH')]))
        try:
            self.setup_process = subprocess.Popen(
                [sys.executable, '-m', 'dispyscheduler.node.runner'], cwd=self.directory,
                env=env, stdin=subprocess.DEVNULL)
        except OSError as exc:  # its directory is gone: uninstalled while its files came
            raise ComputationError('cannot start the computation: %s' % (exc,)) from None
        try:
            with gevent.Timeout(WORKER_START_TIMEOUT, ComputationError(
                    'computation did not load within %d seconds' % WORKER_START_TIMEOUT)):
                link = self.setup_link.get()
                link.send_now('load', {'code': self.code, 'node_name': self.node.name,
                                       'node_ip_addr': node_ip_addr,
                                       'max_file_size': self.node.options.max_file_size,
                                       'setup_args': self.setup_args})
                kind, body = link.recv_now()
            if kind == 'load_failed':
                raise ComputationError(body['reason'])
            if kind != 'loaded':
                raise ComputationError('setup process sent %r' % (kind,))
            self.loaded = True
        except OSError:  # includes the setup process closing its connection
            raise ComputationError('setup process exited while loading the computation '
                                   '(status %s)' % (self.setup_process.wait(),)) from None
        finally:
            self.load_done.set()
        gevent.spawn(link.run_writer)
        link.send('fork', {'count': self.cpus})

    def serve_setup_process(self, link):
        """Serve the setup process's connection for its lifetime: hand it to ``start``, then
        read its reports of worker processes that ended."""
        self.setup_link.set(link)
        self.load_done.wait()
        if not self.loaded:
            return

        def on_message(kind, body):
            if kind == 'worker_exit':
                self.exit_of(body['pid']).set(body['how'])
                idle = self.idle_workers.pop(body['pid'], None)
                if idle is not None:  # it died waiting for a job: it must not take one
                    idle[0].kill(block=False)
                gevent.spawn_later(2 * WORKER_EXIT_WAIT, self.worker_exits.pop, body['pid'], None)
                if not self.closing:
                    link.send('fork', {'count': 1})
        link.run_reader(on_message)
        if not self.closing:
            logger.error('setup process of %r exited (status %s)', self,
                         self.setup_process.wait())
            self.node.fail_computation(self, "the computation's setup process exited")

    def put_job(self, job):
        """Hand a job to the worker process idle the shortest time (so jobs that come one at
        a time keep going to the same, warm, process), or queue it until one is free."""
        if not self.idle_workers:
            self.queue.append(job)
            return
        pid, (_, waiter) = self.idle_workers.popitem()
        self.handed[pid] = job  # if its greenlet is killed before it wakes, the job goes back
        gevent.get_hub().loop.run_callback(waiter.switch, job)

    def next_job(self, pid):
        """The next job for worker process ``pid``, waiting for one; None once the node
        closes the computation."""
        if self.queue:
            return self.queue.popleft()
        if self.closing:
            return None
        waiter = Waiter()
        self.idle_workers[pid] = (gevent.getcurrent(), waiter)
        try:
            job = waiter.get()
        finally:
            self.idle_workers.pop(pid, None)
        del self.handed[pid]
        return job

    def serve_worker(self, link, pid):
        """Run this computation's jobs on one worker process, until it or the node stops.

        A worker process that dies while idle (killed from outside, say) is reported by the
        setup process, and its greenlet is killed there (``serve_setup_process``) before it
        takes a job; a job handed to it or taken but not yet sent goes back to the queue."""
        self.workers[pid] = None
        job = None
        # a job still running after a moment is reported started; one that ends sooner is
        # reported once, at its end
        report = gevent.get_hub().loop.timer(STARTED_REPORT_DELAY)
        try:
            while True:
                job = self.next_job(pid)
                if job is None or self.closing:
                    return
                with self.node.cpu_slots:
                    if job.cancelled or self.closing:
                        job = None
                        continue
                    self.workers[pid] = job
                    job.worker = pid
                    try:
                        reply = self.run_on_worker(job, link, report)
                    except FileRefused as exc:
                        reply = failure_reply(job, TERMINATED, str(exc))
                    except (JobTimedOut, ProtocolError) as exc:
                        self.workers[pid] = None  # from here on, cancel must not kill ``pid``
                        self.kill_worker(pid)
                        self.node.job_finished(job, failure_reply(
                            job, TERMINATED, 'job exceeded its time limit of %g seconds and was '
                            'killed' % job.body['timeout'] if isinstance(exc, JobTimedOut) else
                            'worker process %d sent a bad frame (%s) and was killed' % (pid, exc)))
                        return
                    except OSError:  # the worker died: its end, with how, is the job's end
                        self.workers[pid] = None
                        self.node.job_finished(job, self.worker_died_reply(job, pid))
                        return
                    self.workers[pid] = None
                    self.node.job_finished(job, reply)
                    job = None
                if self.node.cpu_slots.linkcount():
                    # others wait for this CPU (another computation's workers): let them have
                    # it first; without this yield, a busy computation takes it straight back
                    gevent.sleep(0)
        except gevent.GreenletExit:
            job = job or self.handed.pop(pid, None)
            if job is not None and job.worker is None:
                self.put_job(job)  # taken, never sent: another worker runs it
            raise
        finally:
            report.close()
            self.idle_workers.pop(pid, None)
            self.workers.pop(pid, None)
            link.close()
            link.sock.close()

    def run_on_worker(self, job, link, report):
        """Send the job, pass its provisional results and files on, return its final reply;
        ``report`` (a timer) reports it started if it runs for long."""
        written = []
        try:
            for name, data, mode in job.body['files']:
                written.append(write_file(self.directory, name, data, mode,
                                          self.node.options.max_file_size))
            timeout = job.body['timeout']
            with gevent.Timeout(timeout, JobTimedOut) if timeout else nullcontext():
                link.send_now('job', job.body)
                started = time.time()
                report.start(self.node.job_started, job, started)
                try:
                    while True:
                        kind, body = link.recv_now()
                        if kind == 'job_done':
                            return body
                        if kind not in ('provisional', 'job_file'):
                            raise ProtocolError('worker sent %r' % (kind,))
                        if report.active:  # it said something: it has started
                            report.stop()
                            self.node.job_started(job, started)
                        self.node.send(kind, body)
                        if kind == 'job_file':
                            self.node.wait_for_link_to_drain()
                finally:
                    report.stop()
        finally:
            for path in written:
                try:
                    os.unlink(path)
                except OSError:
                    pass

    def kill_worker(self, pid):
        """End a worker process and all it started (it leads its own process group)."""
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def worker_died_reply(self, job, pid):
        if job.cancelled:
            return failure_reply(job, CANCELLED, 'job was cancelled')
        try:
            reason = self.exit_of(pid).get(timeout=WORKER_EXIT_WAIT)
        except gevent.Timeout:
            reason = 'died'
        return failure_reply(job, TERMINATED, 'worker process %d running the job %s' % (pid,
                                                                                        reason))

    def exit_of(self, pid):
        """The setup process's account of how worker process ``pid`` ended, once it has
        given it."""
        return self.worker_exits.setdefault(pid, gevent.event.AsyncResult())

    def cancel(self, job):
        """Kill the worker process running ``job``; its greenlet then reports it cancelled."""
        job.cancelled = True
        if job.worker is not None and self.workers.get(job.worker) is job:
            self.kill_worker(job.worker)

    def close(self, cleanup):
        """Stop the computation: ``cleanup`` runs the user's cleanup and removes the files.
        Worker processes go down with their setup process; any that lost it are killed
        here."""
        self.closing = True
        link = self.setup_link.value if self.setup_link.successful() else None
        if link is not None:
            link.send('exit', {'cleanup': bool(cleanup)})
        if not self.loaded:
            if not self.setup_link.ready():  # ``start`` waits for it: it never comes now
                self.setup_link.set_exception(ComputationError('uninstalled while it loaded'))
            self.kill_setup_process()
        elif self.setup_process is not None:
            try:
                self.setup_process.wait(timeout=SETUP_EXIT_WAIT)
            except subprocess.TimeoutExpired:
                logger.warning('%r: cleanup did not finish in %d seconds; killed', self,
                               SETUP_EXIT_WAIT)
            finally:
                self.kill_setup_process()
        if self.setup_process is None or self.setup_process.returncode != 0:
            for pid in list(self.workers):  # left by a setup process that did not exit cleanly
                self.kill_worker(pid)
        self.queue.clear()
        while self.idle_workers:  # their greenlets wake, see ``closing`` and end
            self.put_job(None)
        if cleanup:
            shutil.rmtree(self.directory, ignore_errors=True)

    def kill_setup_process(self):
        if self.setup_process is not None and self.setup_process.poll() is None:
            self.setup_process.kill()
            self.setup_process.wait()


def failure_reply(job, status, exception):
    return {'jid': job.jid, 'status': status, 'result': None, 'exception': exception,
            'stdout': '', 'stderr': '', 'start_time': None, 'end_time': time.time()}


def _package_root():
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
