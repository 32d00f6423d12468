"""The program a computation's processes run on a node (``python -m dispyscheduler.node.runner``).

The node daemon starts it once per computation, in the computation's directory, as the
computation's *setup process*: it loads the computation, gives it the globals dispynode gives
computations, runs its ``setup`` once, then forks *worker processes* on the daemon's request, so
every worker process inherits the globals that ``setup`` made and no process is started per
job. Each worker process leads its own process group (so cancelling a job also ends whatever it
started), connects back to the daemon on its own socket, and runs jobs one at a time until that
socket closes. The setup process reaps worker processes and reports how each one ended, runs
``cleanup`` when the computation is uninstalled, and takes its worker processes down with it if
the daemon goes away.

This module never imports gevent: jobs run in ordinary processes.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import inspect
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from typing import (Any, Dict, Iterator, List, NoReturn, Optional, Sequence, Set, Tuple,
                    Union)

import cloudpickle

from ..constants import (FINISHED, INLINE_RESULT_LIMIT, MAX_JOB_OUTPUT, NODE_DISPY_MODULES,
                         RECV_SIZE, TERMINATED)
from ..resources import Need, memory_exceeded
from ..wire import messages as m
from ..wire import serialize
from ..wire.files import Spool, read_chunks, refusal_reason, write_all
from ..wire.protocol import FrameDecoder, encode
from .grants import RLIMIT, limit_address_space

ENV_SOCKET = 'DISPYNODE_SOCKET'
ENV_TOKEN = 'DISPYNODE_TOKEN'
ENV_CID = 'DISPYNODE_CID'

UserComputation = Dict[str, Any]
"""The computation as the client packed it: ``compute`` or ``program``, ``setup``,
``cleanup``, ``depends``, ``setup_args``."""


class Channel:
    """A blocking framed connection to the node daemon."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(address)
        self.decoder = FrameDecoder()
        self.inbox: List[m.Message] = []
        # A process blocked in recv() on a Unix socket is woken each time the daemon reads
        # what it sent (the kernel signals free space on the same wait queue): after every
        # job. poll() for input only is woken by input only.
        self.readable = select.poll()
        self.readable.register(self.sock, select.POLLIN)

    def send(self, message: m.Message) -> None:
        self.sock.sendall(encode(message))

    def recv(self) -> Optional[m.Message]:
        """The next message, or None when the daemon closed the connection (or died: its
        processes then end quietly, with nothing to report to anyone)."""
        while not self.inbox:
            self.readable.poll()
            try:
                data = self.sock.recv(RECV_SIZE)
            except ConnectionError:
                return None
            if not data:
                return None
            self.inbox.extend(self.decoder.messages_from(data))
        return self.inbox.pop(0)

    def has_buffered(self) -> bool:
        return bool(self.inbox)


def describe_exit(status: int) -> str:
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = str(number)
        return 'killed by signal %d (%s)' % (number, name)
    return 'exited with status %d' % (os.WEXITSTATUS(status),)


class JobContext:
    """What ``dispy_provisional_result`` and ``dispy_send_file`` need: the worker process's
    channel, the running job, and the node's file size limit."""

    channel: Optional[Channel] = None
    jid: Optional[int] = None
    max_file_size = 0
    node_name = ''
    provisionals = 0  # the running job's provisional results sent as files so far


def dispy_provisional_result(result: Any, relay: bool = False,
                             timeout: Optional[float] = None) -> int:
    """Send ``result`` to the client now, as the job's provisional result; 0 on success.
    ``relay`` (dispy's: send it through the scheduler) changes nothing here, where everything
    goes through it."""
    channel = JobContext.channel
    if JobContext.jid is None or channel is None:
        return -1
    name = serialize.PROVISIONAL_FILE % (JobContext.jid, JobContext.provisionals)
    try:
        data, stored = pack_result(result, name)
    except OSError as exc:
        print('dispy_provisional_result: %s' % (exc,), file=sys.stderr)
        return -1
    except Exception:
        traceback.print_exc()
        return -1
    if stored:
        JobContext.provisionals += 1
    try:
        channel.send(m.Provisional(jid=JobContext.jid, result=data or b'', stored=stored))
    except OSError:  # the node daemon is gone
        return -1
    return 0


def pack_result(value: Any, name: str) -> Tuple[Optional[bytes], str]:
    """A result pickled: ``(pickle, '')`` if it travels inline, else ``(None, name)`` once
    written to the file ``name`` of the computation's directory, where the node daemon
    streams it from. An error (an ``OSError``: a full disk; anything else: it cannot be
    pickled) leaves no file behind."""
    path = os.path.join(COMPUTATION_DIRECTORY, name)
    try:
        if not serialize.obviously_large(value, INLINE_RESULT_LIMIT):
            data = serialize.dumps(value)
            if len(data) <= INLINE_RESULT_LIMIT:
                return data, ''
            with open(path, 'wb', buffering=0) as handle:
                write_all(handle.fileno(), data)
            return None, name
        # pickled into its file
        spool = Spool(INLINE_RESULT_LIMIT, path=path, hashed=False, by_reference=False)
        try:
            serialize.dump(value, spool)
        finally:
            spool.close()
        return (spool.getvalue(), '') if spool.file is None else (None, name)
    except BaseException:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        raise


def dispy_send_file(path: str, relay: bool = False, timeout: Optional[float] = None) -> int:
    """Send the file at ``path`` to the client, which saves it under the same relative path in
    its working directory; 0 on success, -1 if it cannot be read or is too large. ``relay``
    is dispy's and changes nothing here."""
    channel = JobContext.channel
    if JobContext.jid is None or channel is None:
        return -1
    path = os.path.expanduser(path)
    try:
        size = os.stat(path).st_size
    except OSError:
        return -1
    if JobContext.max_file_size and size > JobContext.max_file_size:
        return -1
    name = os.path.splitdrive(path)[1].lstrip(os.sep)
    try:
        for offset, data, last in read_chunks(path):
            channel.send(m.JobFile(jid=JobContext.jid, name=name, offset=offset, data=data,
                                   last=last))
    except OSError:
        return -1
    return 0


COMPUTATION_DIRECTORY = '.'
"""Where the node put the computation's files and the values its jobs are given (the
directory the setup process starts in, whatever a job does with its own)."""


def give_globals(computation: UserComputation, info: m.Load) -> None:
    """The globals dispynode gives computations, in the namespace of the computation and of
    its setup and cleanup (one namespace when they come from one module)."""
    namespaces = {}
    for name in ('compute', 'setup', 'cleanup'):
        function = computation.get(name)
        namespace = getattr(function, '__globals__', None)
        if namespace is not None:
            namespaces[id(namespace)] = namespace
    for namespace in namespaces.values():
        for module in NODE_DISPY_MODULES:
            if module not in namespace:
                namespace[module] = importlib.import_module(module)
        for name, value in computation.get('depends', {}).items():
            namespace.setdefault(name, value)
        namespace.update(dispy_provisional_result=dispy_provisional_result,
                         dispy_send_file=dispy_send_file,
                         dispy_node_name=info.node_name,
                         dispy_node_ip_addr=info.node_ip_addr,
                         dispy_job_path=os.getcwd())


def main() -> int:
    address = '\0' + os.environ.pop(ENV_SOCKET)
    token = bytes.fromhex(os.environ.pop(ENV_TOKEN))
    cid = int(os.environ.pop(ENV_CID))
    global COMPUTATION_DIRECTORY
    COMPUTATION_DIRECTORY = os.getcwd()
    sys.path.insert(0, os.getcwd())  # modules shipped with ``depends`` are importable
    channel = Channel(address)
    channel.send(m.WorkerHello(role='setup', token=token, cid=cid, pid=os.getpid()))
    info = channel.recv()
    if type(info) is not m.Load:
        return 1
    JobContext.max_file_size = info.max_file_size
    JobContext.node_name = info.node_ip_addr or info.node_name
    try:
        computation = cloudpickle.loads(info.code)
        if info.setup_args is not None:
            computation['setup_args'] = cloudpickle.loads(info.setup_args)
        give_globals(computation, info)
        setup = computation.get('setup')
        if setup is not None:
            outcome = setup(*computation.get('setup_args', ()))
            # dispy 4: 0, 1 (its globals copied to each job) or 2 (jobs forked from the setup
            # process) all mean success; here jobs always run in processes forked from it,
            # with the globals setup made, which is what each asks for
            if outcome not in (None, 0, 1, 2):
                raise RuntimeError('setup returned %r, not 0, 1 or 2' % (outcome,))
    except BaseException:  # whatever user code raises is reported, never fatal to the node
        channel.send(m.LoadFailed(reason=traceback.format_exc()))
        return 1
    channel.send(m.Loaded())
    try:
        return serve_as_setup_process(channel, address, token, cid, computation)
    except ConnectionError:  # the node daemon died: there is no one left to tell
        return 0


def serve_as_setup_process(channel: Channel, address: str, token: bytes, cid: int,
                           computation: UserComputation) -> int:
    """Fork worker processes when asked, report each one's end, clean up when told to stop."""
    wakeup_read, wakeup_write = os.pipe()
    os.set_blocking(wakeup_write, False)
    signal.set_wakeup_fd(wakeup_write)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    workers: Set[int] = set()
    run_cleanup = False
    watched: List[Union[socket.socket, int]] = [channel.sock, wakeup_read]
    try:
        while True:
            if not channel.has_buffered():
                readable, _, _ = select.select(watched, [], [])
                if wakeup_read in readable:
                    os.read(wakeup_read, 512)
                    reap(channel, workers)
                    if channel.sock not in readable:
                        continue
            message = channel.recv()
            if message is None:
                break
            if type(message) is m.Fork:
                for _ in range(message.count):
                    pid = os.fork()
                    if pid == 0:
                        serve_as_worker(channel, (wakeup_read, wakeup_write), address, token,
                                        cid, computation)
                    workers.add(pid)
            elif type(message) is m.Exit:
                run_cleanup = message.cleanup
                break
    finally:
        for pid in workers:
            try:
                os.killpg(pid, signal.SIGKILL)
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


def reap(channel: Channel, workers: Set[int]) -> None:
    while workers:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        workers.discard(pid)
        channel.send(m.WorkerExit(pid=pid, how=describe_exit(status)))


def serve_as_worker(setup_channel: Channel, setup_fds: Tuple[int, int], address: str,
                    token: bytes, cid: int, computation: UserComputation) -> NoReturn:
    """In a forked worker process: run jobs until the daemon closes its connection."""
    status = 0
    try:
        os.setpgid(0, 0)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        # a cancel interrupts the job first (KeyboardInterrupt), even where the node was
        # started with SIGINT ignored (in the background by a shell)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for fd in setup_fds:
            os.close(fd)
        setup_channel.sock.close()
        channel = JobContext.channel = Channel(address)
        channel.send(m.WorkerHello(role='worker', token=token, cid=cid, pid=os.getpid()))
        while True:
            message = channel.recv()
            if message is None:
                break
            if type(message) is m.Job:
                JobContext.jid = message.jid
                try:
                    done = run_job(computation, message)
                finally:
                    JobContext.jid = None
                channel.send(done)
    except (ConnectionError, KeyboardInterrupt):
        pass  # the node daemon died, or a cancel's interrupt came after the job's end
    except BaseException:
        traceback.print_exc()
        status = 1
    finally:
        os._exit(status)


class BoundedOutput(io.TextIOBase):
    """A text stream that keeps the first ``limit`` characters and counts the rest."""

    def __init__(self, limit: int = MAX_JOB_OUTPUT) -> None:
        self.limit = limit
        self.parts: List[str] = []
        self.kept = 0
        self.dropped = 0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        room = self.limit - self.kept
        if room > 0:
            piece = text[:room]
            self.parts.append(piece)
            self.kept += len(piece)
            self.dropped += len(text) - len(piece)
        else:
            self.dropped += len(text)
        return len(text)

    def getvalue(self) -> str:
        text = ''.join(self.parts)
        if self.dropped:
            text += ('\n[dispynode: output cut at %d characters; %d more were dropped]\n'
                     % (self.limit, self.dropped))
        return text


def run_job(computation: UserComputation, job: m.Job) -> m.JobDone:
    """Run one job with its output captured."""
    stdout, stderr = BoundedOutput(), BoundedOutput()
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = stdout, stderr
    start_time = time.time()
    result = exception = None
    stored = ''
    added: list[str] = []
    try:
        args, kwargs, *depends = serialize.loads(job.args)
        args, kwargs = serialize.put_stored_values(args, kwargs, COMPUTATION_DIRECTORY)
        if depends:  # functions and classes of its ``dispy_job_depends``: globals of the job
            added = give_job_globals(computation, depends[0])
        with given_resources(computation, job):
            if computation.get('program'):
                value = run_program(computation['program'], args, stdout, stderr)
            else:
                value = computation['compute'](*args, **kwargs)
    except MemoryError:
        status = TERMINATED
        exception = traceback.format_exc()
        if job.memory_limit:
            exception = '%s\n%s' % (memory_exceeded(job.memory_limit), exception)
    except SystemExit as exc:
        status = TERMINATED
        exception = 'job called sys.exit(%r)\n%s' % (exc.code, traceback.format_exc())
    except BaseException:
        status = TERMINATED
        exception = traceback.format_exc()
    else:
        status = FINISHED
        try:
            result, stored = pack_result(value, serialize.RESULT_FILE % job.jid)
        except OSError as exc:
            status = TERMINATED
            exception = ('result of type %s could not be written on node %s: %s'
                         % (type(value).__name__, JobContext.node_name, refusal_reason(exc)))
        except Exception as exc:
            status = TERMINATED
            exception = 'result of type %s cannot be pickled: %s' % (type(value).__name__, exc)
    finally:
        end_time = time.time()
        sys.stdout, sys.stderr = saved
        for name in added:  # the next job of this worker process does not see them
            computation['compute'].__globals__.pop(name, None)
    return m.JobDone(jid=job.jid, status=status, result=result, exception=exception,
                     stdout=stdout.getvalue(), stderr=stderr.getvalue(), start_time=start_time,
                     end_time=end_time, stored=stored)


@contextlib.contextmanager
def given_resources(computation: UserComputation, job: m.Job) -> Iterator[None]:
    """The job runs with what its node gave it: its GPUs, and no other, in
    ``CUDA_VISIBLE_DEVICES`` (numbered as ``nvidia-smi`` numbers them); what it holds in the
    global ``dispy_job_resources``; its address space limited to its memory grant more than
    the worker process maps now, where the node limits memory that way. (Its CPUs: the
    daemon pinned this process to them before sending the job.)"""
    devices = ','.join(job.gpu_ids)
    if os.environ.get('CUDA_VISIBLE_DEVICES') != devices:  # set once for job after job
        os.environ.update(CUDA_VISIBLE_DEVICES=devices, CUDA_DEVICE_ORDER='PCI_BUS_ID')
    given: dict[str, Any] = dict(Need.from_wire(job.need).as_dict(), gpus=list(job.gpu_ids),
                                 cpu_ids=list(job.cpu_ids))
    function = computation.get('compute')
    namespace = getattr(function, '__globals__', None)
    if namespace is not None:
        namespace['dispy_job_resources'] = given
    restore = (limit_address_space(job.memory_limit) if job.memory_by == RLIMIT
               else lambda: None)
    try:
        yield
    finally:
        restore()


def give_job_globals(computation: UserComputation, namespace: dict[str, Any]) -> list[str]:
    """Make a job's ``dispy_job_depends`` functions and classes globals of the computation
    for this job, as dispy does; they, in turn, see the computation's globals (dispynode's
    names, what ``setup`` made). Returns the names added, to take away after the job."""
    function = computation.get('compute')
    shared = getattr(function, '__globals__', None)
    if shared is None:  # a program: nothing to give
        return []
    added = [name for name in namespace if name not in shared]
    shared.update(namespace)
    for value in namespace.values():
        if inspect.isfunction(value):
            functions = [value]
        elif inspect.isclass(value):  # its methods
            functions = [member for member in vars(value).values() if inspect.isfunction(member)]
        else:
            continue
        for member in functions:
            own = member.__globals__
            if own is not shared:
                for name, item in shared.items():
                    own.setdefault(name, item)
    return added


def run_program(program: str, args: Sequence[Any], stdout: BoundedOutput,
                stderr: BoundedOutput) -> int:
    """Run a shipped program with the job's arguments; its exit code is the result."""
    path = os.path.abspath(program)
    argv = [sys.executable, path] if path.endswith('.py') else [path]
    argv += [str(arg) for arg in args]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        process = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        for handle, stream in ((out, stdout), (err, stderr)):
            handle.seek(0)
            stream.write(handle.read(stream.limit + 1).decode(errors='replace'))
            stream.dropped += max(0, os.fstat(handle.fileno()).st_size - stream.limit - 1)
    return process.returncode


if __name__ == '__main__':
    sys.exit(main())
