"""The processes that run a computation's jobs on a node (``python -m dispyscheduler.node.worker``).

The node daemon starts one *host* process per computation. The host loads the computation,
runs its ``setup`` once, then forks worker processes on the daemon's request, so every worker
inherits the globals that ``setup`` made and no process is started per job. Each worker
connects back to the daemon on its own socket and runs jobs one at a time until that socket
closes. The host reaps workers and reports how each one ended, runs ``cleanup`` when the
computation is uninstalled, and takes its workers down with it if the daemon goes away.

This module never imports gevent: jobs run in ordinary processes.
"""

import io
import os
import select
import signal
import socket
import sys
import time
import traceback

import cloudpickle

from ..constants import FINISHED, TERMINATED
from ..protocol import FrameDecoder, encode

ENV_SOCKET = 'DISPYNODE_SOCKET'
ENV_TOKEN = 'DISPYNODE_TOKEN'
ENV_CID = 'DISPYNODE_CID'


class Channel:
    """A blocking framed connection to the node daemon."""

    def __init__(self, address):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(address)
        self.decoder = FrameDecoder()
        self.inbox = []

    def send(self, kind, body):
        self.sock.sendall(encode(kind, body))

    def recv(self):
        """The next message, or None when the daemon closed the connection."""
        while not self.inbox:
            data = self.sock.recv(1 << 20)
            if not data:
                return None
            self.inbox.extend(self.decoder.messages_from(data))
        return self.inbox.pop(0)

    def has_buffered(self):
        return bool(self.inbox)


def describe_exit(status):
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = str(number)
        return 'killed by signal %d (%s)' % (number, name)
    return 'exited with status %d' % (os.WEXITSTATUS(status),)


def main():
    address = '\0' + os.environ.pop(ENV_SOCKET)
    token = bytes.fromhex(os.environ.pop(ENV_TOKEN))
    cid = int(os.environ.pop(ENV_CID))
    channel = Channel(address)
    channel.send('worker_hello', {'role': 'host', 'token': token, 'cid': cid, 'pid': os.getpid()})
    message = channel.recv()
    if message is None or message[0] != 'load':
        return 1
    try:
        computation = cloudpickle.loads(message[1]['code'])
        setup = computation.get('setup')
        if setup is not None:
            outcome = setup(*computation.get('setup_args', ()))
            if outcome not in (None, 0):
                raise RuntimeError('setup returned %r, not 0' % (outcome,))
    except BaseException:  # whatever user code raises is reported, never fatal to the node
        channel.send('load_failed', {'reason': traceback.format_exc()})
        return 1
    channel.send('loaded', {})
    return serve_as_host(channel, address, token, cid, computation)


def serve_as_host(channel, address, token, cid, computation):
    """Fork workers when asked, report each one's end, clean up when told to stop."""
    wakeup_read, wakeup_write = os.pipe()
    os.set_blocking(wakeup_write, False)
    signal.set_wakeup_fd(wakeup_write)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    workers = set()
    run_cleanup = False
    try:
        while True:
            if not channel.has_buffered():
                readable, _, _ = select.select([channel.sock, wakeup_read], [], [])
                if wakeup_read in readable:
                    os.read(wakeup_read, 512)
                    reap(channel, workers)
                    if channel.sock not in readable:
                        continue
            message = channel.recv()
            if message is None:
                break
            kind, body = message
            if kind == 'fork':
                for _ in range(body['count']):
                    pid = os.fork()
                    if pid == 0:
                        serve_as_worker(channel, (wakeup_read, wakeup_write), address, token,
                                        cid, computation)
                    workers.add(pid)
            elif kind == 'exit':
                run_cleanup = body['cleanup']
                break
    finally:
        for pid in workers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in workers:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
    cleanup = computation.get('cleanup')
    if run_cleanup and callable(cleanup):
        try:
            cleanup(*computation.get('setup_args', ()))
        except BaseException:
            traceback.print_exc()
    return 0


def reap(channel, workers):
    while workers:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        workers.discard(pid)
        channel.send('worker_exit', {'pid': pid, 'how': describe_exit(status)})


def serve_as_worker(host_channel, host_fds, address, token, cid, computation):
    """In a forked child: run jobs until the daemon closes this worker's connection."""
    status = 0
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in host_fds:
            os.close(fd)
        host_channel.sock.close()
        channel = Channel(address)
        channel.send('worker_hello', {'role': 'worker', 'token': token, 'cid': cid,
                                      'pid': os.getpid()})
        function = computation['compute']
        while True:
            message = channel.recv()
            if message is None:
                break
            kind, body = message
            if kind == 'job':
                channel.send('job_done', run_job(function, body))
    except BaseException:
        traceback.print_exc()
        status = 1
    finally:
        os._exit(status)


def run_job(function, job):
    """Run one job with its output captured; the reply is a ``job_done`` body."""
    stdout, stderr = io.StringIO(), io.StringIO()
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = stdout, stderr
    start_time = time.time()
    result = exception = None
    try:
        args, kwargs = cloudpickle.loads(job['args'])
        value = function(*args, **kwargs)
    except BaseException:
        status = TERMINATED
        exception = traceback.format_exc()
    else:
        status = FINISHED
        try:
            result = cloudpickle.dumps(value)
        except Exception as exc:
            status = TERMINATED
            exception = 'result of type %s cannot be pickled: %s' % (type(value).__name__, exc)
    finally:
        end_time = time.time()
        sys.stdout, sys.stderr = saved
    return {'jid': job['jid'], 'status': status, 'result': result, 'exception': exception,
            'stdout': stdout.getvalue(), 'stderr': stderr.getvalue(),
            'start_time': start_time, 'end_time': end_time}


if __name__ == '__main__':
    sys.exit(main())
