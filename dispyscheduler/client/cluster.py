"""``SharedJobCluster``: a user's program's handle on the shared scheduler.

Plain threads and blocking sockets; importing this never monkey-patches the user's process.
One long-lived link to the scheduler carries submissions out and statuses and results in: a
reader thread applies what arrives to the jobs, a writer thread sends what ``submit`` queued,
and callbacks run one at a time, in order, on a thread of their own.
"""

import copy
import itertools
import logging
import os
import socket
import threading
import time

from ..auth import AUTH_FAILED, AuthenticationError, handshake
from ..constants import (ABANDONED, CLIENT_CLUSTER_TIMEOUT, CONNECT_TIMEOUT, FINAL_STATUSES,
                         HANDSHAKE_TIMEOUT, NODE_CLOSED, NODE_INITIALIZED, PROVISIONAL_RESULT,
                         RUNNING, SCHEDULER_CLIENT_PORT, TERMINATED)
from ..files import FileRefused, IncomingFiles, check_size, read_chunks
from ..link import ConnectionClosed, Link, set_nodelay
from ..protocol import ProtocolError
from .callbacks import CallbackRunner
from .computation import collect_depends, pack_computation, pack_value, unpack_result
from .job import ClusterStatus, DispyJob, DispyNode, NodeAllocate

logger = logging.getLogger('dispyscheduler')

IGNORED_OPTIONS = ('dest_path', 'pulse_interval', 'ping_interval', 'poll_interval',
                   'fault_recover', 'recover_file', 'client_port', 'dispy_port', 'host',
                   'ext_host', 'exclusive', 'ipv4_udp_multicast', 'node_port')
"""dispy constructor options with no meaning here (the scheduler decides intervals, and
results come back on the client's own connection); accepted so that programs run unchanged."""


class SharedJobCluster:
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

    def __init__(self, computation, nodes=None, depends=(), callback=None, ip_addr=None,
                 ext_ip_addr=None, port=0, scheduler_node=None,
                 scheduler_port=SCHEDULER_CLIENT_PORT, loglevel=logging.WARNING, setup=None,
                 cleanup=True, reentrant=False, secret='', keyfile=None, certfile=None,
                 cafile=None, scheduler_host=None, job_status=None, cluster_status=None,
                 job_timeout=None, **dispy_options):
        logger.setLevel(loglevel)
        for name in dispy_options:
            if name not in IGNORED_OPTIONS:
                raise TypeError('SharedJobCluster() got an unexpected keyword argument %r'
                                % (name,))
            logger.info('option %s has no effect with dispyscheduler', name)
        del ext_ip_addr  # results return on the client's own connection: nothing to announce
        self._job_status = job_status or callback
        self._cluster_status = cluster_status
        self._job_timeout = job_timeout
        packed = pack_computation(computation, depends, setup, cleanup)
        self._allocators, node_files = self._node_allocations(nodes or ['*'])
        files = packed.files + node_files
        self.name = os.path.basename(computation) if isinstance(computation, str) else \
            getattr(computation, '__name__', str(computation))
        self._jobs = {}  # uid -> DispyJob not yet final
        self._nodes = {}  # ip_addr -> DispyNode
        self._uids = itertools.count(1)
        self._incoming = {}  # uid -> IncomingFiles of files its job sends back
        self._closing = False
        self._closed = threading.Event()
        self._lost = None
        self._start_time = time.time()
        has_callbacks = self._job_status or self._cluster_status
        self._callbacks = CallbackRunner() if has_callbacks else None
        host = scheduler_node or scheduler_host
        self._link = self._connect([host] if host else ['127.0.0.1', socket.gethostname()],
                                   scheduler_port, ip_addr, port, secret,
                                   (certfile, keyfile, cafile))
        try:
            body = self._create(packed.code, nodes or ['*'], files,
                                [name for name, _, _ in node_files], reentrant, cleanup)
        except BaseException:
            self._link.sock.close()
            raise
        self.cid = body['cid']
        self._max_file_size = body['max_file_size']
        self._threads = [threading.Thread(target=self._link.run_writer, daemon=True,
                                          name='dispyscheduler-writer'),
                         threading.Thread(target=self._read, daemon=True,
                                          name='dispyscheduler-reader')]
        for thread in self._threads:
            thread.start()
        if self._callbacks is not None:
            self._callbacks.start()

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

    def _create(self, code, nodes, files, node_files, reentrant, cleanup):
        """Send the computation and its files; the scheduler's ``cluster_ok`` body."""
        self._link.send_now('cluster_new', {
            'name': self.name, 'code': code, 'nodes': _node_patterns(nodes),
            'reentrant': bool(reentrant), 'cleanup': bool(cleanup),
            'files': [[name, os.path.getsize(path), mode] for name, path, mode in files],
            'node_files': node_files, 'allocate': bool(self._allocators)})
        try:
            for name, path, _ in files:
                for offset, data, last in read_chunks(path):
                    self._link.send_now('cluster_file', {'name': name, 'offset': offset,
                                                         'data': data, 'last': last})
        except (ConnectionError, OSError):
            pass  # the scheduler refused the files; its reason is read below
        try:
            return self._link.expect('cluster_ok',
                                     time.monotonic() + CLIENT_CLUSTER_TIMEOUT)
        except ProtocolError as exc:
            raise ValueError('the scheduler refused the computation: %s' % (exc,)) from None

    @staticmethod
    def _node_allocations(nodes):
        """The NodeAllocate entries of ``nodes``, each with the names of its own files."""
        allocators, files = [], []
        for entry in nodes:
            if isinstance(entry, NodeAllocate):
                own_files, _, _ = collect_depends(entry.depends)
                allocators.append((entry, [name for name, _, _ in own_files]))
                files.extend(own_files)
        return allocators, files

    # jobs

    def submit(self, *args, **kwargs):
        """Queue ``computation(*args, **kwargs)`` to run on a node; returns its DispyJob.

        Keywords for the scheduler: ``dispy_job_depends`` (files for this job),
        ``dispy_job_timeout`` (seconds; the job is killed after that),
        ``dispy_job_priority`` (higher runs first within this cluster)."""
        return self._submit(None, None, args, kwargs)

    def submit_node(self, node, *args, **kwargs):
        """As ``submit``, to run only on ``node`` (a DispyNode, address or name)."""
        return self._submit(None, node, args, kwargs)

    def submit_job_id(self, job_id, *args, **kwargs):
        """As ``submit``, with ``job.id`` set to ``job_id``."""
        return self._submit(job_id, None, args, kwargs)

    def submit_job_id_node(self, job_id, node, *args, **kwargs):
        return self._submit(job_id, node, args, kwargs)

    def _submit(self, job_id, node, args, kwargs):
        if self._closing:
            raise RuntimeError('cluster is closed')
        if self._lost is not None:
            raise ConnectionError(self._lost)
        files = self._job_files(kwargs.pop('dispy_job_depends', ()))
        timeout = kwargs.pop('dispy_job_timeout', self._job_timeout)
        priority = int(kwargs.pop('dispy_job_priority', 0))
        payload = pack_value((args, kwargs), 'job arguments')
        if isinstance(node, DispyNode):
            node = node.ip_addr
        uid = next(self._uids)
        job = DispyJob(args, kwargs)
        job._uid = uid
        job.id = uid if job_id is None else job_id
        self._jobs[uid] = job
        if not self._link.send('submit', {'uid': uid, 'args': payload, 'files': files,
                                          'timeout': None if timeout is None else float(timeout),
                                          'priority': priority, 'node': node}):
            self._jobs.pop(uid, None)
            raise ConnectionError(self._lost or 'the connection to the scheduler is closed')
        return job

    def _job_files(self, paths):
        files = []
        for path in paths or ():
            with open(path, 'rb') as handle:
                data = handle.read()
            try:
                check_size(path, len(data), self._max_file_size)
            except FileRefused as exc:
                raise ValueError(str(exc)) from None
            files.append([os.path.basename(path), data, os.stat(path).st_mode & 0o777])
        return files

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
        return self._callbacks is None or self._callbacks.join(deadline)

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
            self._callbacks.stop()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(5)

    shutdown = close

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close(terminate=exc_info[0] is not None)
        return False

    # nodes

    def status(self):
        """``ClusterStatus(nodes, jobs_pending)``: the nodes running this cluster's jobs."""
        nodes = [copy.copy(node) for node in self._nodes.values() if not node.closed]
        return ClusterStatus(nodes, len(self._jobs))

    def print_status(self, wall_time=None):
        """Print a table of the nodes: CPUs, jobs done, time per job (as dispy does)."""
        print(self.status_table(wall_time))

    stats = print_status

    def status_table(self, wall_time=None):
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

    def _on_node_offer(self, body):
        """The scheduler asks how many CPUs of a node to use (NodeAllocate)."""
        cpus, setup_args, files = 0, None, []
        for allocator, own_files in self._allocators:
            if allocator.matches(body['ip_addr'], body['name']):
                try:
                    cpus = int(allocator.allocate(self, body['ip_addr'], body['name'],
                                                  body['cpus'], None, body['platform']) or 0)
                except Exception:
                    logger.exception('NodeAllocate.allocate failed for node %s',
                                     body['ip_addr'])
                    cpus = 0
                if allocator.setup_args:
                    setup_args = pack_value(allocator.setup_args, 'setup_args')
                files = own_files
                break
        else:
            cpus = body['cpus']  # matched a plain pattern: the whole node
        self._link.send('node_allocation', {'key': body['key'], 'cpus': max(0, cpus),
                                            'setup_args': setup_args, 'files': files})

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
                job._node = self._nodes.get(job.ip_addr)
                if job._node is not None:
                    job._node.busy += 1
                self._notify(job)
        elif kind == 'provisional_result':
            job = self._jobs.get(body['uid'])
            if job is not None:
                try:
                    job.result = unpack_result(body['result'])
                except Exception:
                    logger.exception('provisional result of job %s cannot be unpickled', job.id)
                    return
                job.status = PROVISIONAL_RESULT
                self._notify(job)
        elif kind == 'file_part':
            self._receive_file(body)
        elif kind == 'node_status':
            self._on_node_status(body)
        elif kind == 'node_offer':
            self._on_node_offer(body)
        elif kind == 'cluster_warning':
            logger.warning('cluster %s: %s', self.cid, body['reason'])
        elif kind == 'closed':
            self._closed.set()
        else:
            raise ProtocolError('unexpected %r from the scheduler' % (kind,))

    def _on_node_status(self, body):
        node = self._nodes.get(body['ip_addr'])
        if body['status'] == NODE_INITIALIZED:
            if node is None:
                node = self._nodes[body['ip_addr']] = DispyNode(body['ip_addr'], body['name'],
                                                                body['cpus'])
            node.closed = False
        elif node is None:
            return
        elif body['status'] == NODE_CLOSED:
            node.closed = True
        node.update_time = time.time()
        if self._cluster_status is not None:
            self._callbacks.put(self._cluster_status, body['status'], copy.copy(node), None)

    def _receive_file(self, body):
        """A file a job sends back (``dispy_send_file``), into the working directory."""
        incoming = self._incoming.get(body['uid'])
        if incoming is None:
            incoming = self._incoming[body['uid']] = IncomingFiles(os.getcwd())
        try:
            incoming.chunk(body['name'], body['offset'], body['data'], body['last'])
        except (FileRefused, OSError) as exc:
            logger.warning('file %r from job %s not saved: %s', body['name'], body['uid'], exc)
            incoming.abort()
        if not incoming.open:
            del self._incoming[body['uid']]

    def _end(self, uid, status, body, exception):
        job = self._jobs.pop(uid, None)
        if job is None:
            return  # a result delivered again
        if body is not None:
            job.stdout, job.stderr = body['stdout'], body['stderr']
            job.start_time, job.end_time = body['start_time'], body['end_time']
            job.ip_addr = body['ip_addr']
            job.result = None
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
        node = job._node
        if node is not None:
            node.busy -= 1
            node.jobs_done += 1
            if job.start_time and job.end_time:
                node.cpu_time += job.end_time - job.start_time
            job._node = None
        self._notify(job)
        job.finish.set()

    def _notify(self, job):
        if self._callbacks is None:
            return
        snapshot = copy.copy(job)
        if self._job_status is not None:
            self._callbacks.put(self._job_status, snapshot)
        if self._cluster_status is not None:
            node = copy.copy(self._nodes.get(job.ip_addr)) if job.ip_addr else None
            self._callbacks.put(self._cluster_status, job.status, node, snapshot)


def _node_patterns(nodes):
    """dispy's ``nodes`` argument as ``[pattern, port]`` pairs."""
    patterns = []
    for entry in nodes:
        if isinstance(entry, NodeAllocate):
            patterns.append([entry.ip_addr, entry.port or 0])
        elif isinstance(entry, DispyNode):
            patterns.append([entry.ip_addr, 0])
        elif isinstance(entry, str):
            patterns.append([entry, 0])
        elif isinstance(entry, (tuple, list)) and entry and isinstance(entry[0], str):
            port = entry[1] if len(entry) > 1 and isinstance(entry[1], int) else 0
            patterns.append([entry[0], port])
        else:
            raise TypeError('nodes entries are host names, addresses or patterns, '
                            '(host, port) pairs or NodeAllocate objects; got %r' % (entry,))
    return patterns
