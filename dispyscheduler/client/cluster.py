"""``SharedJobCluster``: a user's program's handle on the shared scheduler.

Plain threads and blocking sockets; importing this never monkey-patches the user's process.
One long-lived link to the scheduler carries submissions out and statuses and results in: a
reader thread applies what arrives to the jobs, a writer thread sends what ``submit`` queued,
and callbacks run one at a time, in order, on a thread of their own.
"""

import copy
import itertools
import logging
import queue
import socket
import threading
import time

from ..auth import AUTH_FAILED, AuthenticationError, handshake
from ..constants import (
    ABANDONED,
    CLIENT_CLUSTER_TIMEOUT,
    CONNECT_TIMEOUT,
    FINAL_STATUSES,
    HANDSHAKE_TIMEOUT,
    RUNNING,
    SCHEDULER_CLIENT_PORT,
    TERMINATED,
)
from ..link import ConnectionClosed, Link, set_nodelay
from ..protocol import ProtocolError
from .computation import pack_arguments, pack_computation, unpack_result
from .job import DispyJob

logger = logging.getLogger('dispyscheduler')

IGNORED_OPTIONS = ('dest_path', 'pulse_interval', 'ping_interval', 'poll_interval',
                   'fault_recover', 'recover_file', 'client_port', 'dispy_port', 'host',
                   'ext_host', 'exclusive', 'ipv4_udp_multicast', 'node_port')
"""dispy constructor options with no meaning here (the scheduler decides intervals, and
results come back on the client's own connection); accepted so that programs run unchanged."""


class SharedJobCluster:
    """Run ``computation`` on the nodes of a shared ``dispyscheduler``.

    Arguments are those of dispy's ``SharedJobCluster``. ``scheduler_node`` (alias
    ``scheduler_host``) defaults to this host; ``secret`` is the scheduler's
    ``--cluster_secret``; ``certfile``/``keyfile`` (or ``cafile``, which also verifies the
    scheduler's certificate) turn on TLS. ``callback`` (alias ``job_status``) is called with a
    copy of the job at each status change.
    """

    def __init__(self, computation, nodes=None, depends=(), callback=None, ip_addr=None,
                 ext_ip_addr=None, port=0, scheduler_node=None,
                 scheduler_port=SCHEDULER_CLIENT_PORT, loglevel=logging.WARNING, setup=None,
                 cleanup=True, reentrant=False, secret='', keyfile=None, certfile=None,
                 cafile=None, scheduler_host=None, job_status=None, **dispy_options):
        logger.setLevel(loglevel)
        for name in dispy_options:
            if name not in IGNORED_OPTIONS:
                raise TypeError('SharedJobCluster() got an unexpected keyword argument %r'
                                % (name,))
            logger.info('option %s has no effect with dispyscheduler', name)
        if depends:
            raise NotImplementedError('depends is not supported yet; functions and classes '
                                      'that the computation uses travel with it')
        del ext_ip_addr  # results return on the client's own connection: nothing to announce
        self._callback = job_status or callback
        code = pack_computation(computation, setup, cleanup)
        self.name = getattr(computation, '__name__', str(computation))
        self._jobs = {}  # uid -> DispyJob not yet final
        self._uids = itertools.count(1)
        self._closing = False
        self._closed = threading.Event()
        self._lost = None
        self._callbacks = queue.Queue() if self._callback else None
        host = scheduler_node or scheduler_host
        self._link = self._connect([host] if host else ['127.0.0.1', socket.gethostname()],
                                   scheduler_port, ip_addr, port, secret,
                                   (certfile, keyfile, cafile))
        try:
            self._link.send_now('cluster_new', {
                'name': self.name, 'code': code, 'nodes': _node_patterns(nodes),
                'reentrant': bool(reentrant), 'cleanup': bool(cleanup)})
            body = self._link.expect('cluster_ok', time.monotonic() + CLIENT_CLUSTER_TIMEOUT)
        except BaseException:
            self._link.sock.close()
            raise
        self.cid = body['cid']
        self._threads = [threading.Thread(target=self._link.run_writer, daemon=True,
                                          name='dispyscheduler-writer'),
                         threading.Thread(target=self._read, daemon=True,
                                          name='dispyscheduler-reader')]
        if self._callbacks is not None:
            self._threads.append(threading.Thread(target=self._run_callbacks, daemon=True,
                                                  name='dispyscheduler-callbacks'))
        for thread in self._threads:
            thread.start()

    def _connect(self, hosts, port, ip_addr, local_port, secret, tls_files):
        """Connect and authenticate; raises with a message that says what went wrong."""
        errors = []
        for host in hosts:
            try:
                sock = socket.create_connection(
                    (host, port), CONNECT_TIMEOUT,
                    (ip_addr or '', local_port) if ip_addr or local_port else None)
                break
            except OSError as exc:
                errors.append('%s:%s: %s' % (host, port, exc))
        else:
            raise ConnectionError('cannot reach the scheduler (%s)' % '; '.join(errors))
        set_nodelay(sock)
        where = '%s:%s' % (host, port)
        deadline = time.monotonic() + HANDSHAKE_TIMEOUT
        try:
            if any(tls_files):
                from ..tls import TLSSocket, client_context
                sock = TLSSocket(sock, client_context(*tls_files), server_side=False)
                sock.settimeout(HANDSHAKE_TIMEOUT)
                sock.do_handshake()
                sock.settimeout(None)
            sock.settimeout(None)
            link = Link(sock, where)
            handshake(link, secret, 'client', 'scheduler', initiator=True, deadline=deadline)
            return link
        except AuthenticationError:
            sock.close()
            raise AuthenticationError(
                '%s: the scheduler at %s did not accept this cluster\'s secret (it must be the '
                "scheduler's --cluster_secret)" % (AUTH_FAILED, where)) from None
        except (ConnectionClosed, ConnectionResetError, BrokenPipeError) as exc:
            sock.close()
            raise ConnectionError('the scheduler at %s dropped the connection during the '
                                  'handshake (%s); does it require TLS? then pass certfile= '
                                  'or cafile=' % (where, exc)) from None
        except BaseException:
            sock.close()
            raise

    # jobs

    def submit(self, *args, **kwargs):
        """Queue ``computation(*args, **kwargs)`` to run on a node; returns its DispyJob."""
        if self._closing:
            raise RuntimeError('cluster is closed')
        if self._lost is not None:
            raise ConnectionError(self._lost)
        if 'dispy_job_depends' in kwargs:
            raise NotImplementedError('dispy_job_depends is not supported yet')
        payload = pack_arguments(args, kwargs)
        uid = next(self._uids)
        job = DispyJob(args, kwargs)
        job.id = job._uid = uid
        self._jobs[uid] = job
        self._link.send('submit', {'uid': uid, 'args': payload})
        return job

    def cancel(self, job):
        """Cancel a queued or running job; returns 0, or -1 if it had already ended."""
        if job.status in FINAL_STATUSES or job._uid not in self._jobs:
            return -1
        self._link.send('cancel', {'uid': job._uid})
        return 0

    def wait(self, timeout=None):
        """Wait until every submitted job has ended and its callbacks have run; False if
        ``timeout`` (seconds) passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for job in list(self._jobs.values()):
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not job.finish.wait(remaining):
                return False
        if self._callbacks is not None:
            self._callbacks.join()
        return True

    def __call__(self):
        """dispy 3.x spelling of ``wait()``."""
        return self.wait()

    def close(self, timeout=None, terminate=False):
        """Wait for the jobs (unless ``terminate``), then release the cluster's nodes."""
        if self._closing:
            return
        if not terminate:
            self.wait(timeout)
        self._closing = True
        if self._lost is None and not self._link.closed:
            self._link.send('close', {'terminate': bool(terminate)})
            if not self._closed.wait(CLIENT_CLUSTER_TIMEOUT):
                logger.warning('scheduler did not confirm closing cluster %s', self.cid)
        self._link.close()
        if self._callbacks is not None:
            self._callbacks.join()
            self._callbacks.put(None)
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(5)

    shutdown = close

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close(terminate=exc_info[0] is not None)
        return False

    # what the scheduler sends

    def _read(self):
        try:
            self._link.run_reader(self._on_message)
        except Exception as exc:  # a bug or a bad frame must not leave jobs waiting forever
            logger.exception('reading from the scheduler failed')
            reason = 'connection to the scheduler failed: %s' % (exc,)
        else:
            reason = 'connection to the scheduler was lost'
        if not self._closing:
            self._lost = reason
            logger.error('cluster %s: %s; %d unfinished jobs abandoned', self.cid, reason,
                         len(self._jobs))
            for uid in list(self._jobs):
                self._end(uid, ABANDONED, None, reason)
        self._closed.set()

    def _on_message(self, kind, body):
        if kind == 'job_end':
            self._link.send('result_ack', {'ids': [body['uid']]})
            self._end(body['uid'], body['status'], body, body['exception'])
        elif kind == 'job_status':
            job = self._jobs.get(body['uid'])
            if job is not None and body['status'] == RUNNING:
                job.status = RUNNING
                job.ip_addr = body['ip_addr']
                job.start_time = body['start_time']
                self._notify(job)
        elif kind == 'cluster_warning':
            logger.warning('cluster %s: %s', self.cid, body['reason'])
        elif kind == 'closed':
            self._closed.set()
        else:
            raise ProtocolError('unexpected %r from the scheduler' % (kind,))

    def _end(self, uid, status, body, exception):
        job = self._jobs.pop(uid, None)
        if job is None:
            return  # a result delivered again
        if body is not None:
            job.stdout, job.stderr = body['stdout'], body['stderr']
            job.start_time, job.end_time = body['start_time'], body['end_time']
            job.ip_addr = body['ip_addr']
            if body['result'] is not None:
                try:
                    job.result = unpack_result(body['result'])
                except Exception as exc:
                    status = TERMINATED
                    exception = 'result could not be unpickled here: %r' % (exc,)
        else:
            job.end_time = time.time()
        job.exception = exception
        job.status = status
        self._notify(job)
        job.finish.set()

    def _notify(self, job):
        if self._callbacks is not None:
            self._callbacks.put(copy.copy(job))

    def _run_callbacks(self):
        while True:
            job = self._callbacks.get()
            try:
                if job is None:
                    return
                self._callback(job)
            except Exception:
                logger.exception('callback for job %s raised', job.id)
            finally:
                self._callbacks.task_done()


def _node_patterns(nodes):
    """dispy's ``nodes`` argument as ``[pattern, port]`` pairs."""
    patterns = []
    for entry in nodes or ['*']:
        if isinstance(entry, str):
            patterns.append([entry, 0])
        elif isinstance(entry, (tuple, list)) and entry and isinstance(entry[0], str):
            port = entry[1] if len(entry) > 1 and isinstance(entry[1], int) else 0
            patterns.append([entry[0], port])
        else:
            raise TypeError('nodes entries are host names, addresses or patterns, or '
                            '(host, port) pairs; got %r' % (entry,))
    return patterns
