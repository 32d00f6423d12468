"""Every message of the protocol, defined once: its kind, its fields, their types and shapes.

A message is a small dataclass; its annotations are its schema. On the wire it is the pair
``[kind, {field: value, ...}]`` (``protocol.py`` frames it): a receiver ignores fields it does
not know, so a newer peer may add some, and a field added later has a default, taken when an
older peer leaves it out; a message with any other field missing, or of another type, is
refused before any handler sees it. Types are exact, as msgpack decodes them: a bool is
not an int, a float field takes an int too. ``tuple[...]`` fields travel as fixed-length
arrays and are checked item by item; ``list[...]`` as arrays of any length.

Sender and receiver use the same class: ``link.send(JobDone(jid=..., ...))`` on one side, a
handler that takes a ``JobDone`` on the other.

User data (computations, arguments, results) are opaque ``bytes``: only the client and the
node's worker processes ever unpickle them.
"""

from __future__ import annotations

import dataclasses
import time
import types
import typing
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Optional, TypeVar, Union

if TYPE_CHECKING:
    from typing_extensions import dataclass_transform
else:
    def dataclass_transform(**_options: Any) -> Callable[[Any], Any]:
        """Read by type checkers only (``typing`` has it from Python 3.11 on)."""
        return lambda decorator: decorator

__all__ = ['Message', 'ProtocolError', 'from_wire', 'MESSAGES']


class ProtocolError(Exception):
    """A peer sent something that is not this protocol; its connection is closed."""


class Message:
    """Base of every message; ``kind`` names it on the wire."""

    __slots__ = ()
    kind: ClassVar[str]
    _fields: ClassVar[tuple[str, ...]]
    _checks: ClassVar[tuple[tuple[str, Callable[[Any], Any]], ...]]
    _decode: ClassVar[Callable[[dict[str, Any]], Message]]

    def body(self) -> dict[str, Any]:
        """The fields as the map that travels."""
        return {name: getattr(self, name) for name in self._fields}


MESSAGES: dict[str, type[Message]] = {}
"""Every message class by kind."""

Checker = Callable[[Any], Any]


def _fail(expected: str, value: Any) -> Any:
    raise ProtocolError('has type %s, not %s' % (type(value).__name__, expected))


INT_RANGE = (-2 ** 63, 2 ** 63 - 1)
"""Integers a message may carry: what SQLite stores (and msgpack's signed 64 bits). One out
of range would fail where it is stored, long after it was accepted; it is refused here."""


def _in_range(value: Any) -> bool:
    return type(value) is not int or INT_RANGE[0] <= value <= INT_RANGE[1]


def _exact(allowed: frozenset[type], name: str) -> Checker:
    if int in allowed:
        def check_number(value: Any) -> Any:
            if type(value) not in allowed:
                return _fail(name, value)
            if not _in_range(value):
                raise ProtocolError('integer %d out of range' % (value,))
            return value
        check_number.allowed = allowed  # type: ignore[attr-defined]
        return check_number

    def check(value: Any) -> Any:
        return value if type(value) in allowed else _fail(name, value)
    check.allowed = allowed  # type: ignore[attr-defined]
    return check


def _checker(annotation: Any) -> Checker:
    """The function that checks (and, for tuples, converts) a received value of a field
    annotated ``annotation``."""
    if annotation is float:
        return _exact(frozenset((float, int)), 'a number')
    if annotation in (int, str, bytes, bool):
        return _exact(frozenset((annotation,)), annotation.__name__)
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if origin in (Union, types.UnionType) and all(argument in (bytes, bytearray)
                                                  for argument in arguments):
        return _exact(frozenset(arguments), 'bytes')  # ``Chunk``
    if origin in (Union, types.UnionType) and type(None) in arguments:
        (inner,) = [argument for argument in arguments if argument is not type(None)]
        check_inner = _checker(inner)
        allowed = getattr(check_inner, 'allowed', None)
        if allowed is not None:  # a plain type: one set test
            return _exact(allowed | {type(None)}, 'optional ' + getattr(inner, '__name__', ''))
        return lambda value: None if value is None else check_inner(value)
    if origin is list:
        (item,) = arguments
        check_item = _checker(item)
        allowed = getattr(check_item, 'allowed', None)
        if allowed is not None:  # a list of plain values (ids, names): checked, kept as is
            def check_plain_list(value: Any) -> Any:
                if type(value) is list and all(type(entry) in allowed for entry in value):
                    if int in allowed and not all(_in_range(entry) for entry in value):
                        raise ProtocolError('integer out of range')
                    return value
                return _fail('a list of %s' % '/'.join(sorted(t.__name__ for t in allowed)),
                             value)
            return check_plain_list

        def check_list(value: Any) -> Any:
            if type(value) is not list:
                return _fail('a list', value)
            if not value:  # most are empty (a job's files, say): nothing to convert
                return value
            return [check_item(entry) for entry in value]
        return check_list
    if origin is tuple:
        item_checks = [_checker(item) for item in arguments]
        size = len(item_checks)

        def check_tuple(value: Any) -> Any:
            if type(value) not in (list, tuple) or len(value) != size:
                return _fail('an array of %d items' % size, value)
            return tuple(check(entry) for check, entry in zip(item_checks, value))
        return check_tuple
    raise TypeError('no wire type for %r' % (annotation,))


M = TypeVar('M', bound=Message)


@dataclass_transform()
def message(kind: str) -> Callable[[type[M]], type[M]]:
    """Class decorator: a dataclass registered as the message ``kind``, with its checks."""
    def register(cls: type[M]) -> type[M]:
        cls = dataclasses.dataclass(slots=True)(cls)
        cls.kind = kind
        hints = typing.get_type_hints(cls)
        fields = dataclasses.fields(cls)  # type: ignore[arg-type]  # a dataclass by now
        cls._fields = tuple(field.name for field in fields)
        cls._checks = tuple((name, _checker(hints[name])) for name in cls._fields)
        _compile_codec(cls, {field.name: _default_maker(field) for field in fields
                             if field.default is not dataclasses.MISSING
                             or field.default_factory is not dataclasses.MISSING})
        assert kind not in MESSAGES, kind
        MESSAGES[kind] = cls
        return cls
    return register


def _compile_codec(cls: type[Message], optional: dict[str, Callable[[], Any]]) -> None:
    """Give ``cls`` a ``body`` that builds its map as a dict display, and a ``_decode`` that
    checks each field inline, as hand-written code would (``dataclasses`` makes ``__init__``
    the same way). Every job's messages pass through several processes: the generic loop
    over the fields, with a call per field, cost about twice as much (measured warm: 0.70
    against 0.43 us to check a job's end, 0.44 against 0.17 us to build its map).

    ``optional`` fields (those with a default: added after the message was first defined)
    may be missing, or None, in what arrives; they then take their default."""
    names = cls._fields
    namespace: dict[str, Any] = {'cls': cls, 'ProtocolError': ProtocolError, '_field': _field}
    body = ['def body(self):', '    return {%s}' % ', '.join(
        '%r: self.%s' % (name, name) for name in names)]
    decode = ['def _decode(body):', '    try:']
    decode += ['        v_%s = body[%r]' % (name, name) for name in names
               if name not in optional] or ['        pass']
    decode += ['    except KeyError as exc:',
               '        raise ProtocolError("%s: missing field %%r" %% (exc.args[0],)) from None'
               % (cls.kind,)]
    for name, make_default in optional.items():  # added later: an older peer leaves it out
        namespace['default_' + name] = make_default
        decode += ['    v_%s = body.get(%r)' % (name, name),
                   '    if v_%s is None:' % name,
                   '        v_%s = default_%s()' % (name, name)]
    for name, check in cls._checks:
        allowed = getattr(check, 'allowed', None)
        namespace['check_' + name] = check
        if allowed is not None and int in allowed:  # a number: its type, then its range
            namespace['types_' + name] = allowed
            test = ('type(v_%s) not in types_%s or type(v_%s) is int and not %d <= v_%s <= %d'
                    % (name, name, name, INT_RANGE[0], name, INT_RANGE[1]))
        elif allowed is not None and len(allowed) == 1:  # one exact type: the common case
            namespace['type_' + name] = next(iter(allowed))
            test = 'type(v_%s) is not type_%s' % (name, name)
        elif allowed is not None:
            namespace['types_' + name] = allowed
            test = 'type(v_%s) not in types_%s' % (name, name)
        else:  # a nested shape: its own check converts it too
            decode.append('    v_%s = _field(%r, %r, check_%s, v_%s)'
                          % (name, cls.kind, name, name, name))
            continue
        decode.append('    if %s:' % test)
        decode.append('        _field(%r, %r, check_%s, v_%s)' % (cls.kind, name, name, name))
    decode.append('    return cls(%s)' % ', '.join('v_' + name for name in names))
    exec('\n'.join(body) + '\n\n' + '\n'.join(decode), namespace)
    cls.body = namespace['body']  # type: ignore[method-assign]
    cls._decode = staticmethod(namespace['_decode'])


def _default_maker(field: dataclasses.Field) -> Callable[[], Any]:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory
    value = field.default
    return lambda: value


def _field(kind: str, name: str, check: Checker, value: Any) -> Any:
    """A field's value checked by ``check`` (converted, for nested shapes); a failure names
    the message and the field."""
    try:
        return check(value)
    except ProtocolError as exc:
        raise ProtocolError('%s: field %r: %s' % (kind, name, exc)) from None


def from_wire(kind: Any, body: Any) -> Message:
    """The message a received ``[kind, body]`` pair is; ``ProtocolError`` if it is none."""
    cls = MESSAGES.get(kind) if type(kind) is str else None
    if cls is None:
        raise ProtocolError('unknown message kind %r' % (kind,))
    if type(body) is not dict:
        raise ProtocolError('%s: body is not a map' % (kind,))
    return cls._decode(body)


# Shapes that several messages share

Chunk = Union[bytes, bytearray]
"""A chunk of a file or of a large value: a bulk frame's data arrive in a buffer of their
own (``FrameDecoder.raw_sink``), a bytearray, which is not copied again."""

FileSpec = tuple[str, int, int]
"""A file announced before its chunks: ``(name, size, mode)``."""

FileData = tuple[str, bytes, int]
"""A small file carried whole in a message: ``(name, data, mode)``."""

NodePattern = tuple[str, int]
"""A cluster's ``nodes`` entry: ``(pattern, port)``, port 0 for any."""

AvailInfo = tuple[float, int, int, float]
"""What a node has free (dispy's ``DispyNodeAvailInfo``): CPU % idle, memory and disk bytes
available, swap % free."""

Amounts = list[tuple[str, int]]
"""A job's need or a node's offer: ``[(name, amount), ...]``, memory in bytes
(``resources.Need.to_wire``, ``resources.Offer.to_wire``)."""

PendingJob = tuple[int, Optional[bytes]]
"""A job still to end, for a client resuming a cluster: ``(uid, tag)``."""


# handshake, on every link

@message('hello')
class Hello(Message):
    version: int
    role: str
    nonce: bytes


@message('auth')
class Auth(Message):
    proof: bytes


@message('error')
class Error(Message):
    reason: str


# a job's end: what a worker, a node and the scheduler report, field for field the same

@message('job_done')
class JobDone(Message):
    """A job ended on a node (worker -> node daemon -> scheduler)."""
    jid: int
    status: int
    result: Optional[bytes]
    exception: Optional[str]
    stdout: str
    stderr: str
    start_time: Optional[float]
    end_time: float
    stored: str = ''
    """A result too large to travel inline (``INLINE_RESULT_LIMIT``): the name of the
    ``PayloadPart`` stream that carried it just before this message; '' if none did."""

    @classmethod
    def failure(cls, jid: int, status: int, reason: str) -> 'JobDone':
        """A job that ended without running to its end (cancelled, killed, refused)."""
        return cls(jid=jid, status=status, result=None, exception=reason, stdout='',
                   stderr='', start_time=None, end_time=time.time())


@message('job_end')
class JobEnd(Message):
    """A job ended (scheduler -> client): the node's report with where it ran, or the
    scheduler's own when it ended without a node's result."""
    uid: int
    status: int
    result: Optional[bytes]
    exception: Optional[str]
    stdout: str
    stderr: str
    start_time: Optional[float]
    end_time: Optional[float]
    ip_addr: Optional[str]
    tag: Optional[bytes]
    stored: str = ''
    """As ``JobDone.stored``: the result came just before, as a ``PayloadPart`` stream."""

    @classmethod
    def relay(cls, done: JobDone, uid: int, ip_addr: str, tag: Optional[bytes]) -> 'JobEnd':
        """A node's report of a job's end, passed on to the job's client."""
        # positional: one is made for every job, and keywords cost a third more
        return cls(uid, done.status, done.result, done.exception, done.stdout, done.stderr,
                   done.start_time, done.end_time, ip_addr, tag, done.stored)

    @classmethod
    def failure(cls, uid: int, status: int, reason: str, start_time: Optional[float] = None,
                ip_addr: Optional[str] = None, tag: Optional[bytes] = None) -> 'JobEnd':
        """A job that ended without a node's report (cancelled, lost with its node, refused
        at submission)."""
        return cls(uid=uid, status=status, result=None, exception=reason, stdout='',
                   stderr='', start_time=start_time, end_time=time.time(), ip_addr=ip_addr,
                   tag=tag)


# node -> scheduler

@message('values_lost')
class ValuesLost(Message):
    """Values of a computation the node could not write (a full disk): the scheduler sends
    them again with the next job that needs them."""
    cid: int
    names: list[str]


@message('node_info')
class NodeInfo(Message):
    name: str
    ip_addr: str
    port: int
    cpus: int
    platform: str
    jobs: list[int]
    """Jobs the node holds (running, or ended and not acknowledged)."""
    avail: Optional[AvailInfo]
    resources: Amounts = dataclasses.field(default_factory=list)
    """What it has for jobs besides CPUs: memory, GPUs, named resources."""


@message('node_leaving')
class NodeLeaving(Message):
    jobs: list[int]
    """Jobs it had not started, handed back."""


@message('node_resumed')
class NodeResumed(Message):
    """A node that handed its jobs back (``node_leaving``: its daily service stopped) takes
    jobs again."""


@message('jobs_released')
class JobsReleased(Message):
    """The jobs ``release_jobs`` asked for, which this node will not run."""
    cid: int
    jobs: list[int]


@message('pulse')
class Pulse(Message):
    busy: int


@message('avail')
class Avail(Message):
    """What the node has free, sent with each pulse."""
    avail: AvailInfo


@message('compute_ready')
class ComputeReady(Message):
    cid: int


@message('compute_failed')
class ComputeFailed(Message):
    cid: int
    reason: str


@message('job_started')
class JobStarted(Message):
    jid: int
    start_time: float


@message('provisional')
class Provisional(Message):
    jid: int
    result: bytes
    stored: str = ''
    """As ``JobDone.stored`` (``result`` is then empty)."""


@message('payload_part')
class PayloadPart(Message):
    """A chunk of a result or provisional result too large to travel inline: node ->
    scheduler (``id`` is the job's jid), then scheduler -> client (its uid). The chunks of one
    payload follow each other on the link, and the message that reports it (``JobDone``,
    ``Provisional``, ``JobEnd``, ``ProvisionalResult`` with ``stored`` = ``name``) follows
    them; a stream that starts again at offset 0 replaces the one before (sent again after
    a reconnect)."""
    id: int
    name: str
    size: int
    offset: int
    data: Chunk
    last: bool


@message('job_file')
class JobFile(Message):
    """A chunk of a file a job sends to its client (``dispy_send_file``)."""
    jid: int
    name: str
    offset: int
    data: bytes
    last: bool


# scheduler -> node

@message('welcome')
class Welcome(Message):
    pulse_interval: float
    scheduler_id: str


@message('compute')
class Compute(Message):
    cid: int
    name: str
    code: bytes
    files: list[FileSpec]
    cpus: int
    """CPUs the cluster may use there; 0: all."""
    setup_args: Optional[bytes]


@message('compute_file')
class ComputeFile(Message):
    cid: int
    name: str
    offset: int
    data: Chunk
    last: bool


@message('job')
class Job(Message):
    jid: int
    cid: int
    args: bytes
    timeout: Optional[float]
    files: list[FileData]
    # the files of the values (``SentFile.value``) it needs: one the node could not write
    # ends it at once, with the reason
    values: list[str] = dataclasses.field(default_factory=list)
    need: Amounts = dataclasses.field(default_factory=list)
    """What it holds while it runs; [] for one CPU."""
    # set by the node for its worker process: what the job was given
    cpu_ids: list[int] = dataclasses.field(default_factory=list)
    gpu_ids: list[str] = dataclasses.field(default_factory=list)
    memory_limit: int = 0
    """Bytes it may use; 0: no limit."""
    memory_by: str = ''
    """How the limit is kept: 'cgroup' (the node's), 'rlimit' (the worker's address space
    limit, raised by that much for the job), '' for none."""


@message('cancel_job')
class CancelJob(Message):
    jid: int


@message('sent_file')
class SentFile(Message):
    """A chunk of a file the client sends an installed computation (``send_file``), or of a
    value its jobs need (``value``: not limited by ``--max_file_size``): it goes to the
    computation's directory on the node."""
    cid: int
    name: str
    size: int
    mode: int
    offset: int
    data: Chunk
    last: bool
    value: bool = False


@message('forget_files')
class ForgetFiles(Message):
    """Values sent to a computation (``SentFile.value``) that no job will need: deleted."""
    cid: int
    names: list[str]


@message('set_cpus')
class SetCpus(Message):
    """Run at most ``cpus`` of the cluster's jobs at once (``set_node_cpus``)."""
    cid: int
    cpus: int


@message('release_jobs')
class ReleaseJobs(Message):
    """Hand back the cluster's jobs not started yet (the client closed or set aside the
    node); answered by ``jobs_released``."""
    cid: int


@message('uninstall')
class Uninstall(Message):
    cid: int
    cleanup: bool


@message('result_ack')
class ResultAck(Message):
    """Results saved by the receiver (the scheduler's to a node: job ids; a client's to the
    scheduler: its job uids), which the sender may forget."""
    ids: list[int]


# client -> scheduler

@message('cluster_new')
class ClusterNew(Message):
    name: str
    code: bytes
    nodes: list[NodePattern]
    reentrant: bool
    cleanup: bool
    files: list[FileSpec]
    allocate: bool
    """Nodes are offered to the client's NodeAllocate first."""
    resources: Amounts = dataclasses.field(default_factory=list)
    """What each job needs unless submitted with its own; [] for one CPU."""


@message('cluster_file')
class ClusterFile(Message):
    name: str
    offset: int
    data: bytes
    last: bool


@message('cluster_resume')
class ClusterResume(Message):
    cid: int
    credential: bytes


@message('submit')
class Submit(Message):
    uid: int
    args: bytes
    files: list[FileData]
    timeout: Optional[float]
    priority: int
    node: Optional[str]
    tag: Optional[bytes]
    # uploads (``Upload``) the job needs on its node; each goes to a node once (an
    # executor's functions)
    refs: list[str] = dataclasses.field(default_factory=list)
    resources: Amounts = dataclasses.field(default_factory=list)
    """What it needs (``dispy_job_resources`` over the cluster's); [] for the cluster's."""


@message('cancel')
class Cancel(Message):
    uid: int


@message('node_allocation')
class NodeAllocation(Message):
    key: str
    cpus: int
    setup_args: Optional[bytes]
    files: list[str]


@message('upload')
class Upload(Message):
    """A chunk of a file for some nodes only, sent after the cluster was created (depends set
    in ``NodeAllocate.allocate``, ``send_file``): kept by the scheduler under ``ref``, which
    allocations and ``node_control`` name. Chunks of one file follow each other.

    A ``value`` is a pickled argument (or an executor's function) that jobs name in their
    ``refs``: not a file, so ``--max_file_size`` does not apply; kept until the client
    forgets it (``ForgetValues``)."""
    ref: str
    name: str
    size: int
    mode: int
    offset: int
    data: Chunk
    last: bool
    value: bool = False


@message('forget_values')
class ForgetValues(Message):
    """Values (``Upload.value``) no unfinished job of the client's needs any more: the
    scheduler and the nodes delete them."""
    refs: list[str]


@message('node_control')
class NodeControl(Message):
    """The cluster's own use of a node (``allocate_node``, ``deallocate_node``,
    ``close_node``, ``resetup_node``, ``set_node_cpus``, ``send_file``, ``discover_nodes``);
    answered by ``node_control_done`` with the same ``rid``."""
    rid: int
    action: str
    node: str
    port: int
    cpus: int
    terminate: bool
    ref: str


@message('close')
class Close(Message):
    terminate: bool


# scheduler -> client

@message('cluster_ok')
class ClusterOk(Message):
    cid: int
    max_file_size: int
    credential: bytes
    max_jobs: int
    """Jobs of the cluster the scheduler holds at once: ``submit()`` waits beyond."""
    max_job_bytes: int
    """Bytes of its jobs' arguments and files it holds at once (0: no limit)."""


@message('submitted')
class Submitted(Message):
    uids: list[int]


@message('job_status')
class JobStatus(Message):
    uid: int
    status: int
    ip_addr: str
    start_time: float


@message('provisional_result')
class ProvisionalResult(Message):
    uid: int
    result: bytes
    ip_addr: str
    stored: str = ''
    """As ``JobDone.stored`` (``result`` is then empty)."""


@message('file_part')
class FilePart(Message):
    uid: int
    name: str
    offset: int
    data: bytes
    last: bool


@message('jobs_pending')
class JobsPending(Message):
    jobs: list[PendingJob]


@message('node_status')
class NodeStatus(Message):
    ip_addr: str
    name: str
    cpus: int
    status: int
    platform: str
    reason: str
    """Why, for a node that could not set the computation up (its traceback)."""
    avail: Optional[AvailInfo]


@message('node_offer')
class NodeOffer(Message):
    key: str
    ip_addr: str
    name: str
    cpus: int
    platform: str
    avail: Optional[AvailInfo]


@message('cluster_warning')
class ClusterWarning(Message):
    reason: str


@message('node_control_done')
class NodeControlDone(Message):
    rid: int
    value: int
    """What dispy's method returns: 0 (or the CPUs, for ``set_node_cpus``), -1 refused."""
    reason: str


@message('closed')
class Closed(Message):
    pass


# node daemon <-> the processes that run a computation's jobs (a local Unix socket)

@message('worker_hello')
class WorkerHello(Message):
    role: str
    token: bytes
    cid: int
    pid: int


@message('load')
class Load(Message):
    code: bytes
    node_name: str
    node_ip_addr: str
    max_file_size: int
    setup_args: Optional[bytes]


@message('loaded')
class Loaded(Message):
    pass


@message('load_failed')
class LoadFailed(Message):
    reason: str


@message('fork')
class Fork(Message):
    count: int


@message('exit')
class Exit(Message):
    cleanup: bool


@message('worker_exit')
class WorkerExit(Message):
    pid: int
    how: str


# discovery datagrams (UDP)

@message('ping')
class Ping(Message):
    addr: str
    port: int


@message('announce')
class Announce(Message):
    port: int


@message('node_busy')
class NodeBusy(Message):
    """A node's answer to a scheduler's ping while it serves another (it serves one at a
    time): ``serving`` names that one, ``port`` is the node's discovery port."""
    port: int
    serving: str
